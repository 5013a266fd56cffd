"""Saxo OpenAPI wire formats, and their translation into domain types.

Models name their fields exactly as Saxo does (``Uic``, ``LastUpdated``,
``PriceTypeBid`` ...), so they read like Saxo's reference documentation
(developer.saxo/openapi/referencedocs). This is the only module that knows both
the wire and the domain: :class:`PriceBook` merges a price subscription's
snapshot and deltas and turns them into :class:`~candlewire.domain.Quote`,
:func:`instrument` an instrument's details into an
:class:`~candlewire.domain.Instrument`.

Streaming payloads are read with :func:`json.loads` (``parse_float=Decimal``,
so nothing is rounded) into dicts that :class:`PriceBook` consumes at once:
a delta carries only the fields that changed, and a price update is the hot
path (see ``bench/saxo.py``). REST answers, read once, are validated with
pydantic models.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from candlewire.domain import (
    NANOS_PER_SECOND,
    Instrument,
    MarketState,
    PriceType,
    Quote,
    Source,
)
from candlewire.feeds.saxo.errors import SaxoError

__all__ = [
    "CONTROL_CONNECTION_HEARTBEAT",
    "CONTROL_DISCONNECT",
    "CONTROL_HEARTBEAT",
    "CONTROL_RECONNECT",
    "CONTROL_RESET",
    "Heartbeat",
    "InstrumentDetails",
    "InstrumentFormat",
    "InstrumentList",
    "InstrumentSummary",
    "PriceBook",
    "PriceSubscription",
    "TokenResponse",
    "canonical_symbol",
    "control_messages",
    "instrument",
    "json_payload",
    "market_state",
    "parse_model",
    "parse_time",
    "price_type",
]

CONTROL_HEARTBEAT = "_heartbeat"
CONTROL_CONNECTION_HEARTBEAT = "_connectionheartbeat"
"""Sent on an idle connection opened with ``sendHeartbeats=true``; it has no message id."""
CONTROL_RESET = "_resetsubscriptions"
CONTROL_DISCONNECT = "_disconnect"
CONTROL_RECONNECT = "_reconnect"


_M = TypeVar("_M", bound=BaseModel)


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# --- OAuth: POST {auth}/token --------------------------------------------------------------


class TokenResponse(_Wire):
    """The token endpoint's answer (HTTP 201)."""

    access_token: str = Field(repr=False)
    token_type: str = "Bearer"
    expires_in: int
    refresh_token: str = Field(repr=False)
    refresh_token_expires_in: int


# --- REST: GET /ref/v1/instruments and /ref/v1/instruments/details/{Uic}/{AssetType} -------


class InstrumentSummary(_Wire):
    """One entry of ``Data`` of ``GET /ref/v1/instruments``."""

    Identifier: int
    """The instrument's UIC."""
    Symbol: str
    AssetType: str
    Description: str = ""
    CurrencyCode: str = ""


class InstrumentList(_Wire):
    Data: list[InstrumentSummary]


class InstrumentFormat(_Wire):
    """``Format`` of an instrument's details."""

    Decimals: int
    Format: str = "Normal"
    """``AllowDecimalPips``: prices carry one more decimal than ``Decimals``."""
    OrderDecimals: int | None = None


class InstrumentDetails(_Wire):
    Uic: int
    Symbol: str
    AssetType: str
    CurrencyCode: str = ""
    Description: str = ""
    Format: InstrumentFormat


# --- REST: POST /trade/v1/prices/subscriptions --------------------------------------------


class PriceSubscription(_Wire):
    """The answer to a subscription request (HTTP 201): its state and snapshot."""

    ContextId: str
    ReferenceId: str
    InactivityTimeout: int = 0
    """Seconds after which Saxo drops a subscription it could not deliver to."""
    RefreshRate: int = 0
    State: str = "Active"
    Snapshot: dict[str, Any]


# --- streaming control messages -----------------------------------------------------------


class Heartbeat(_Wire):
    """One entry of ``Heartbeats`` of a ``_heartbeat`` control message."""

    OriginatingReferenceId: str
    Reason: str
    """``NoNewData``, ``SubscriptionTemporarilyDisabled`` or ``SubscriptionPermanentlyDisabled``."""


def parse_model(model: type[_M], data: Any, what: str) -> _M:
    """Validate a decoded REST answer; a mismatch is a :class:`SaxoError` naming ``what``."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "body"
        raise SaxoError(f"{what}: unexpected answer ({where}: {problem['msg']})") from None


_DECODER = json.JSONDecoder(parse_float=Decimal)


def json_payload(payload: bytes, reference_id: str) -> Any:
    """A JSON payload, numbers as :class:`~decimal.Decimal`."""
    try:
        return _DECODER.decode(payload.decode())
    except (ValueError, UnicodeDecodeError):
        raise SaxoError(f"streaming payload of {reference_id!r} is not JSON") from None


def control_messages(payload: Any) -> list[Mapping[str, Any]]:
    """A control message's payload: a JSON array of objects (one object is accepted too)."""
    items = payload if isinstance(payload, list) else [payload]
    return [item for item in items if isinstance(item, dict)]


# --- times -------------------------------------------------------------------------------

_SECONDS: dict[str, int] = {}


def parse_time(text: str) -> int:
    """``2026-01-05T08:00:01.1234567Z`` (Saxo's UTC times) as nanoseconds since the epoch.

    The whole-second part is cached: consecutive quotes share it.
    """
    head = text[:19]
    seconds = _SECONDS.get(head)
    if seconds is None:
        try:
            year, month, day = int(head[0:4]), int(head[5:7]), int(head[8:10])
            hour, minute, second = int(head[11:13]), int(head[14:16]), int(head[17:19])
            if head[4] != "-" or head[10] not in "Tt " or head[13] != ":":
                raise ValueError
        except (ValueError, IndexError):
            raise SaxoError(f"not a Saxo time: {text[:40]!r}") from None
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        _SECONDS[head] = seconds
    nanos = 0
    rest = text[19:]
    if rest.startswith("."):
        digits = rest[1:].rstrip("Zz")
        if digits.endswith("+00:00"):
            digits = digits[:-6]
        if not digits.isdigit() or len(digits) > 9:
            raise SaxoError(f"not a Saxo time: {text[:40]!r}")
        nanos = int(digits.ljust(9, "0"))
    return seconds * NANOS_PER_SECOND + nanos


# --- enumerations -----------------------------------------------------------------------

_MARKET_STATES = {
    "Open": MarketState.OPEN,
    "Closed": MarketState.CLOSED,
    "PreMarket": MarketState.PRE_MARKET,
    "PostMarket": MarketState.POST_MARKET,
    "OpeningAuction": MarketState.AUCTION,
    "ClosingAuction": MarketState.AUCTION,
    "IntraDayAuction": MarketState.AUCTION,
    "TradingAtLast": MarketState.AUCTION,
    "Suspended": MarketState.SUSPENDED,
    "Halted": MarketState.SUSPENDED,
}
_PRICE_TYPES = {
    "Tradable": PriceType.TRADABLE,
    "Indicative": PriceType.INDICATIVE,
    "OldIndicative": PriceType.OLD_INDICATIVE,
    "NoMarket": PriceType.NO_MARKET,
    "Pending": PriceType.INDICATIVE,
    "None": PriceType.NO_MARKET,
}


def market_state(value: str | None) -> MarketState:
    """Saxo's ``MarketState`` as a domain state (an unknown one is UNSPECIFIED)."""
    return (
        MarketState.UNSPECIFIED
        if value is None
        else _MARKET_STATES.get(value, MarketState.UNSPECIFIED)
    )


def price_type(value: str | None) -> PriceType:
    """Saxo's ``PriceTypeBid``/``PriceTypeAsk`` as a domain price type."""
    return (
        PriceType.UNSPECIFIED if value is None else _PRICE_TYPES.get(value, PriceType.UNSPECIFIED)
    )


# --- instruments ---------------------------------------------------------------------------


def canonical_symbol(text: str) -> str:
    """``EUR/USD``, ``EUR-USD`` and ``eurusd`` are all ``EURUSD``."""
    return text.replace("/", "").replace("-", "").strip().upper()


def instrument(details: InstrumentDetails, symbol: str) -> Instrument:
    """The domain instrument of an FX spot pair; price precision from ``Format``."""
    decimals = details.Format.Decimals
    if details.Format.Format == "AllowDecimalPips":
        decimals += 1
    quote_asset = details.CurrencyCode or symbol[3:]
    base_asset = (
        symbol[: len(symbol) - len(quote_asset)] if symbol.endswith(quote_asset) else symbol[:3]
    )
    return Instrument(
        symbol=symbol,
        base_asset=base_asset,
        quote_asset=quote_asset,
        price_precision=decimals,
        quantity_precision=0,
        source=Source.LIVE,
    )


# --- prices ------------------------------------------------------------------------------


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, int | str) and not isinstance(value, bool):
        return Decimal(value)
    return None


_ZERO = Decimal(0)


class PriceBook:
    """The merged state of one price subscription: snapshot, then deltas.

    :meth:`apply` takes a payload (``{"Quote": {...}, "LastUpdated": ...}``,
    only the changed fields) and returns whether bid or ask changed (a
    *tick*); :meth:`quote` is the current domain quote. Fields Saxo has not
    sent yet keep their previous value, as the protocol asks.
    """

    __slots__ = (
        "ask",
        "ask_size",
        "bid",
        "bid_size",
        "market",
        "price_type_ask",
        "price_type_bid",
        "symbol",
        "time",
        "uic",
    )

    def __init__(self, symbol: str, uic: int) -> None:
        self.symbol = symbol
        self.uic = uic
        self.bid: Decimal | None = None
        self.ask: Decimal | None = None
        self.bid_size = _ZERO
        self.ask_size = _ZERO
        self.market = MarketState.UNSPECIFIED
        self.price_type_bid = PriceType.UNSPECIFIED
        self.price_type_ask = PriceType.UNSPECIFIED
        self.time = 0

    def reset(self) -> None:
        """Forget everything (a new snapshot follows)."""
        self.__init__(self.symbol, self.uic)  # type: ignore[misc]

    @property
    def complete(self) -> bool:
        """Bid and ask and a time are known."""
        return self.bid is not None and self.ask is not None and self.time > 0

    def apply(self, payload: Mapping[str, Any]) -> bool:
        """Merge a snapshot or delta; True when bid or ask changed."""
        ticked = False
        quote = payload.get("Quote")
        if isinstance(quote, dict):
            value = quote.get("Bid")
            if value is not None:
                bid = _decimal(value)
                if bid is None:
                    raise SaxoError(f"{self.symbol}: Quote.Bid is not a number")
                if bid != self.bid:
                    self.bid = bid
                    ticked = True
            value = quote.get("Ask")
            if value is not None:
                ask = _decimal(value)
                if ask is None:
                    raise SaxoError(f"{self.symbol}: Quote.Ask is not a number")
                if ask != self.ask:
                    self.ask = ask
                    ticked = True
            value = quote.get("BidSize")
            if value is not None:
                self.bid_size = _decimal(value) or _ZERO
            value = quote.get("AskSize")
            if value is not None:
                self.ask_size = _decimal(value) or _ZERO
            value = quote.get("MarketState")
            if value is not None:
                self.market = market_state(value)
            value = quote.get("PriceTypeBid")
            if value is not None:
                self.price_type_bid = price_type(value)
            value = quote.get("PriceTypeAsk")
            if value is not None:
                self.price_type_ask = price_type(value)
        updated = payload.get("LastUpdated")
        if isinstance(updated, str):
            time = parse_time(updated)
            if time > self.time:
                self.time = time
        return ticked

    def quote(self, receive_time: int) -> Quote:
        """The current quote (call when :attr:`complete`)."""
        assert self.bid is not None and self.ask is not None
        return Quote(
            self.symbol,
            self.time,
            self.bid,
            self.ask,
            self.bid_size,
            self.ask_size,
            Source.LIVE,
            receive_time,
            None,
            self.market,
            max(self.price_type_bid, self.price_type_ask),
        )
