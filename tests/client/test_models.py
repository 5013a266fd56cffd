"""Typed values, conversions, errors and the retry policy, without a server."""

from __future__ import annotations

import pickle
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from candlewire.domain import Interval as ServerInterval
from candlewire_client import (
    AuthError,
    CallCancelledError,
    Candle,
    CandleList,
    CandlewireClient,
    CandlewireError,
    DeadlineExceededError,
    Interval,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
    RetryPolicy,
    Series,
    ServerError,
    Source,
    UnavailableError,
)
from candlewire_client._convert import (
    candle_from_pb,
    decimal_of,
    event_from_pb,
    from_timestamp,
    to_timestamp,
)
from candlewire_client.aio import channel_options
from candlewire_client.errors import FieldViolation, from_rpc_error
from candlewire_client.models import parse_time
from candlewire_client.retry import is_retryable
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

# -- Interval -------------------------------------------------------------------


def test_interval_numbers_are_the_wire_enum() -> None:
    for interval in Interval:
        wire_name = pb.Interval.Name(interval.number)  # type: ignore[arg-type]
        expected = "INTERVAL_1MO" if interval is Interval.MO1 else f"INTERVAL_{interval.upper()}"
        assert wire_name == expected
        assert Interval.from_number(interval.number) is interval
    assert len(Interval) == len(pb.Interval.keys()) - 1  # all but UNSPECIFIED


def test_interval_labels_match_the_service() -> None:
    assert [(i.value, i.number) for i in Interval] == [(s.label, s.value) for s in ServerInterval]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1m", Interval.M1),
        ("1M", Interval.MO1),
        ("1mo", Interval.MO1),
        ("1MO", Interval.MO1),
        ("1H", Interval.H1),
        ("4h", Interval.H4),
        ("1D", Interval.D1),
        ("1w", Interval.W1),
        (" 15m ", Interval.M15),
        ("INTERVAL_1M", Interval.M1),
        ("INTERVAL_1MO", Interval.MO1),
        ("H12", Interval.H12),
        (Interval.S1, Interval.S1),
    ],
)
def test_interval_parse(text: str, expected: Interval) -> None:
    assert Interval.parse(text) is expected


def test_interval_is_a_string_with_a_length() -> None:
    label: str = "1m"
    assert label == Interval.M1
    assert f"{Interval.H4}" == "4h"
    assert Interval("1h") is Interval.H1
    assert Interval.M15.length == timedelta(minutes=15)
    assert Interval.W1.length == timedelta(days=7)
    assert Interval.MO1.length is None


@pytest.mark.parametrize("text", ["7m", "", "1y", "minute", "0s"])
def test_interval_parse_refuses_with_a_field_violation(text: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Interval.parse(text)
    assert isinstance(caught.value, ValueError)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0].field == "interval"
    assert "expected one of 1s, 1m" in caught.value.field_violations[0].description


# -- Series and times -------------------------------------------------------------


def test_series_of() -> None:
    expected = Series("BTCUSDT", Interval.M1)
    assert Series.of("BTCUSDT@1m") == expected
    assert Series.of(("BTCUSDT", "1m")) == expected
    assert Series.of(("BTCUSDT", Interval.M1)) == expected
    assert Series.of(expected) is expected
    assert str(expected) == "BTCUSDT@1m"
    assert Series.of("EURUSD@1M").interval is Interval.MO1
    for bad in ("BTCUSDT", "@1m", "BTCUSDT@7m"):
        with pytest.raises(InvalidArgumentError):
            Series.of(bad)


def test_subscribe_accepts_one_or_many_series_without_connecting() -> None:
    client = CandlewireClient("127.0.0.1:1")
    m1 = Series("BTCUSDT", Interval.M1)
    assert client.subscribe_candles("BTCUSDT@1m").series == (m1,)
    assert client.subscribe_candles(("BTCUSDT", "1m")).series == (m1,)
    assert client.subscribe_candles(m1).series == (m1,)
    assert client.subscribe_candles(["BTCUSDT@1m", ("ETHUSDT", "1h")]).series == (
        m1,
        Series("ETHUSDT", Interval.H1),
    )
    assert client.subscribe_candles(("BTCUSDT@1m", "ETHUSDT@1m")).series == (
        m1,
        Series("ETHUSDT", Interval.M1),
    )
    with pytest.raises(InvalidArgumentError, match="at least one series"):
        client.subscribe_candles([])
    with pytest.raises(InvalidArgumentError, match="history"):
        client.subscribe_candles("BTCUSDT@1m", history=1001)
    with pytest.raises(InvalidArgumentError, match="not both"):
        client.subscribe_candles("BTCUSDT@1m", history=5, start="2026-01-01")


def test_parse_time() -> None:
    utc = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_time("2026-01-02T03:04:05Z") == utc
    assert parse_time("2026-01-02T03:04:05") == utc  # no offset: UTC
    assert parse_time("2026-01-02T05:04:05+02:00") == utc
    assert parse_time(datetime(2026, 1, 2, 3, 4, 5)) == utc  # naive: UTC
    moved = parse_time(datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))))
    assert moved == utc
    assert moved.tzinfo is UTC
    assert parse_time(date(2026, 1, 2)) == datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(InvalidArgumentError) as caught:
        parse_time("yesterday", "start")
    assert caught.value.field_violations[0].field == "start"


@given(
    st.integers(min_value=-62135596800, max_value=253402300799),
    st.integers(min_value=0, max_value=999_999),
)
def test_timestamps_round_trip_exactly(seconds: int, micros: int) -> None:
    ts = Timestamp(seconds=seconds, nanos=micros * 1000)
    moment = from_timestamp(ts)
    assert moment.tzinfo is UTC
    assert to_timestamp(moment) == ts


@given(
    st.decimals(
        min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=8, allow_nan=False
    ).filter(lambda d: len(d.normalize().as_tuple().digits) <= 15)
)
def test_decimal_of_a_wire_double_is_the_exact_decimal(value: Decimal) -> None:
    assert decimal_of(float(value)) == value


def test_candle_conversion() -> None:
    message = pb.Candle(
        symbol="BTCUSDT",
        interval=pb.INTERVAL_1H,
        open_time=Timestamp(seconds=1_767_225_600),
        close_time=Timestamp(seconds=1_767_229_200),
        open=64123.45,
        high=64999.99,
        low=63000.01,
        close=64500.5,
        volume=12.34567,
        quote_volume=791234.567891,
        trade_count=42,
        closed=True,
        revision=7,
        source=pb.SOURCE_BACKFILL,
        buy_volume=5.5,
        buy_quote_volume=352678.9,
    )
    candle = candle_from_pb(message, decimal_of)
    assert candle == Candle(
        symbol="BTCUSDT",
        interval=Interval.H1,
        open_time=datetime(2026, 1, 1, tzinfo=UTC),
        close_time=datetime(2026, 1, 1, 1, tzinfo=UTC),
        open=Decimal("64123.45"),
        high=Decimal("64999.99"),
        low=Decimal("63000.01"),
        close=Decimal("64500.5"),
        volume=Decimal("12.34567"),
        quote_volume=Decimal("791234.567891"),
        trade_count=42,
        closed=True,
        revision=7,
        source=Source.BACKFILL,
        buy_volume=Decimal("5.5"),
        buy_quote_volume=Decimal("352678.9"),
    )
    assert candle.delta == Decimal("-1.34567")
    assert candle.vwap == Decimal("791234.567891") / Decimal("12.34567")
    as_float = candle_from_pb(message, float)
    assert as_float.open == 64123.45
    assert isinstance(as_float.volume, float)
    assert candle.series == Series("BTCUSDT", Interval.H1)


def test_unknown_stream_events_are_skipped() -> None:
    assert event_from_pb(pb.SubscribeCandlesResponse(resume_token="t"), float) is None


# -- CandleList -------------------------------------------------------------------


def _candles(n: int) -> CandleList[Decimal]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return CandleList(
        tuple(
            Candle(
                "BTCUSDT",
                Interval.M1,
                start + timedelta(minutes=i),
                start + timedelta(minutes=i + 1),
                Decimal("100.5") + i,
                Decimal("101.25") + i,
                Decimal("99.75") + i,
                Decimal("100.125") + i,
                Decimal("0.001"),
                Decimal("0.1005"),
                3,
                i < n - 1,
                i,
                Source.LIVE,
                Decimal("0.0004"),
                Decimal("0.0402"),
            )
            for i in range(n)
        )
    )


def test_candle_list_is_a_sequence_of_rows() -> None:
    candles = _candles(3)
    assert len(candles) == 3
    assert candles[0].open == Decimal("100.5")
    assert isinstance(candles[1:], CandleList)
    assert [c.revision for c in candles[1:]] == [1, 2]
    rows = candles.to_rows()
    assert list(rows[0]) == list(CandleList.COLUMNS)
    assert rows[2]["close"] == Decimal("102.125")
    assert rows[2]["closed"] is False
    assert rows[0]["interval"] == "1m"
    assert rows[0]["open_time"] == datetime(2026, 1, 1, tzinfo=UTC)


def test_to_pandas() -> None:
    frame = _candles(3).to_pandas()
    assert list(frame.columns) == [c for c in CandleList.COLUMNS if c != "open_time"]
    assert str(frame.index.tz) == "UTC"
    assert frame.index[1] == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert frame["close"].iloc[2] == Decimal("102.125")
    assert frame["trade_count"].tolist() == [3, 3, 3]
    assert _candles(2).to_pandas(index=None).index.tolist() == [0, 1]
    assert _candles(0).to_pandas().empty


def test_to_pandas_without_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ModuleNotFoundError, match="pip install pandas"):
        _candles(1).to_pandas()


# -- errors -------------------------------------------------------------------------


class _FakeRpcError(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def _details(*messages: Any) -> tuple[tuple[str, bytes], ...]:
    status = status_pb2.Status(code=3, message="x")
    for message in messages:
        packed = any_pb2.Any()
        packed.Pack(message)
        status.details.append(packed)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def test_error_carries_field_violations() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="series[1].interval", description="d")
        ]
    )
    error = from_rpc_error(
        _FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "series[1].interval: d", _details(bad))
    )
    assert type(error) is InvalidArgumentError
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details == "series[1].interval: d"
    assert error.field_violations == (FieldViolation("series[1].interval", "d"),)
    assert error.retry_delay is None
    assert str(error) == "INVALID_ARGUMENT: series[1].interval: d"


def test_error_carries_retry_delay() -> None:
    info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=5, nanos=5 * 10**8)
    )
    error = from_rpc_error(
        _FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many streams", _details(info))
    )
    assert type(error) is ResourceExhaustedError
    assert error.retry_delay == 5.5


def test_malformed_details_do_not_hide_the_error() -> None:
    trailing = (("grpc-status-details-bin", b"\xff\xff not a status"), ("other", "x"))
    error = from_rpc_error(_FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone", trailing))
    assert type(error) is NotFoundError
    assert error.field_violations == ()


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.FAILED_PRECONDITION, InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.OUT_OF_RANGE, OutOfRangeError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.UNAUTHENTICATED, AuthError),
        (grpc.StatusCode.PERMISSION_DENIED, AuthError),
        (grpc.StatusCode.CANCELLED, CallCancelledError),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
        (grpc.StatusCode.UNIMPLEMENTED, ServerError),
        (grpc.StatusCode.DATA_LOSS, ServerError),
    ],
)
def test_error_class_per_code(code: grpc.StatusCode, cls: type[CandlewireError]) -> None:
    error = from_rpc_error(_FakeRpcError(code, "message"))
    assert type(error) is cls
    assert isinstance(error, CandlewireError)
    assert error.code is code
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert (copy.code, copy.details) == (code, "message")


# -- retry policy -------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(initial=0.5, maximum=8.0, multiplier=2.0, jitter=0.2)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (50, 8.0)]:
        delays = {policy.delay(attempt) for _ in range(200)}
        assert all(base * 0.8 <= d <= min(8.0, base * 1.2) for d in delays), (attempt, delays)
        assert len(delays) > 1  # jittered
    assert policy.delay(1, server_delay=5.0) == 5.0
    assert RetryPolicy(initial=1, maximum=1, jitter=0).delay(7) == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0},
        {"initial": 2, "maximum": 1},
        {"multiplier": 0.5},
        {"jitter": 1.0},
        {"max_attempts": -1},
        {"unary_attempts": 0},
    ],
)
def test_retry_policy_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("code", "details", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, "Connection refused", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "subscriber fell behind", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5 vs. 4)", False),
        (grpc.StatusCode.CANCELLED, "cancelled by the server", True),
        (grpc.StatusCode.ABORTED, "aborted", True),
        (grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2", True),
        (grpc.StatusCode.INTERNAL, "bug", False),
        (grpc.StatusCode.INVALID_ARGUMENT, "resume_token: bad", False),
        (grpc.StatusCode.NOT_FOUND, "unknown symbol", False),
        (grpc.StatusCode.OUT_OF_RANGE, "expired", False),
        (grpc.StatusCode.UNAUTHENTICATED, "no key", False),
        (grpc.StatusCode.PERMISSION_DENIED, "no", False),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "slow", False),
    ],
)
def test_is_retryable(code: grpc.StatusCode, details: str, retryable: bool) -> None:
    assert is_retryable(from_rpc_error(_FakeRpcError(code, details))) is retryable


def test_keepalive_respects_the_servers_ping_limit() -> None:
    options = dict(channel_options(keepalive=20.0, retry=RetryPolicy()))
    assert options["grpc.keepalive_time_ms"] == 20_000
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.max_reconnect_backoff_ms"] == 30_000
    with pytest.raises(InvalidArgumentError, match="keepalive"):
        CandlewireClient("localhost:1", keepalive=5.0)


def test_metadata_keys_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="lower case"):
        CandlewireClient("localhost:1", metadata=[("X-Tenant", "a")])
