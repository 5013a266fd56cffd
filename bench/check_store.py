"""Differential check: MemoryStore against a reference version of itself.

    python bench/check_store.py [REFERENCE_memory.py] [--steps N]

Runs the same random writes (small retention and log, so eviction, log
trimming and rewinding happen all the time) on both stores and compares
every read: ``get_candles``, ``read_updates`` and ``snapshot`` with random
arguments and positions, including which calls raise DataExpired. Without a
reference path, the committed version (``git show HEAD:...``) is used. Not a
test module: a tool for whoever changes the store's layout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from candlewire.domain import Candle, Interval, SeriesKey, Source
from candlewire.errors import DataExpired
from candlewire.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parent.parent
KEYS = [SeriesKey(s, i) for s in ("BTCUSDT", "ETHUSDT") for i in (Interval.M1, Interval.H1)]


def _reference(path: str | None) -> Any:
    if path is None:
        source = subprocess.run(
            ["git", "show", "HEAD:server/candlewire/store/memory.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(source)
            path = f.name
    spec = importlib.util.spec_from_file_location("reference_memory", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MemoryStore


def _candle(rng: random.Random, key: SeriesKey, slot: int) -> Candle:
    price = Decimal(rng.randrange(1, 10**6)).scaleb(-2)
    return Candle(
        key.symbol, key.interval, slot * 60 * 10**9, (slot + 1) * 60 * 10**9,
        price, price, price, price, Decimal(rng.randrange(0, 1000)), price,
        rng.randrange(0, 50), rng.random() < 0.5, rng.randrange(0, 6), Source.LIVE,
    )  # fmt: skip


async def _outcome(call: Any) -> Any:
    try:
        return ("ok", _plain(await call))
    except DataExpired:
        return ("expired",)


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [(u.seq, u.series, u.open_time, u.revision, u.closed, u.frame) for u in value]
    if hasattr(value, "slices"):
        return (value.position, [_plain(s) for s in value.slices])
    return (list(value.open_times), [bytes(f) for f in value.frames])


async def run(reference: Any, steps: int, seed: int) -> int:
    rng = random.Random(seed)
    retention, log_size = rng.choice([(5, 4), (20, 8), (50, 16)])
    new, old = (
        MemoryStore(retention=retention, log_size=log_size),
        reference(retention=retention, log_size=log_size),
    )
    checks = 0
    for _ in range(steps):
        key = rng.choice(KEYS)
        size = rng.choice([1, 1, 1, 3, 10, retention + 5])
        base = rng.randrange(0, 80)
        batch = sorted(
            (_candle(rng, key, base + rng.randrange(-3, 4)) for _ in range(size)),
            key=lambda c: c.open_time if rng.random() < 0.8 else -c.open_time,
        )
        a = [
            (u.seq, u.open_time, u.revision, u.closed, u.frame)
            for u in await new.write_candles(batch)
        ]
        b = [
            (u.seq, u.open_time, u.revision, u.closed, u.frame)
            for u in await old.write_candles(batch)
        ]
        assert a == b, ("write", a, b)
        head = max((await new.head(sorted({k.symbol for k in KEYS}))).values())
        for _ in range(3):
            k = rng.choice(KEYS)
            start = rng.choice([None, rng.randrange(-5, 90) * 60 * 10**9])
            end = rng.choice([None, rng.randrange(-5, 90) * 60 * 10**9])
            limit = rng.choice([0, 1, 5, 1000])
            x = await _outcome(new.get_candles(k, start=start, end=end, limit=limit))
            y = await _outcome(old.get_candles(k, start=start, end=end, limit=limit))
            assert x == y, ("get_candles", x, y)
            keys = rng.sample(KEYS, rng.randrange(1, 4))
            after = {k.symbol: rng.randrange(0, head + 2) for k in keys}
            x = await _outcome(new.read_updates(keys, after))
            y = await _outcome(old.read_updates(keys, after))
            assert x == y, ("read_updates", keys, after, x, y)
            args: dict[str, Any] = {
                "history": rng.choice([0, 1, 3, 100]),
                "start": rng.choice([None, None, rng.randrange(-5, 90) * 60 * 10**9]),
                "closed_only": rng.random() < 0.4,
                "at": rng.choice([None, {k.symbol: rng.randrange(0, head + 2) for k in keys}]),
            }
            x = await _outcome(new.snapshot(keys, **args))
            y = await _outcome(old.snapshot(keys, **args))
            assert x == y, ("snapshot", keys, args, x, y)
            checks += 3
    return checks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("reference", nargs="?")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=30)
    args = parser.parse_args()
    reference = _reference(args.reference)
    total = 0
    for seed in range(args.seeds):
        total += asyncio.run(run(reference, args.steps, seed))
    print(f"{args.seeds} seeds x {args.steps} steps: {total:,} reads identical")


if __name__ == "__main__":
    sys.exit(main())
