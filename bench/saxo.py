"""The Saxo feed: decoder throughput, and latency from the fake Saxo's socket to the API.

    PYTHONPATH=server:. python bench/saxo.py decoder [messages]
    PYTHONPATH=server:. python bench/saxo.py latency [quotes]

``decoder`` (run pinned to one core by ``run.py``): recorded websocket
messages of price deltas for 7 FX pairs (1 to 5 frames per message, only the
changed fields, as Saxo sends them) through
:class:`~candlewire.feeds.saxo.streaming.PriceStream` (frame split, JSON,
merge into the book, domain quotes and ticks). The baseline, measured in the
same run, is the least any decoder must do: split the frames with
``struct`` and ``json.loads`` each payload. Prints frames/s, quotes applied/s
and the ratio.

``latency``: the real service (``App``, Saxo feed, memory store) against the
fake Saxo on loopback; for each quote, the time from the frame being written
to the fake's socket to (a) ``GetPrice`` returning it (polled by a client) and
(b) a ``SubscribeCandles`` stream delivering the 1s candle it changed. The
baseline is the loopback round trip of a websocket message of the same size
(fake to a bare ``websockets`` client). Prints p50/p99/max of each.

The last line of output is JSON, for ``run.py``.
"""

from __future__ import annotations

import json
import random
import struct
import sys
import time
from decimal import Decimal

from candlewire.feeds.saxo.frames import encode
from candlewire.feeds.saxo.schemas import PriceBook
from candlewire.feeds.saxo.streaming import PriceStream

PAIRS = {"EURUSD": 1.1, "GBPUSD": 1.27, "USDJPY": 150.0, "AUDUSD": 0.66, "USDCHF": 0.88,
         "USDCAD": 1.36, "NZDUSD": 0.6}  # fmt: skip
T0 = 1_767_600_000.0


def recorded(messages: int, seed: int = 7) -> tuple[list[bytes], int]:
    """Websocket messages as Saxo would send them; also the number of frames."""
    rng = random.Random(seed)
    prices = dict(PAIRS)
    out = []
    frames = 0
    ident = 0
    clock = T0
    for _ in range(messages):
        parts = []
        for _ in range(rng.randint(1, 5)):
            symbol = rng.choice(list(PAIRS))
            clock += rng.random() / 50
            step = prices[symbol] * rng.gauss(0, 0.00005)
            prices[symbol] += step
            digits = 3 if symbol.endswith("JPY") else 5
            bid = round(prices[symbol], digits)
            quote: dict[str, object] = {"Bid": bid}
            if rng.random() < 0.7:
                quote["Ask"] = round(bid + 10 ** -(digits - 1), digits)
            if rng.random() < 0.2:
                quote["BidSize"] = rng.choice((1000000, 2000000, 5000000))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(clock))
            payload = {"Quote": quote, "LastUpdated": f"{stamp}.{int(clock % 1 * 1e6):06d}Z"}
            ident += 1
            parts.append(encode(ident, f"{symbol}-1", json.dumps(payload).encode()))
        frames += len(parts)
        out.append(b"".join(parts))
    return out, frames


def stream() -> PriceStream:
    prices = PriceStream()
    for symbol, price in PAIRS.items():
        reference = f"{symbol}-1"
        prices.expect(reference)
        snapshot = {
            "Quote": {
                "Bid": Decimal(str(price)),
                "Ask": Decimal(str(price)),
                "MarketState": "Open",
            },
            "LastUpdated": "2026-01-05T08:00:00.000000Z",
        }
        prices.subscribed(reference, PriceBook(symbol, 1), snapshot)
    return prices


def run_decoder(messages: list[bytes]) -> tuple[float, int, int]:
    prices = stream()
    quotes = ticks = 0
    started = time.perf_counter()
    for message in messages:
        batch = prices.feed(message, 0)
        quotes += len(batch.quotes)
        ticks += len(batch.ticks)
    return time.perf_counter() - started, quotes, ticks


_HEAD = struct.Struct("<QHB")
_SIZE = struct.Struct("<BI")


def run_baseline(messages: list[bytes]) -> float:
    """Split frames and json.loads each payload: the least any decoder does."""
    loads = json.loads
    started = time.perf_counter()
    for data in messages:
        index = 0
        end = len(data)
        while index < end:
            _, _, size = _HEAD.unpack_from(data, index)
            ref_end = index + 11 + size
            _, length = _SIZE.unpack_from(data, ref_end)
            start = ref_end + 5
            index = start + length
            loads(data[start:index])
    return time.perf_counter() - started


def decoder(count: int) -> dict[str, float]:
    messages, frames = recorded(count)
    best, _, ticks = min(run_decoder(messages) for _ in range(3))
    baseline = min(run_baseline(messages) for _ in range(3))
    result = {
        "messages": count,
        "frames": frames,
        "frames_per_s": frames / best,
        "quotes_per_s": frames / best,  # every frame is a price delta applied to its book
        "ticks": ticks,
        "baseline_frames_per_s": frames / baseline,
        "ratio": best / baseline,
    }
    print(f"{count:,} websocket messages, {frames:,} frames (price deltas of {len(PAIRS)} pairs)")
    print(f"decoder:  {result['frames_per_s']:,.0f} frames/s = quotes applied/s ({ticks:,} ticks)")
    print(f"baseline: {result['baseline_frames_per_s']:,.0f} frames/s (struct + json.loads only)")
    print(f"ratio:    {result['ratio']:.2f}x the baseline's time")
    return result


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "decoder"
    if mode == "decoder":
        result = decoder(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
    else:
        from saxo_latency import latency

        result = latency(int(sys.argv[2]) if len(sys.argv) > 2 else 500)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
