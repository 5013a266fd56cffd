"""SaxoFeed: Saxo OpenAPI FX spot quotes as a :class:`~candlewire.feeds.base.Feed`.

Start-up (:meth:`SaxoFeed.instruments`): the configured symbols (``EURUSD``,
``EUR-USD`` or ``EUR/USD``) are resolved to Saxo UICs with
``GET /ref/v1/instruments?Keywords=...&AssetTypes=FxSpot`` (the exact
``Symbol`` only) and their price precision read from
``GET /ref/v1/instruments/details/{Uic}/FxSpot`` (``Format.Decimals``, one
more with ``AllowDecimalPips``). An unknown symbol stops the start with a
:class:`~candlewire.errors.ConfigError` naming it. Without a login yet the
service still starts: the symbols are served with a provisional precision
(5, 3 for JPY pairs) and resolved as soon as an operator logs in (an unknown
symbol then ends the feed with the same error).

Live (:meth:`SaxoFeed.run`): one streaming connection (one context id) and
one ``POST /trade/v1/prices/subscriptions`` per symbol on it. Snapshots and
deltas are merged per instrument (:class:`~candlewire.feeds.saxo.streaming.PriceStream`);
each change becomes a :class:`~candlewire.domain.Quote`, and while the market
is open each bid/ask change becomes a tick: a zero-quantity
:class:`~candlewire.domain.Trade` at the configured candle price (mid by
default), so candles count ticks in ``trade_count`` and have zero volume.
While Saxo says the market is closed, quotes still flow (marked closed) but
no ticks and no watermarks: no candle is built for a closed market, and the
time it was closed is not filled with flat candles.

Control messages: ``_heartbeat`` keeps a subscription alive (readiness stays
up on a quiet market; ``SubscriptionPermanentlyDisabled`` re-creates it),
``_resetsubscriptions`` re-creates the named subscriptions (all when none is
named), ``_disconnect`` means the login is gone (login required),
``_reconnect`` reconnects at once. A lost connection reconnects with the same
context id and ``messageid=<last>``, so Saxo sends what was missed.

Failures are retried with :class:`~candlewire.retry.Retry` (jittered, capped
backoff). After ``breaker_failures`` failures in a row the circuit opens: the
feed stops hammering Saxo and probes every ``probe_interval`` seconds until
one attempt works; it never gives up for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from candlewire.domain import Instrument, Quote, Source, Trade
from candlewire.errors import ConfigError, DependencyUnavailable
from candlewire.feeds.base import FeedSink, OperatorRoute
from candlewire.feeds.saxo.errors import LoginRequired, SaxoError, SaxoUnavailable
from candlewire.feeds.saxo.http import SaxoHttp
from candlewire.feeds.saxo.oauth import SaxoEndpoints, TokenKeeper
from candlewire.feeds.saxo.schemas import (
    InstrumentDetails,
    InstrumentList,
    PriceBook,
    PriceSubscription,
    canonical_symbol,
    instrument,
    parse_model,
)
from candlewire.feeds.saxo.streaming import (
    SOCKET_LOG,
    Disconnect,
    HeartbeatEvent,
    PriceStream,
    Reconnect,
    ResetSubscriptions,
    authorize_url,
    connect_url,
)
from candlewire.retry import Backoff, Retry
from candlewire.tasks import cancel_and_wait

__all__ = ["SaxoConfig", "SaxoFeed", "is_retryable"]

log = logging.getLogger(__name__)

CandlePrice = Literal["mid", "bid", "ask"]


@dataclass(frozen=True, slots=True)
class SaxoConfig:
    endpoints: SaxoEndpoints
    candle_price: CandlePrice = "mid"
    """The price ticks (and so candles) are built from."""
    silence_timeout: float = 60.0
    """A socket without any message (data or heartbeat) for this long is dead."""
    open_timeout: float = 10.0
    rest_timeout: float = 10.0
    refresh_rate: int = 0
    """``RefreshRate`` of the price subscriptions in ms (0: as fast as Saxo sends)."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_reset: float = 60.0
    breaker_failures: int = 8
    """Failures in a row after which the circuit opens (slow probing)."""
    probe_interval: float = 120.0
    """Seconds between attempts while the circuit is open."""
    resubscribe_after: float = 0.0
    """Re-create a subscription silent (no data, no heartbeat) for this long
    (0: twice its ``InactivityTimeout``, at least ``silence_timeout``)."""


class _Reconnect(Exception):
    """Reconnect now (Saxo's ``_reconnect``, a token-expiry close): not a failure."""


def is_retryable(error: BaseException) -> bool:
    """Network trouble and upstream misbehaviour are retried; bugs are not."""
    return isinstance(
        error,
        OSError
        | TimeoutError
        | DependencyUnavailable
        | SaxoError
        | ConnectionClosed
        | InvalidHandshake,
    )


def _provisional(symbol: str) -> Instrument:
    return Instrument(
        symbol=symbol,
        base_asset=symbol[:3],
        quote_asset=symbol[3:],
        price_precision=3 if symbol.endswith("JPY") else 5,
        quantity_precision=0,
        source=Source.LIVE,
    )


@dataclass(slots=True)
class _Subscription:
    symbol: str
    uic: int
    reference_id: str = ""
    generation: int = 0
    inactivity: float = 0.0
    last_seen: float = 0.0
    disabled: bool = False


class SaxoFeed:
    """Implements :class:`~candlewire.feeds.base.Feed` and ``ReportsStatus`` for Saxo FX spot."""

    def __init__(
        self,
        symbols: Sequence[str],
        config: SaxoConfig,
        keeper: TokenKeeper,
        *,
        routes: Mapping[str, OperatorRoute] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        canonical = [canonical_symbol(s) for s in symbols]
        if not canonical:
            raise ValueError("at least one symbol")
        duplicates = sorted({s for s in canonical if canonical.count(s) > 1})
        if duplicates:
            raise ConfigError(
                f"symbols (CANDLEWIRE_SYMBOLS): {', '.join(duplicates)} configured twice"
            )
        self.config = config
        self.keeper = keeper
        self._routes = dict(routes or {})
        self._symbols = canonical
        self._transport = transport
        self._instruments: dict[str, Instrument] = {s: _provisional(s) for s in canonical}
        self._subs: dict[str, _Subscription] = {}
        self._resolved = False
        self.stream = PriceStream()
        self.context_id = ""
        self._resume = False
        self._ws: ClientConnection | None = None
        self._up = False
        self._problem = "not connected yet"
        self._circuit_open = False
        self._http: SaxoHttp | None = None
        self._pending: asyncio.Queue[str] = asyncio.Queue()
        self._subscribed = asyncio.Event()
        self._checked: tuple[float, str | None] = (-1.0, None)
        self.changed = asyncio.Event()
        """Set whenever :meth:`status` may have changed (for whoever watches it)."""
        self.connections = 0
        """Websocket connections opened."""
        self.resumed = 0
        """Connections opened with ``messageid`` (resuming)."""
        self.authorizations = 0
        """Re-authorisations of the open socket."""
        self.resets = 0
        """Subscriptions re-created."""

    # --- Feed ----------------------------------------------------------------------------

    async def instruments(self) -> Mapping[str, Instrument]:
        """Resolve the symbols when a login exists; else serve them provisionally.

        The mapping returned is the feed's own: resolution later (after a
        login) updates the precision in it.
        """
        try:
            await self.keeper.current()
        except (LoginRequired, DependencyUnavailable) as error:
            log.warning("Saxo symbols not resolved yet (%s): provisional precision", error)
            return self._instruments
        async with self._session_http() as http:
            try:
                await self._resolve(http)
            except (LoginRequired, SaxoUnavailable) as error:
                log.warning("Saxo symbols not resolved yet (%s): provisional precision", error)
        return self._instruments

    async def backfill(self, sink: FeedSink) -> None:
        """Nothing to load: FX candles are built from the quotes streamed from now on."""

    async def run(self, sink: FeedSink) -> None:
        config = self.config
        retry = Retry(
            Backoff(initial=config.backoff_initial, maximum=config.backoff_max),
            name="saxo",
            retryable=is_retryable,
            reset_after=config.backoff_reset,
        )
        probe = Backoff(initial=config.probe_interval, maximum=config.probe_interval, jitter=0.2)
        async with self._session_http() as http:
            self._http = http
            try:
                while True:
                    try:
                        await self.keeper.current()
                        if not self._resolved:
                            await self._resolve(http)
                        await self._connection(http, sink, retry)
                    except LoginRequired as error:
                        self._down(f"login required: {error}")
                        self._forget_session()
                        await self.keeper.wait_for_login()
                        retry.succeeded()
                        self._circuit_open = False
                        log.info("Saxo login present: connecting")
                    except _Reconnect as request:
                        self._down(f"reconnecting: {request}")
                    except Exception as error:
                        delay = retry.delay_for(error)
                        if retry.failures >= config.breaker_failures:
                            if not self._circuit_open:
                                log.warning(
                                    "Saxo: %d failures in a row; probing every %.0fs",
                                    retry.failures,
                                    config.probe_interval,
                                )
                            self._circuit_open = True
                            delay = max(delay, probe.next())
                        self._down(f"{_describe(error)}; retrying in {delay:.1f}s")
                        await asyncio.sleep(delay)
            finally:
                self._http = None
                self._up = False

    def status(self) -> tuple[bool, str]:
        """(healthy, why not): login required, circuit open, or connection down."""
        if self.keeper.login_required is not None:
            return False, f"login required ({self.keeper.login_required})"
        if self._up:
            return True, "ok"
        if self._circuit_open:
            return False, f"Saxo unreachable, circuit open (probing): {self._problem}"
        return False, f"Saxo streaming down: {self._problem}"

    @property
    def login_required(self) -> bool:
        return self.keeper.login_required is not None

    async def check_login(self) -> str | None:
        """Why a login is needed, read from the token store (cached for a second)."""
        now = time.monotonic()
        if now - self._checked[0] < 1.0:
            return self._checked[1]
        try:
            tokens = await self.keeper.store.load()
        except DependencyUnavailable:
            return self._checked[1]
        if tokens is None:
            reason: str | None = "no Saxo login yet"
        elif tokens.broken:
            reason = "Saxo login required"
        elif not tokens.usable():
            reason = "the Saxo login expired"
        else:
            reason = None
        self._checked = (now, reason)
        return reason

    def operator_routes(self) -> Mapping[str, OperatorRoute]:
        """The login routes (``/auth/saxo/login`` and its callback) for the HTTP port."""
        return self._routes

    async def close(self) -> None:
        """Close the token store (its Redis connections)."""
        await self.keeper.store.close()

    # --- plumbing -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session_http(self) -> Any:
        http = SaxoHttp(
            self.config.endpoints.rest_url,
            self.keeper,
            timeout=self.config.rest_timeout,
            transport=self._transport,
        )
        try:
            yield http
        finally:
            await http.aclose()

    def _down(self, problem: str) -> None:
        if self._up or problem != self._problem:
            log.warning("Saxo feed down: %s", problem)
        self._up = False
        self._problem = problem
        self.changed.set()

    def _forget_session(self) -> None:
        """A new login starts a new streaming session (new context id, new subscriptions)."""
        self._resume = False
        self.context_id = ""
        self.stream.drop(list(self.stream.books))
        for sub in self._subs.values():
            sub.reference_id = ""

    async def _resolve(self, http: SaxoHttp) -> None:
        unknown: list[str] = []
        resolved: dict[str, Instrument] = {}
        uics: dict[str, int] = {}
        for symbol in self._symbols:
            found = parse_model(
                InstrumentList,
                await http.request(
                    "GET",
                    "/ref/v1/instruments",
                    params={"Keywords": symbol, "AssetTypes": "FxSpot"},
                ),
                "GET /ref/v1/instruments",
            )
            match = [
                item
                for item in found.Data
                if item.Symbol.upper() == symbol and item.AssetType == "FxSpot"
            ]
            if not match:
                unknown.append(symbol)
                continue
            uic = match[0].Identifier
            details = parse_model(
                InstrumentDetails,
                await http.request("GET", f"/ref/v1/instruments/details/{uic}/FxSpot"),
                "GET /ref/v1/instruments/details",
            )
            resolved[symbol] = instrument(details, symbol)
            uics[symbol] = uic
        if unknown:
            raise ConfigError(
                "symbols (CANDLEWIRE_SYMBOLS): not Saxo FX spot instruments: " + ", ".join(unknown)
            )
        self._instruments.update(resolved)
        self._subs = {s: _Subscription(s, uics[s]) for s in self._symbols}
        self._resolved = True
        log.info(
            "Saxo instruments: %s",
            ", ".join(
                f"{s}=UIC {uics[s]} ({resolved[s].price_precision} dp)" for s in self._symbols
            ),
        )

    async def _connection(self, http: SaxoHttp, sink: FeedSink, retry: Retry) -> None:
        """One websocket connection, from open to failure."""
        tokens = await self.keeper.current()
        if not self.context_id:
            self.context_id = "cw" + secrets.token_hex(8)
            self._resume = False
        resume = self._resume and self.stream.last_message_id is not None
        url = connect_url(
            self.config.endpoints.streaming_url,
            self.context_id,
            self.stream.last_message_id if resume else None,
        )
        try:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {tokens.access_token}"},
                open_timeout=self.config.open_timeout,
                close_timeout=1.0,
                max_size=2**24,
                user_agent_header="candlewire",
                logger=SOCKET_LOG,
            )
        except InvalidStatus as error:
            status = error.response.status_code
            if status == 401:
                await self.keeper.refresh(tokens)
                raise SaxoUnavailable("streaming handshake refused the token (HTTP 401)") from None
            raise SaxoUnavailable(f"streaming handshake: HTTP {status}") from None
        self.connections += 1
        if resume:
            self.resumed += 1
        self._ws = ws
        self._resume = True
        try:
            async with asyncio.TaskGroup() as tasks:
                reader = tasks.create_task(self._read(ws, sink), name="saxo-reader")
                if not resume:
                    self.stream.drop(list(self.stream.books))
                    for sub in self._subs.values():
                        sub.reference_id = ""
                self._queue_unsubscribed()
                subscriber = tasks.create_task(self._subscriber(http, sink), name="saxo-subscribe")
                authorizer = tasks.create_task(self._keep_authorized(http), name="saxo-authorize")
                await self._until_subscribed(reader)
                retry.connected()
                self._up = True
                self._circuit_open = False
                self.changed.set()
                log.info(
                    "Saxo streaming connected (%s, %d subscriptions)",
                    "resumed" if resume else "new",
                    len(self._subs),
                )
                await reader  # ends only with an error
                await cancel_and_wait(subscriber, authorizer)
        except BaseExceptionGroup as group:
            _raise_first(group)
        finally:
            self._ws = None
            self._up = False
            with contextlib.suppress(Exception):
                await ws.close()

    def _queue_unsubscribed(self) -> None:
        """Queue every symbol without a subscription (or asked for again) once."""
        queued: set[str] = set()
        while not self._pending.empty():
            queued.add(self._pending.get_nowait())
        for sub in self._subs.values():
            if not sub.reference_id or sub.symbol in queued:
                self._pending.put_nowait(sub.symbol)

    async def _until_subscribed(self, reader: asyncio.Task[None]) -> None:
        """Return once every symbol has a subscription; raise if the reader ends first."""
        while any(not sub.reference_id for sub in self._subs.values()):
            self._subscribed.clear()
            waiting = asyncio.ensure_future(self._subscribed.wait())
            try:
                await asyncio.wait({reader, waiting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            if reader.done():
                reader.result()
                raise SaxoUnavailable("connection closed while subscribing")

    async def _read(self, ws: ClientConnection, sink: FeedSink) -> None:
        loop = asyncio.get_running_loop()
        silence = self.config.silence_timeout
        stream = self.stream
        by_ref = self._by_reference
        price = self.config.candle_price
        try:
            async with asyncio.timeout(silence) as deadline:
                async for message in ws:
                    received = time.time_ns()
                    deadline.reschedule(loop.time() + silence)
                    if isinstance(message, str):
                        raise SaxoError("streaming sent a text message (binary expected)")
                    batch = stream.feed(message, received)
                    now = loop.time()
                    for reference in batch.touched:
                        sub = by_ref(reference)
                        if sub is not None:
                            sub.last_seen = now
                    for control in batch.controls:
                        await self._control(control)
                    for symbol in batch.closed:
                        log.info("Saxo: the %s market closed; no candles until it opens", symbol)
                        await sink.market_closed(symbol)
                    if batch.quotes:
                        await sink.quotes(list(batch.quotes.values()))
                    elif batch.touched or batch.alive:
                        await sink.quotes(())  # a heartbeat: the feed is alive
                    if batch.ticks:
                        await sink.ticks([_tick(q, price) for q in batch.ticks])
                        marks: dict[str, int] = {}
                        for quote in batch.ticks:
                            marks[quote.symbol] = max(marks.get(quote.symbol, 0), quote.time)
                        for symbol, mark in marks.items():
                            await sink.watermark(symbol, mark)
        except TimeoutError:
            raise SaxoUnavailable(f"no streaming message for {silence:g}s") from None
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
            if code == 1002:  # Saxo: the token expired
                await self.keeper.refresh(self.keeper.tokens)
                raise _Reconnect("the streaming token expired") from None
            raise
        raise SaxoUnavailable("streaming connection ended")

    def _by_reference(self, reference: str) -> _Subscription | None:
        for sub in self._subs.values():
            if sub.reference_id == reference:
                return sub
        return None

    async def _control(self, control: object) -> None:
        if isinstance(control, HeartbeatEvent):
            sub = self._by_reference(control.reference_id)
            if sub is None:
                return
            disabled = control.reason == "SubscriptionTemporarilyDisabled"
            if disabled and not sub.disabled:
                log.warning("Saxo disabled the %s subscription for now", sub.symbol)
            sub.disabled = disabled
            if control.reason == "SubscriptionPermanentlyDisabled":
                log.warning("Saxo disabled the %s subscription; re-creating it", sub.symbol)
                self._pending.put_nowait(sub.symbol)
        elif isinstance(control, ResetSubscriptions):
            targets = set(control.targets)
            symbols = [
                sub.symbol
                for sub in self._subs.values()
                if not targets or sub.reference_id in targets
            ]
            log.info("Saxo _resetsubscriptions: re-creating %s", ", ".join(symbols) or "none")
            for symbol in symbols:
                self._pending.put_nowait(symbol)
        elif isinstance(control, Disconnect):
            await self.keeper.break_chain("Saxo ended the session (_disconnect)")
            raise LoginRequired("Saxo ended the session (_disconnect)")
        elif isinstance(control, Reconnect):
            raise _Reconnect("Saxo asked for it (_reconnect)")

    async def _subscriber(self, http: SaxoHttp, sink: FeedSink) -> None:
        """(Re-)create subscriptions as asked; re-create those gone silent."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(1.0):
                    symbol = await self._pending.get()
            except TimeoutError:
                now = loop.time()
                for sub in self._subs.values():
                    if sub.reference_id and now - sub.last_seen > self._silent_after(sub):
                        log.warning("Saxo %s subscription went silent; re-creating it", sub.symbol)
                        self._pending.put_nowait(sub.symbol)
                continue
            await self._subscribe(http, sink, self._subs[symbol])

    def _silent_after(self, sub: _Subscription) -> float:
        if self.config.resubscribe_after > 0:
            return self.config.resubscribe_after
        return max(2 * sub.inactivity, self.config.silence_timeout)

    async def _subscribe(self, http: SaxoHttp, sink: FeedSink, sub: _Subscription) -> None:
        old = sub.reference_id
        sub.generation += 1
        reference = f"{sub.symbol}-{sub.generation}"
        self.stream.expect(reference)
        body: dict[str, Any] = {
            "ContextId": self.context_id,
            "ReferenceId": reference,
            "Format": "application/json",
            "Arguments": {"Uic": sub.uic, "AssetType": "FxSpot"},
        }
        if self.config.refresh_rate:
            body["RefreshRate"] = self.config.refresh_rate
        if old:
            self.stream.drop([old])
            self.resets += 1
            with contextlib.suppress(SaxoError):
                await http.request(
                    "DELETE",
                    f"/trade/v1/prices/subscriptions/{self.context_id}/{old}",
                    expect=(200, 202, 204, 404),
                )
        answer = parse_model(
            PriceSubscription,
            await http.request("POST", "/trade/v1/prices/subscriptions", body=body, expect=(201,)),
            "POST /trade/v1/prices/subscriptions",
        )
        book = self.stream.subscribed(reference, PriceBook(sub.symbol, sub.uic), answer.Snapshot)
        sub.reference_id = reference
        self._subscribed.set()
        sub.inactivity = float(answer.InactivityTimeout)
        sub.last_seen = asyncio.get_running_loop().time()
        sub.disabled = False
        if book.complete:
            await sink.quotes([book.quote(time.time_ns())])

    async def _keep_authorized(self, http: SaxoHttp) -> None:
        """Refresh ahead of expiry and re-authorise the open socket with each new token.

        A refresh or authorisation that fails on the network is retried with
        backoff while the current token is still valid; after that the
        socket closes and the connection loop takes over.
        """
        authorized = self.keeper.tokens
        retry = Retry(
            Backoff(initial=self.config.backoff_initial, maximum=self.config.backoff_max),
            name="saxo token refresh",
            retryable=lambda error: isinstance(error, DependencyUnavailable),
        )
        while True:
            delay = self.keeper.refresh_due()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                tokens = await self.keeper.refresh(self.keeper.tokens)
                if authorized is None or tokens.access_token != authorized.access_token:
                    await self._authorize(tokens.access_token)
                    authorized = tokens
                retry.succeeded()
            except DependencyUnavailable as error:
                current = self.keeper.tokens
                if current is None or current.access_expires <= time.time():
                    raise
                await retry.wait(error)

    async def _authorize(self, access_token: str) -> None:
        url = authorize_url(self.config.endpoints.streaming_url, self.context_id)
        try:
            async with httpx.AsyncClient(
                timeout=self.config.rest_timeout, transport=self._transport
            ) as client:
                response = await client.put(
                    url, headers={"Authorization": f"Bearer {access_token}"}
                )
        except httpx.HTTPError as error:
            raise SaxoUnavailable(f"streaming authorize: {type(error).__name__}") from None
        if response.status_code == 401:
            await self.keeper.break_chain("Saxo refused the new token for streaming (HTTP 401)")
            raise LoginRequired("Saxo refused the new token for streaming (HTTP 401)")
        if response.status_code not in (200, 202, 204):
            raise SaxoUnavailable(f"streaming authorize: HTTP {response.status_code}")
        self.authorizations += 1
        log.info("Saxo streaming socket re-authorised")


def _tick(quote: Quote, price: CandlePrice) -> Trade:
    value = quote.mid if price == "mid" else quote.bid if price == "bid" else quote.ask
    return Trade(quote.symbol, quote.time, value, _ZERO, quote.source)


_ZERO = Decimal(0)


def _raise_first(group: BaseExceptionGroup[BaseException]) -> None:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            _raise_first(error)
        elif not isinstance(error, asyncio.CancelledError):
            raise error
    raise group


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
