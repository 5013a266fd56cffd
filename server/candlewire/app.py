"""Wiring and lifecycle of the service.

:class:`App` builds the parts from :class:`~candlewire.config.Settings` (the
feed from :mod:`candlewire.feeds.registry`, the store from
:func:`candlewire.store.build_store`) and owns every task it starts.

With a store shared by processes (Redis) the process has a role
(``settings.role``): ``api`` serves the API from the store, with one
:class:`~candlewire.flow.follow.UpdateReader` feeding the local hub, quote
cache and candle cache; ``ingest`` runs the feed into the store under a lease
(:mod:`candlewire.flow.lease`) and serves health only; ``all`` does both. The
store being away at start-up keeps readiness NOT_SERVING and is retried until
it answers. The API reads through the :class:`~candlewire.store.base.Store`
protocol only: :meth:`App.read_store` is where a tier (a replica's caches, a
history store behind the hot one) is put in front of it.

Start-up: gRPC up with readiness NOT_SERVING, history backfilled, live feed
running, readiness SERVING once the store answers and the feed is fresh
(:mod:`candlewire.readiness`). Shutdown, in this order: health NOT_SERVING,
stop accepting calls (gateway, then gRPC), end the streams (UNAVAILABLE, so
clients resume elsewhere), stop the feed and the store's followers, give the
lease up, close the store.

Run it with ``await app.run()`` until :meth:`App.stop` (the CLI, on a
signal), or as ``async with App(settings) as app:``, which returns once the
gRPC server is bound and stops the service when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

from candlewire.aggregate import AggregatorConfig
from candlewire.api.auth import Authenticator, JwtVerifier
from candlewire.api.gatekeeper import Gatekeeper, LimitSettings
from candlewire.api.keys import KeyRing
from candlewire.api.limits import Limiter, MemoryLimiter, RedisLimiter
from candlewire.api.server import ApiServer
from candlewire.api.servicer import Catalog, Limits, MarketDataServicer
from candlewire.api.tls import CertificateFiles
from candlewire.config import Settings, describe_settings, parse_listen
from candlewire.domain import NANOS_PER_SECOND, FeedState, Instrument, SeriesKey, Source
from candlewire.errors import ConfigError, DependencyUnavailable, StoreUnavailable
from candlewire.feeds.base import Feed, HasOperatorRoutes, NeedsLogin, ReportsStatus
from candlewire.feeds.registry import build_feed
from candlewire.flow import Ingestor, LeasedIngestion, UpdateReader
from candlewire.flow.follow import TradeReader
from candlewire.flow.rejections import RejectionPublisher, RejectionReader
from candlewire.gateway import Gateway
from candlewire.hub import Hub
from candlewire.obs import Metrics, ServiceCollector, render
from candlewire.readiness import Observed, ReadinessWatch
from candlewire.retry import Backoff, Retry
from candlewire.store import build_store
from candlewire.store.base import Connects, SharedStore, Store, TradeUpdate, Update
from candlewire.store.cached import CachedStore, CandleCache, QuoteCache
from candlewire.store.timed import TimedStore
from candlewire.tasks import cancel_and_wait, checkpoint
from candlewire.validate import RejectionCounts, Rejections, ValidationConfig

if TYPE_CHECKING:
    # PostgreSQL's driver is loaded only with a history tier
    from candlewire.history.tier import HistoryTier
    from candlewire.tracing import Tracing

__all__ = ["App"]

log = logging.getLogger(__name__)


def _shared(store: Store) -> SharedStore | None:
    """``store`` when processes share it (Redis), else None."""
    if not isinstance(store, Connects):
        return None
    from candlewire.store.redis import RedisStore  # only a connecting store can be Redis

    return store if isinstance(store, RedisStore) else None


class App:
    """The whole service: ``await app.run()`` serves until :meth:`stop`;
    ``async with App(...) as app`` serves for the duration of the block."""

    def __init__(
        self, settings: Settings, *, feed: Feed | None = None, store: Store | None = None
    ) -> None:
        self.settings = settings
        self.store: Store = store or build_store(settings)
        self.hub: Hub[Update] = Hub(
            queue_size=settings.subscriber_queue_size, max_subscriptions=settings.max_streams
        )
        self.trade_hub: Hub[TradeUpdate] = Hub(
            queue_size=settings.subscriber_queue_size,
            max_subscriptions=settings.max_streams,
            conflate=False,  # trades never are
        )
        self.rejections = Rejections()
        """What this process's validation policy refused, per symbol and reason."""
        self.rejection_reader: RejectionReader | None = None
        """With a shared store, in a serving process: the store's totals, which
        ListSymbols and the metrics show (see :mod:`candlewire.flow.rejections`)."""
        self.rejection_publisher: RejectionPublisher | None = None
        """With a shared store, in an ingesting process: adds :attr:`rejections`
        to the store's totals."""
        self.trade_reader: TradeReader | None = None
        self.feed: Feed = feed or build_feed(settings)
        self.history: HistoryTier | None = None
        """The PostgreSQL history tier, with ``settings.postgres_url``."""
        if settings.postgres_url:
            from candlewire.history.options import parse_retention, parse_trade_retention
            from candlewire.history.tier import HistoryTier

            self.history = HistoryTier(
                settings.postgres_url,
                read_url=settings.postgres_read_url,
                retention=parse_retention(settings.history_retention),
                trade_retention=parse_trade_retention(settings.history_retention),
                queue_size=settings.history_queue,
                hot_retention=settings.retention,
            )
        self._write_store: Store = self.store
        """What the ingestor writes to (with a history tier and the memory
        store: the store, with closed candles queued for PostgreSQL)."""
        self.api: ApiServer | None = None
        self.gateway: Gateway | None = None
        self.ingestor: Ingestor | None = None
        self.reader: UpdateReader | None = None
        self.leased: LeasedIngestion | None = None
        self.quote_cache = QuoteCache(settings.quote_ttl)
        self.candle_cache = CandleCache(settings.candle_cache) if settings.candle_cache else None
        self.started = asyncio.Event()
        """Set once the gRPC server is bound (and the gateway, when configured)
        and the feed's symbols were asked for once (known, or the feed away)."""
        self.readiness = ReadinessWatch(
            self.store, self._observe, self._publish_ready, store_answered=self._store_answered
        )
        self._stopping = asyncio.Event()
        self._backfilled = False
        self._serving = True
        self._ingesting = True
        self._instruments: list[str] = []
        self._source = Source.LIVE
        self._running: asyncio.Task[None] | None = None
        self.metrics = Metrics()
        self.metrics.watch(ServiceCollector(self._metric_parts))
        self.gatekeeper: Gatekeeper | None = None
        self.limiter: Limiter | None = None
        self.tls: CertificateFiles | None = None
        self.tracing: Tracing | None = None
        self._metrics_server: Any = None
        self.started_callback: Callable[[], None] | None = None
        """Called once the service serves (the CLI tells start-up failures apart by it)."""
        self.servicer: MarketDataServicer | None = None
        self._feed_error: str | None = "waiting for the feed's symbols"
        self._failed: ConfigError | None = None

    @property
    def port(self) -> int:
        """The bound gRPC port (useful when listening on port 0)."""
        if self.api is None:
            raise RuntimeError("not started")
        return self.api.port

    @property
    def ready(self) -> bool:
        """Whether readiness is SERVING."""
        return self.readiness.ready

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> App:
        """Start :meth:`run` and return once the service serves; raise what
        stopped it from starting (a bad setting, a port in use)."""
        if self._running is not None:
            raise RuntimeError("already started")
        running = self._running = asyncio.create_task(self.run(), name="candlewire")
        started = asyncio.create_task(self.started.wait())
        try:
            await asyncio.wait({running, started}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while starting: stop what started
            self.stop()
            with contextlib.suppress(Exception):
                await cancel_and_wait(running)
            raise
        finally:
            await cancel_and_wait(started)
        if running.done():
            running.result()  # raises why it stopped
            raise RuntimeError("the service stopped while starting")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the service and wait until everything it started has ended."""
        self.stop()
        if self._running is not None:
            running, self._running = self._running, None
            await running

    def stop(self) -> None:
        """Ask :meth:`run` to shut down (safe to call from a signal handler)."""
        self._stopping.set()
        self.readiness.stop()

    async def run(self) -> None:
        """Serve until :meth:`stop`, then shut down in the documented order."""
        for line in describe_settings(self.settings):
            log.debug("setting %s", line)
        try:
            api = await self._assemble()
        except BaseException:
            await self._release()
            raise
        await api.start()
        try:
            await self._start_gateway(api)
            self._start_metrics_port()
            if self.started_callback is not None:
                self.started_callback()
            async with asyncio.TaskGroup() as tasks:
                readiness = tasks.create_task(self.readiness.run(), name="readiness")
                work = tasks.create_task(self._work(), name="work")
                upkeep = tasks.create_task(self._limiter_upkeep(), name="limits")
                await self._stopping.wait()
                await self._shut_down(api, tasks, work, readiness, upkeep)
            if self.leased is not None:
                await self.leased.release()
        finally:
            if self.gateway is not None:
                await self.gateway.stop()
            await api.stop(0)
            if isinstance(self.feed, NeedsLogin):
                await self.feed.close()
            await self.store.close()
            if self.history is not None:
                await self.history.close()
            await self._release()
            log.info("stopped")
        if self._failed is not None:
            raise self._failed

    async def _limiter_upkeep(self) -> None:
        if self.limiter is not None:
            await self.limiter.run()

    async def _release(self) -> None:
        """Close what the security and metrics parts opened."""
        if self._metrics_server is not None:
            server, self._metrics_server = self._metrics_server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        if self.limiter is not None:
            await self.limiter.close()
        if self.tracing is not None:
            await self.tracing.close()

    async def _shut_down(
        self,
        api: ApiServer,
        tasks: asyncio.TaskGroup,
        *work: asyncio.Task[None],
    ) -> None:
        """Health NOT_SERVING, stop accepting calls, end the streams, stop ``work``."""
        log.info("shutting down")
        await api.enter_shutdown()
        if self.gateway is not None:
            self.gateway.close()
        stopping = tasks.create_task(api.stop(self.settings.shutdown_grace), name="grpc-stop")
        self.hub.close()
        self.trade_hub.close()
        await stopping
        if self.gateway is not None:
            await self.gateway.wait_closed()
        await cancel_and_wait(*work)

    # --- wiring -------------------------------------------------------------------------

    async def _assemble(self) -> ApiServer:
        """Build the gRPC server the settings and the store call for. The
        feed's symbols are not known yet (see :meth:`_wire_feed`): until they
        are, the API answers UNAVAILABLE."""
        s = self.settings
        if self.history is not None:
            # A wrong URL or password stops the start here, naming the setting.
            await self.history.connect()
        shared = _shared(self.store)
        serving = self._serving = shared is None or s.role != "ingest"
        self._ingesting = shared is None or s.role != "api"
        if serving and shared is not None:
            self.rejection_reader = RejectionReader(shared)
        if serving:
            limits = Limits(
                stale_after=s.stale_after,
                heartbeat_interval=s.heartbeat_interval,
                recent_ticks=s.recent_ticks,
                history_bytes=s.stream_history_bytes,
                history_bytes_per_connection=s.stream_history_bytes_per_connection,
            )
            self.servicer = MarketDataServicer(
                self.read_store(shared),
                self.hub,
                Catalog.pending(s.intervals),
                limits,
                feed_state=self._feed_state,
                trade_hub=self.trade_hub,
                rejections=self.shown_rejections,
            )
        self.gatekeeper = self._new_gatekeeper()
        if s.tls_cert_file:
            self.tls = CertificateFiles(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
        if s.otlp_endpoint:
            from candlewire.tracing import Tracing

            self.tracing = Tracing(s.otlp_endpoint)
        self.api = ApiServer(
            self.servicer,
            s.grpc_listen,
            gatekeeper=self.gatekeeper,
            tls=self.tls,
            tracing=self.tracing.interceptor if self.tracing is not None else None,
        )
        return self.api

    async def _load_instruments(self) -> dict[str, Instrument]:
        """The feed's symbols, asked until the venue answers (the policy of
        every feed): readiness says why meanwhile. A symbol the venue does
        not list (ConfigError) is raised."""
        retry = Retry(Backoff(initial=0.5, maximum=30.0), name="the feed's symbols")
        while True:
            try:
                found = await self.feed.instruments()
            except DependencyUnavailable as error:
                self._feed_error = f"feed unavailable: {error}"
                self.readiness.recheck()
                self.started.set()  # serving liveness while the feed is away
                await retry.wait(error)
            else:
                self._feed_error = None
                # The feed's own dict when it gives one: a feed that resolves
                # its symbols later (Saxo, after a login) updates their
                # precision in place.
                return found if isinstance(found, dict) else dict(found)

    def _wire_feed(self, instruments: dict[str, Instrument]) -> None:
        """Build the parts that need the feed's symbols, and serve them."""
        s = self.settings
        self._instruments = list(instruments)
        self._source = next(iter(instruments.values())).source if instruments else Source.LIVE
        shared = _shared(self.store)
        if shared is None:
            if self.history is not None:
                self._write_store = self.history.ingest_store(self.store)
            self.ingestor = self._new_ingestor(publish=True)
        else:
            series = [SeriesKey(sym, i) for sym in instruments for i in s.intervals]
            if self._serving:
                self.reader = UpdateReader(
                    shared, self.hub, series, self.quote_cache, self.candle_cache
                )
                self.trade_reader = TradeReader(shared, self.trade_hub, list(instruments))
            if self.rejection_reader is not None:
                self.rejection_reader.symbols = list(instruments)
            if self._ingesting:
                self.rejection_publisher = RejectionPublisher(shared, self.rejections)
                self.leased = LeasedIngestion(
                    shared, s.ingest_shard, self._leased_feed, ttl=s.lease_ttl
                )
        if self.servicer is not None:
            self.servicer.set_catalog(Catalog(instruments, s.intervals))

    def _new_gatekeeper(self) -> Gatekeeper:
        """The call policy of both faces (see :mod:`candlewire.api.gatekeeper`)."""
        s = self.settings
        keys = KeyRing(s.api_keys_file) if s.api_keys_file else None
        jwt = (
            JwtVerifier(
                s.jwt_jwks_url,
                issuer=s.jwt_issuer,
                audience=s.jwt_audience,
                scopes_claim=s.jwt_scopes_claim,
            )
            if s.jwt_jwks_url
            else None
        )
        authenticator = Authenticator(
            keys=keys,
            jwt=jwt,
            anonymous_scopes=s.anonymous_scopes,
            key_rate=s.key_rate,
            key_streams=s.key_streams,
            anonymous_rate=s.anonymous_rate,
            anonymous_streams=s.anonymous_streams,
        )
        if authenticator.enabled:
            log.info(
                "authentication on: %s%s; anonymous calls: %s",
                f"{len(keys)} API keys" if keys is not None else "no API keys",
                ", JWTs from " + s.jwt_jwks_url if jwt is not None else "",
                ",".join(s.anonymous_scopes) or "refused",
            )
        else:
            log.warning(
                "AUTHENTICATION IS OFF: every caller may call every method. Set "
                "CANDLEWIRE_API_KEYS_FILE (or CANDLEWIRE_JWT_JWKS_URL) before exposing it."
            )
        self.limiter = (
            RedisLimiter(s.redis_url, prefix=s.redis_prefix) if s.redis_url else MemoryLimiter()
        )
        return Gatekeeper(
            authenticator,
            limiter=self.limiter,
            limits=LimitSettings(
                ip_rate=s.ip_rate,
                ip_streams=s.ip_streams,
                auth_failures_per_minute=s.auth_failures_per_minute,
            ),
            trusted_proxies=s.trusted_proxies,
            metrics=self.metrics,
            reflection_open=s.reflection_open,
            access_log=s.access_log,
        )

    def _start_metrics_port(self) -> None:
        s = self.settings
        if not s.metrics_listen:
            return
        from prometheus_client import start_http_server

        host, port = parse_listen(s.metrics_listen)
        try:
            server, _ = start_http_server(port, addr=host, registry=self.metrics.registry)
        except OSError as error:
            raise ConfigError(
                f"metrics_listen (CANDLEWIRE_METRICS_LISTEN): cannot listen on "
                f"{s.metrics_listen}: {error.strerror or error}"
            ) from None
        self._metrics_server = server
        log.info("metrics on http://%s:%d/metrics", host, server.server_port)

    @property
    def metrics_port(self) -> int:
        """The bound port of ``metrics_listen``."""
        if self._metrics_server is None:
            raise RuntimeError("no metrics port")
        return int(self._metrics_server.server_port)

    @property
    def shown_rejections(self) -> RejectionCounts:
        """The rejection counts ListSymbols and the metrics show: the shared
        store's totals when there is one (every ingestor's, this process's
        included once flushed), else this process's."""
        return self.rejection_reader if self.rejection_reader is not None else self.rejections

    def _metric_parts(self) -> dict[str, Any]:
        return {
            "hub": self.hub if self._serving else None,
            "rejections": self.shown_rejections
            if self._serving or _shared(self.store) is None
            else None,
            "ingestor": self.ingestor,
            "feed": self.feed,
            "candle_cache": self.candle_cache if self.reader is not None else None,
            "quote_cache": self.quote_cache if self.reader is not None else None,
            "dependencies": self.readiness.dependencies,
        }

    def read_store(self, shared: SharedStore | None) -> Store:
        """The store the API reads: a shared store through this replica's caches
        (:mod:`candlewire.store.cached`), else the store itself; with a history
        tier, that in front of PostgreSQL (:mod:`candlewire.history.tiered`)."""
        hot: Store = (
            self.store  # in-process memory: nothing worth timing
            if shared is None
            else CachedStore(
                TimedStore(shared, self.metrics, "redis"), self.quote_cache, self.candle_cache
            )
        )
        if self.history is not None:
            return self.history.api_store(hot)
        return hot

    async def _start_gateway(self, api: ApiServer) -> None:
        s = self.settings
        if not s.http_listen or not self._serving:
            return
        metrics = self.metrics
        self.gateway = Gateway(
            dispatcher=api.local_dispatcher(),
            allowed_origins=s.http_allowed_origins,
            max_request_bytes=s.http_max_request_bytes,
            idle_timeout=s.http_idle_timeout,
            shutdown_grace=s.shutdown_grace,
            tls=self.tls,
            metrics=(lambda: render(metrics)) if s.http_metrics else None,
            routes=(
                self.feed.operator_routes() if isinstance(self.feed, HasOperatorRoutes) else None
            ),
        )
        try:
            await self.gateway.start(*parse_listen(s.http_listen))
        except OSError as error:
            self.gateway = None
            raise ConfigError(
                f"http_listen (CANDLEWIRE_HTTP_LISTEN): cannot listen on {s.http_listen}: "
                f"{error.strerror or error}"
            ) from None

    def _new_ingestor(self, *, publish: bool) -> Ingestor:
        s = self.settings
        shared = _shared(self.store)
        return Ingestor(
            self._write_store if shared is None else TimedStore(shared, self.metrics, "redis"),
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
            trade_hub=self.trade_hub,
            validation=ValidationConfig(
                lateness=int(s.lateness * NANOS_PER_SECOND),
                max_future=int(s.max_future * NANOS_PER_SECOND),
                max_jump=Decimal(repr(s.max_jump)) if s.max_jump else None,
                outlier_window=s.outlier_window,
                outlier_min=max(1, s.outlier_window // 4),
            ),
            rejections=self.rejections,
        )

    # --- work ---------------------------------------------------------------------------

    async def _work(self) -> None:
        """The feed's symbols, then the feed (a store of this process), or the
        connection, follower and lease (a shared store). A start-up error
        found here (a symbol the venue does not list) stops the service and
        is raised by :meth:`run`."""
        try:
            self._wire_feed(await self._load_instruments())
        except ConfigError as error:
            self._failed = error
            self.stop()
            return
        self.started.set()
        history = self.history
        if not isinstance(self.store, Connects):
            if history is None:
                await self._feed()
                return
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(history.run_writer(self.store, ()), name="history-writer")
                tasks.create_task(self._feed(), name="feed")
            return
        await self._connect(self.store)
        async with asyncio.TaskGroup() as tasks:
            if self.reader is not None:
                tasks.create_task(self.reader.run(), name="store-follower")
            if self.trade_reader is not None:
                tasks.create_task(self.trade_reader.run(), name="trade-follower")
            if self.rejection_reader is not None:
                tasks.create_task(self.rejection_reader.run(), name="rejections-reader")
            if self.rejection_publisher is not None:
                tasks.create_task(self.rejection_publisher.run(), name="rejections-publisher")
            if self.leased is not None:
                tasks.create_task(self.leased.run(), name="lease")
                if history is not None:
                    leased = self.leased
                    series = [
                        SeriesKey(sym, i)
                        for sym in self._instruments
                        for i in self.settings.intervals
                    ]
                    tasks.create_task(
                        history.run_writer(self.store, series, holding=lambda: leased.holding),
                        name="history-archiver",
                    )

    async def _connect(self, store: Connects) -> None:
        retry = Retry(Backoff(initial=0.1, maximum=5.0), name="store connection")
        while True:
            try:
                await store.connect()
            except StoreUnavailable as error:
                await retry.wait(error)
            else:
                log.info("store connected")
                return

    async def _feed(self) -> None:
        assert self.ingestor is not None
        started = time.perf_counter()
        await self.feed.backfill(self.ingestor)
        self._backfilled = True
        self.readiness.recheck()
        # What start-up made (the backfilled history, caches, modules) lives as
        # long as the process: out of the collector's sight, a collection of
        # the oldest generation no longer walks it (the cost of each live
        # update's garbage stays that of the update).
        gc.freeze()
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
                await self._align(self.ingestor)
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

    async def _align(self, ingestor: Ingestor) -> None:
        """Continue what the store holds, retried while it cannot be read (a
        Redis that just restarted may fail the first calls)."""
        retry = Retry(Backoff(initial=0.05, maximum=2.0), name="reading the stored candles")
        while True:
            try:
                await ingestor.align(self.settings.retention)
            except StoreUnavailable as error:
                await retry.wait(error)
            else:
                return

    # --- readiness ----------------------------------------------------------------------

    async def _feed_state(self) -> tuple[FeedState, str]:
        """The feed's state for ListSymbols. A process that does not run the feed
        (an API replica, an ingestor standing by) knows only whether a login is
        needed, from the shared token store; otherwise it says UNSPECIFIED."""
        feed = self.feed
        if self.ingestor is None:
            if isinstance(feed, NeedsLogin):
                reason = await feed.check_login()
                if reason is not None:
                    return FeedState.LOGIN_REQUIRED, f"login required ({reason})"
            return FeedState.UNSPECIFIED, ""
        if isinstance(feed, NeedsLogin) and feed.login_required:
            why = feed.status()[1] if isinstance(feed, ReportsStatus) else "login required"
            return FeedState.LOGIN_REQUIRED, why
        if not isinstance(feed, ReportsStatus):
            return FeedState.UNSPECIFIED, ""
        healthy, why = feed.status()
        return (FeedState.OK, "") if healthy else (FeedState.DOWN, why)

    def _observe(self, store_error: str | None) -> Observed:
        ingestor = self.ingestor
        feed = self.feed
        return Observed(
            now=time.monotonic(),
            store_error=store_error,
            feed_error=self._feed_error,
            follows=self.reader is not None,
            following=self.quote_cache.connected,
            ingests=self._ingesting,
            leased=self.leased is not None,
            holding=self.leased is not None and self.leased.holding,
            feed_status=feed.status() if isinstance(feed, ReportsStatus) else None,
            backfilled=self._backfilled and ingestor is not None,
            last_receive=None if ingestor is None else ingestor.last_receive,
            stale_after=self.settings.feed_stale_after,
            history_error=None if self.history is None else self.history.problem,
            history=self.history is not None,
        )

    async def _publish_ready(self, ready: bool, dependencies: dict[str, bool]) -> None:
        if self.api is not None and not self._stopping.is_set():
            await self.api.set_ready(ready, dependencies)

    async def _store_answered(self) -> None:
        """The store answered: write what the ingestor buffered while it was
        away, and see whether PostgreSQL answers too."""
        if self.ingestor is not None and self.ingestor.buffered:
            await self.ingestor.flush()
        if self.history is not None:
            await self.history.check()
