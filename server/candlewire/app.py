"""Wiring and lifecycle of the service.

With a Redis URL the process has a role (``settings.role``): ``api`` serves
the API from Redis, with one :class:`~candlewire.replica.UpdateReader`
feeding the local hub, price cache and candle cache; ``ingest`` runs the feed
into Redis under a lease (:mod:`candlewire.lease`) and serves health only;
``all`` does both. Redis being away at start-up keeps readiness NOT_SERVING and is retried
until it answers.

:class:`App` builds the parts from :class:`~candlewire.config.Settings` and
owns every task it starts. Start-up: gRPC up with readiness NOT_SERVING,
history backfilled, live feed running, readiness SERVING once the store
answers and the feed is fresh. Shutdown, in this order: health NOT_SERVING,
stop accepting calls (gateway, then gRPC), end the streams (UNAVAILABLE,
so clients resume elsewhere), stop the feed, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from candlewire.aggregate import AggregatorConfig
from candlewire.api.server import ApiServer
from candlewire.api.servicer import Catalog, Limits, MarketDataServicer
from candlewire.config import Settings, describe_settings, parse_listen
from candlewire.domain import NANOS_PER_SECOND, FeedState, SeriesKey, Source
from candlewire.errors import CandlewireError, StoreUnavailable
from candlewire.feeds.base import Feed, HasOperatorRoutes, NeedsLogin, ReportsStatus
from candlewire.feeds.sim import SimFeed
from candlewire.gateway import Gateway
from candlewire.hub import Hub
from candlewire.ingest import Ingestor
from candlewire.replica import CachedStore, CandleCache, QuoteCache, UpdateReader
from candlewire.store.base import Connects, Store
from candlewire.store.memory import MemoryStore
from candlewire.tasks import cancel_and_wait, checkpoint

if TYPE_CHECKING:
    # Redis and the venue feeds are imported when the settings ask for them:
    # the embedded defaults start without loading their libraries.
    from candlewire.lease import LeasedIngestion
    from candlewire.store.redis import RedisStore

__all__ = ["App", "build_feed", "build_store"]

log = logging.getLogger(__name__)


def build_feed(settings: Settings) -> Feed:
    """The feed ``settings.feed`` names, configured from the settings."""
    if settings.feed == "binance":
        from candlewire.feeds.binance import BinanceConfig, BinanceFeed

        return BinanceFeed(
            settings.symbols,
            settings.intervals,
            BinanceConfig(
                rest_url=settings.binance_rest_url,
                ws_url=settings.binance_ws_url,
                history=settings.binance_history,
                silence_timeout=settings.binance_silence_timeout,
                weight_share=settings.binance_weight_share,
                connection_lifetime=settings.binance_connection_lifetime,
            ),
        )
    if settings.feed == "saxo":
        from candlewire.feeds.saxo import setup

        saxo = setup.from_settings(settings)
        return setup.feed(settings.symbols, saxo, setup.build(saxo))
    if settings.feed == "replay":
        from candlewire.feeds.replay import ReplayFeed

        return ReplayFeed(
            settings.replay_path,
            settings.symbols,
            settings.intervals,
            speed=settings.replay_speed,
        )
    return SimFeed(
        settings.symbols,
        rate=settings.sim_rate,
        seed=settings.sim_seed,
        history_minutes=settings.sim_history,
    )


def build_store(settings: Settings) -> Store:
    """The Redis store when ``settings.redis_url`` is set, else the memory store."""
    if settings.redis_url:
        from candlewire.store.redis import RedisStore

        return RedisStore(
            settings.redis_url,
            prefix=settings.redis_prefix,
            retention=settings.retention,
            log_size=settings.update_log_size,
            quote_ttl=settings.quote_ttl,
            ticks=settings.recent_ticks,
        )
    return MemoryStore(
        retention=settings.retention, log_size=settings.update_log_size, ticks=settings.recent_ticks
    )


def _local_target(grpc_listen: str, port: int) -> str:
    """How the gateway in this process reaches the gRPC server."""
    host, _ = parse_listen(grpc_listen)
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class App:
    """The whole service. ``await app.run()`` serves until :meth:`stop`."""

    def __init__(
        self, settings: Settings, *, feed: Feed | None = None, store: Store | None = None
    ) -> None:
        self.settings = settings
        self.store: Store = store or build_store(settings)
        self.hub = Hub(
            queue_size=settings.subscriber_queue_size, max_subscriptions=settings.max_streams
        )
        self.feed: Feed = feed or build_feed(settings)
        self.api: ApiServer | None = None
        self.gateway: Gateway | None = None
        self.ingestor: Ingestor | None = None
        self.reader: UpdateReader | None = None
        self.leased: LeasedIngestion | None = None
        self.quote_cache = QuoteCache(settings.quote_ttl)
        self.candle_cache = CandleCache(settings.candle_cache) if settings.candle_cache else None
        self.ready = False
        self.started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._recheck = asyncio.Event()
        """Set to re-evaluate readiness now rather than at the next poll."""
        self._backfilled = False

    @property
    def port(self) -> int:
        """The bound gRPC port (useful when listening on port 0)."""
        if self.api is None:
            raise RuntimeError("not started")
        return self.api.port

    def stop(self) -> None:
        """Ask :meth:`run` to shut down (safe to call from a signal handler)."""
        self._stopping.set()
        self._recheck.set()

    async def run(self) -> None:
        s = self.settings
        for line in describe_settings(s):
            log.debug("setting %s", line)
        redis: RedisStore | None = None
        if isinstance(self.store, Connects):
            from candlewire.store.redis import RedisStore

            if isinstance(self.store, RedisStore):
                redis = self.store
        found = await self.feed.instruments()
        # The feed's own dict when it gives one: a feed that resolves its symbols
        # later (Saxo, after a login) updates their precision in place.
        instruments = found if isinstance(found, dict) else dict(found)
        catalog = Catalog(instruments, s.intervals)
        limits = Limits(
            stale_after=s.stale_after,
            heartbeat_interval=s.heartbeat_interval,
            recent_ticks=s.recent_ticks,
        )
        serving = redis is None or s.role != "ingest"
        ingesting = redis is None or s.role != "api"
        api_store: Store = self.store
        if redis is not None:
            api_store = CachedStore(redis, self.quote_cache, self.candle_cache)
            series = [SeriesKey(sym, i) for sym in instruments for i in s.intervals]
            if serving:
                self.reader = UpdateReader(
                    redis, self.hub, series, self.quote_cache, self.candle_cache
                )
            if ingesting:
                from candlewire.lease import LeasedIngestion

                self.leased = LeasedIngestion(
                    redis, s.ingest_shard, self._leased_feed, ttl=s.lease_ttl
                )
        servicer = (
            MarketDataServicer(api_store, self.hub, catalog, limits, feed_state=self._feed_state)
            if serving
            else None
        )
        self.api = api = ApiServer(servicer, s.grpc_listen)
        self._source = next(iter(instruments.values())).source if instruments else Source.LIVE
        self._instruments = list(instruments)
        if redis is None:
            self.ingestor = self._new_ingestor(publish=True)
        await api.start()
        try:
            if s.http_listen and serving:
                self.gateway = Gateway(
                    _local_target(s.grpc_listen, api.port),
                    allowed_origins=s.http_allowed_origins,
                    max_request_bytes=s.http_max_request_bytes,
                    idle_timeout=s.http_idle_timeout,
                    shutdown_grace=s.shutdown_grace,
                    routes=(
                        self.feed.operator_routes()
                        if isinstance(self.feed, HasOperatorRoutes)
                        else None
                    ),
                )
                await self.gateway.start(*parse_listen(s.http_listen))
            self.started.set()
            async with asyncio.TaskGroup() as tasks:
                health_task = tasks.create_task(self._watch_health(), name="health")
                work = tasks.create_task(self._work(), name="work")
                await self._stopping.wait()
                log.info("shutting down")
                await api.enter_shutdown()
                self.ready = False
                if self.gateway is not None:
                    self.gateway.close()
                stopping = tasks.create_task(api.stop(s.shutdown_grace), name="grpc-stop")
                self.hub.close()
                await stopping
                if self.gateway is not None:
                    await self.gateway.wait_closed()
                await cancel_and_wait(work, health_task)
            if self.leased is not None:
                await self.leased.release()
        finally:
            if self.gateway is not None:
                await self.gateway.stop()
            await api.stop(0)
            if isinstance(self.feed, NeedsLogin):
                await self.feed.close()
            await self.store.close()
            log.info("stopped")

    def _new_ingestor(self, *, publish: bool) -> Ingestor:
        s = self.settings
        return Ingestor(
            self.store,
            self.hub,
            self._instruments,
            AggregatorConfig(
                intervals=s.intervals,
                lateness=int(s.lateness * NANOS_PER_SECOND),
                max_gap_fill=s.retention,
                # What the store would evict at once is not built (a backfill
                # of a day of 1s candles keeps only the newest `retention`).
                emit_limit=s.retention,
            ),
            self._source,
            publish=publish,
            buffer_size=s.ingest_buffer,
        )

    async def _work(self) -> None:
        """The feed (memory store), or the connection, reader and lease (Redis)."""
        if not isinstance(self.store, Connects):
            await self._feed()
            return
        await self._connect(self.store)
        async with asyncio.TaskGroup() as tasks:
            if self.reader is not None:
                tasks.create_task(self.reader.run(), name="redis-reader")
            if self.leased is not None:
                tasks.create_task(self.leased.run(), name="lease")

    async def _connect(self, store: Connects) -> None:
        delay = 0.1
        while True:
            try:
                await store.connect()
            except StoreUnavailable as error:
                log.error("cannot reach the store, retrying in %.1fs: %s", delay, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                log.info("store connected")
                return

    async def _feed(self) -> None:
        assert self.ingestor is not None
        started = time.perf_counter()
        await self.feed.backfill(self.ingestor)
        self._backfilled = True
        self._recheck.set()
        log.info(
            "backfill done in %.2fs (%d candle versions stored)",
            time.perf_counter() - started,
            self.ingestor.candles_out,
        )
        await self.feed.run(self.ingestor)

    async def _leased_feed(self, fresh: bool) -> None:
        """Ingest while holding the lease; start afresh when the dataset is replaced."""
        store = self.store
        while True:
            epoch = store.epoch
            if fresh or self.ingestor is None:
                if self.ingestor is not None and self.ingestor.buffered:
                    log.warning(
                        "discarding %d buffered candles: the backfill rebuilds them",
                        self.ingestor.buffered,
                    )
                self._backfilled = False
                self.ingestor = self._new_ingestor(publish=False)
                await self.ingestor.align(self.settings.retention)
                run = asyncio.create_task(self._feed(), name="feed")
            else:
                run = asyncio.create_task(self.feed.run(self.ingestor), name="feed")
            try:
                while not run.done() and store.epoch == epoch:
                    checkpoint()
                    await asyncio.wait({run}, timeout=0.2)
                if run.done():
                    run.result()  # the feed ended, or raised (LeaseLost, a bug)
                    return
            finally:
                if not run.done():
                    await cancel_and_wait(run)
            log.warning("the store's dataset was replaced: rebuilding history from the backfill")
            fresh = True

    def _feed_state(self) -> tuple[FeedState, str]:
        """The feed's state for ListSymbols (UNSPECIFIED where this process runs no feed)."""
        feed = self.feed
        if self.ingestor is None:  # an API replica, or an ingestor standing by
            return FeedState.UNSPECIFIED, ""
        if isinstance(feed, NeedsLogin) and feed.login_required:
            why = feed.status()[1] if isinstance(feed, ReportsStatus) else "login required"
            return FeedState.LOGIN_REQUIRED, why
        if not isinstance(feed, ReportsStatus):
            return FeedState.UNSPECIFIED, ""
        healthy, why = feed.status()
        return (FeedState.OK, "") if healthy else (FeedState.DOWN, why)

    def _is_ready(self) -> tuple[bool, str]:
        if self.reader is not None and not self.quote_cache.connected:
            return False, "not following the store's updates"
        if self.reader is not None and self.leased is None:
            return True, "ok"  # API only: the store and the reader are all it needs
        if self.leased is not None and not self.leased.holding:
            return True, "ok (ingestion standing by: another process holds the lease)"
        ingestor = self.ingestor
        if isinstance(self.feed, ReportsStatus):
            healthy, why = self.feed.status()
            if not healthy:
                return False, why
        if not self._backfilled or ingestor is None:
            return False, "backfill in progress"
        last = ingestor.last_receive
        if last is None or time.monotonic() - last > self.settings.feed_stale_after:
            return False, "upstream feed is stale"
        return True, "ok"

    async def _watch_health(self) -> None:
        assert self.api is not None
        reason = ""
        while not self._stopping.is_set():
            ready, why = self._is_ready()
            try:
                await self.store.ping()
            except CandlewireError as error:
                ready, why = False, f"store unavailable: {error}"
            else:
                if self.ingestor is not None and self.ingestor.buffered:
                    with contextlib.suppress(CandlewireError):
                        await self.ingestor.flush()
            if ready != self.ready or why != reason:
                log.log(
                    logging.INFO if ready else logging.WARNING,
                    "readiness %s: %s",
                    "SERVING" if ready else "NOT_SERVING",
                    why,
                )
                self.ready, reason = ready, why
                await self.api.set_ready(ready)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._recheck.wait()
            self._recheck.clear()
