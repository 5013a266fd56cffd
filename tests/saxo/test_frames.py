"""The streaming decoder on recorded bytes: frames, payloads, control messages."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from candlewire.domain import MarketState, PriceType
from candlewire.feeds.saxo.errors import SaxoError
from candlewire.feeds.saxo.frames import FORMAT_JSON, FORMAT_PROTOBUF, Frame, decode, encode
from candlewire.feeds.saxo.schemas import PriceBook, parse_time
from candlewire.feeds.saxo.streaming import (
    Disconnect,
    HeartbeatEvent,
    PriceStream,
    Reconnect,
    ResetSubscriptions,
)

# Two messages in one websocket message, written out byte by byte as Saxo frames them:
# id 7, reserved, "P1", JSON, 44 bytes; then id 8, "_heartbeat", JSON.
_DELTA = b'{"Quote":{"Bid":1.10012},"LastUpdated":"x"}'
_BEAT = (
    b'[{"ReferenceId":"_heartbeat",'
    b'"Heartbeats":[{"OriginatingReferenceId":"P1","Reason":"NoNewData"}]}]'
)
RECORDED = (
    bytes.fromhex("0700000000000000000002")
    + b"P1"
    + bytes.fromhex("00")
    + len(_DELTA).to_bytes(4, "little")
    + _DELTA
    + bytes.fromhex("080000000000000000000a")
    + b"_heartbeat"
    + bytes.fromhex("00")
    + len(_BEAT).to_bytes(4, "little")
    + _BEAT
)


def test_recorded_message_with_two_frames() -> None:
    frames = decode(RECORDED)
    assert frames == [
        Frame(7, "P1", FORMAT_JSON, _DELTA),
        Frame(8, "_heartbeat", FORMAT_JSON, _BEAT),
    ]
    assert not frames[0].control and frames[1].control
    assert json.loads(frames[1].payload)[0]["Heartbeats"][0]["Reason"] == "NoNewData"


def test_encode_is_the_inverse_of_decode() -> None:
    parts = [(2**64 - 1, "ref", b"{}", FORMAT_JSON), (1, "x" * 50, b"\x08\x01", FORMAT_PROTOBUF)]
    data = b"".join(encode(i, r, p, f) for i, r, p, f in parts)
    assert decode(data) == [Frame(i, r, f, p) for i, r, p, f in parts]


@pytest.mark.parametrize("cut", [1, 10, 12, 16, 20, len(RECORDED) - 1])
def test_truncated_messages_are_errors_naming_the_place(cut: int) -> None:
    with pytest.raises(SaxoError, match="truncated"):
        decode(RECORDED[:cut])


def test_non_ascii_reference_id() -> None:
    data = bytearray(encode(1, "ab", b"{}"))
    data[11] = 0xFF
    with pytest.raises(SaxoError, match="not ASCII"):
        decode(bytes(data))


def test_times() -> None:
    assert parse_time("2026-01-05T08:00:01Z") == 1_767_600_001_000_000_000
    assert parse_time("2026-01-05T08:00:01.1234567Z") == 1_767_600_001_123_456_700
    assert parse_time("2026-01-05T08:00:01.5Z") == 1_767_600_001_500_000_000
    with pytest.raises(SaxoError):
        parse_time("yesterday")


def _stream(*references: str) -> PriceStream:
    stream = PriceStream()
    for reference in references:
        stream.expect(reference)
        stream.subscribed(reference, PriceBook(reference.split("-")[0], 21), {})
    return stream


def _payload(**quote: object) -> bytes:
    at = quote.pop("at", "2026-01-05T08:00:00.000000Z")
    return json.dumps({"Quote": quote, "LastUpdated": at}).encode()


def test_snapshot_then_deltas_carry_only_changed_fields() -> None:
    stream = PriceStream()
    stream.expect("EURUSD-1")
    book = stream.subscribed(
        "EURUSD-1",
        PriceBook("EURUSD", 21),
        {
            "Quote": {
                "Bid": Decimal("1.10010"),
                "Ask": Decimal("1.10030"),
                "BidSize": 1000000,
                "AskSize": 2000000,
                "MarketState": "Open",
                "PriceTypeBid": "Tradable",
                "PriceTypeAsk": "Tradable",
            },
            "LastUpdated": "2026-01-05T08:00:00.000000Z",
        },
    )
    assert book.complete
    batch = stream.feed(
        encode(1, "EURUSD-1", _payload(Ask=1.10025, at="2026-01-05T08:00:01.250000Z")), 99
    )
    quote = batch.quotes["EURUSD"]
    assert (quote.bid, quote.ask) == (Decimal("1.10010"), Decimal("1.10025"))
    assert quote.mid == Decimal("1.100175") and quote.spread == Decimal("0.00015")
    assert (quote.bid_size, quote.ask_size) == (Decimal(1000000), Decimal(2000000))
    assert quote.time == parse_time("2026-01-05T08:00:01.25Z") and quote.receive_time == 99
    assert quote.market_state is MarketState.OPEN and quote.price_type is PriceType.TRADABLE
    assert batch.ticks == [quote]
    # A change of size only is a quote, not a tick.
    batch = stream.feed(encode(2, "EURUSD-1", _payload(BidSize=5)), 100)
    assert batch.quotes["EURUSD"].bid_size == 5 and batch.ticks == []
    # A closed market: quotes flow, marked closed, but make no ticks.
    batch = stream.feed(
        encode(3, "EURUSD-1", _payload(Bid=1.2, MarketState="Closed", PriceTypeBid="Indicative")),
        101,
    )
    assert batch.quotes["EURUSD"].market_state is MarketState.CLOSED
    assert batch.quotes["EURUSD"].price_type is PriceType.INDICATIVE
    assert batch.ticks == [] and batch.closed == ["EURUSD"]
    batch = stream.feed(encode(4, "EURUSD-1", _payload(Bid=1.21)), 102)
    assert batch.closed == [] and batch.ticks == []  # still closed
    assert stream.last_message_id == 4


def test_deltas_before_the_reply_are_applied_after_the_snapshot() -> None:
    stream = PriceStream()
    stream.expect("GBPUSD-1")
    early = stream.feed(
        encode(5, "GBPUSD-1", _payload(Bid=1.3, at="2026-01-05T08:00:02Z"))
        + encode(6, "GBPUSD-1", _payload(Ask=1.31, at="2026-01-05T08:00:03Z")),
        1,
    )
    assert early.quotes == {} and early.ticks == []
    book = stream.subscribed(
        "GBPUSD-1",
        PriceBook("GBPUSD", 31),
        {
            "Quote": {"Bid": Decimal("1.29"), "Ask": Decimal("1.30")},
            "LastUpdated": "2026-01-05T08:00:01Z",
        },
    )
    assert (book.bid, book.ask) == (Decimal("1.3"), Decimal("1.31"))
    assert book.time == parse_time("2026-01-05T08:00:03Z")


def test_several_subscriptions_in_one_message_and_unknown_formats() -> None:
    stream = _stream("EURUSD-1", "USDJPY-1")
    data = (
        encode(1, "EURUSD-1", _payload(Bid=1.1, Ask=1.2))
        + encode(2, "USDJPY-1", b"\x0a\x03abc", FORMAT_PROTOBUF)
        + encode(3, "USDJPY-1", _payload(Bid=150.1, Ask=150.2))
        + encode(4, "OLD-1", _payload(Bid=1, Ask=2))
        + encode(5, "EURUSD-1", _payload(Bid=1.15))
    )
    batch = stream.feed(data, 0)
    assert set(batch.quotes) == {"EURUSD", "USDJPY"}
    assert batch.quotes["EURUSD"].bid == Decimal("1.15")
    assert [(q.symbol, q.bid) for q in batch.ticks] == [
        ("EURUSD", Decimal("1.1")),
        ("USDJPY", Decimal("150.1")),
        ("EURUSD", Decimal("1.15")),
    ]
    assert stream.unknown_formats == 1 and stream.skipped == 2 and stream.frames == 5


def test_control_messages() -> None:
    stream = _stream("EURUSD-1")
    data = (
        RECORDED[16 + 2 + len(_DELTA) :]  # the recorded _heartbeat frame
        + encode(
            9,
            "_resetsubscriptions",
            b'[{"ReferenceId":"_resetsubscriptions","TargetReferenceIds":["EURUSD-1"]}]',
        )
        + encode(10, "_reconnect", b'[{"ReferenceId":"_reconnect"}]')
        + encode(11, "_disconnect", b'[{"ReferenceId":"_disconnect"}]')
    )
    batch = stream.feed(data, 0)
    assert batch.controls == [
        HeartbeatEvent("P1", "NoNewData"),
        ResetSubscriptions(("EURUSD-1",)),
        Reconnect(),
        Disconnect(),
    ]
    assert stream.last_message_id == 11


def test_malformed_json_is_an_error() -> None:
    stream = _stream("EURUSD-1")
    with pytest.raises(SaxoError, match="not JSON"):
        stream.feed(encode(1, "EURUSD-1", b"{nope"), 0)
