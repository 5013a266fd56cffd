"""Run every benchmark and write a markdown table (``bench/results.md``).

    python bench/run.py            # full run, about 8-10 minutes
    python bench/run.py --quick    # shorter runs, under 2 minutes
    python bench/run.py --server /tmp/other/server --output /tmp/other.md
                                   # measure another source tree of the service

See bench/README.md for what each number means and how the ceilings are built.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


def _env_info() -> dict[str, str]:
    import google.protobuf
    import grpc
    from _common import cores
    from google.protobuf.internal import api_implementation

    return {
        "cores": f"{os.cpu_count()} (usable: {len(cores())})",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "protobuf backend": api_implementation.Type(),
        "machine": platform.machine(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _json_child(argv: list[str], core: int | None) -> dict[str, Any]:
    from _common import PYTHON, ROOT, pinned

    out = subprocess.run(
        pinned(core, [PYTHON, *argv]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _table(rows: list[list[str]]) -> str:
    header = ["Benchmark", "Result", "Ceiling / reference (same run)", "Ratio", "Target", "Met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def history_rows(history: dict[str, Any]) -> list[list[str]]:
    """The table rows of ``bench/history.py --json``."""
    imp = history["import"]
    h2 = history["h2load"]
    single = history["single_client_ms"]
    return [
        [
            f"History: import of kline files ({imp['candles']:,} 1m candles, "
            f"{history['months']} months x {history['symbols']} symbols) into PostgreSQL",
            f"{imp['rate']:,.0f} candles/s",
            "",
            "",
            ">= 200,000 candles/s",
            _mark(imp["rate"] >= 200_000),
        ],
        [
            "History: GetCandles(1000) of a year-old window (PostgreSQL); single client",
            f"{h2['history']['rps']:,.0f} req/s, mean {h2['history']['mean_ms']:.2f} ms; "
            f"p50 {single['history']['p50']:.2f} / p99 {single['history']['p99']:.2f} ms",
            f"hot store: {h2['hot']['rps']:,.0f} req/s; "
            f"p50 {single['hot']['p50']:.2f} / p99 {single['hot']['p99']:.2f} ms",
            f"{history['ratio']:.0%}",
            ">= 40% of the hot store",
            _mark(history["ratio"] >= 0.40),
        ],
        [
            "History: bytes per stored candle (table, TOAST and indexes)",
            f"{imp['bytes_per_candle']:.1f} B ({imp['stored']:,} candles, {imp['bytes']:,} B)",
            "",
            "",
            "(reported)",
            "",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--server", type=Path, help="source tree of the service (default: ./server)"
    )
    parser.add_argument("--output", type=Path, default=BENCH / "results.md")
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--only",
        default="env,unary,redis,fanout,ingest,saxo,footprint,history,trades",
        help="comma-separated sections",
    )
    args = parser.parse_args()
    if args.server is not None:
        os.environ["PYTHONPATH"] = str(args.server.resolve())
        sys.path.insert(0, str(args.server.resolve()))
    else:
        os.environ.setdefault("PYTHONPATH", str(BENCH.parent / "server"))
        sys.path.insert(0, os.environ["PYTHONPATH"])
    sections = set(args.only.split(","))
    try:
        import uvloop  # noqa: F401  (only whether it is installed)

        other_loop: str | None = "uvloop"
    except ImportError:
        other_loop = None

    from _common import cores

    available = cores()
    bench_core = available[0] if len(available) > 1 else None
    started = time.monotonic()
    rows: list[list[str]] = []
    notes: list[str] = []
    if other_loop is None:
        notes.append("uvloop is not installed: the event-loop comparison rows are missing.")
    raw: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.monotonic()
        print(f"[{time.monotonic() - started:6.1f}s] {name} ...", file=sys.stderr, flush=True)
        value = fn()
        print(f"         {name} took {time.monotonic() - t:.1f}s", file=sys.stderr, flush=True)
        return value

    env = _env_info()
    raw["env"] = env
    for key, value in env.items():
        print(f"{key}: {value}")
    if env["protobuf backend"] != "upb":
        notes.append(f"protobuf backend is {env['protobuf backend']}, not upb: numbers are off")

    if "unary" in sections and shutil.which("h2load") is None:
        message = "not measured: h2load is missing (Debian: apt-get install nghttp2-client)"
        print(message, file=sys.stderr)
        notes.append(f"Unary benchmarks {message}.")
        rows.append(["Unary (GetPrice, BatchGetPrices, GetCandles)", message, "", "", "", ""])
    elif "unary" in sections:
        import unary

        unary_rows, loop_rows = timed(
            "unary (h2load)", lambda: unary.run(quick=args.quick, other_loop=other_loop)
        )
        raw["unary"] = [
            {"method": r.method, "real": vars(r.real), "ceiling": vars(r.ceiling)}
            for r in unary_rows
        ]
        raw["unary_other_loop"] = [
            {"method": r.method, "loop": r.loop, "real": vars(r.real), "ceiling": vars(r.ceiling)}
            for r in loop_rows
        ]
        for r in unary_rows:
            target = 0.80 if r.method.startswith("GetCandles") else 0.90
            rows.append(
                [
                    f"{r.method} ({r.response_bytes:,} B response)",
                    f"{r.real.rps:,.0f} req/s, mean {r.real.mean_ms:.2f} ms",
                    f"no-op grpc.aio: {r.ceiling.rps:,.0f} req/s, mean {r.ceiling.mean_ms:.2f} ms",
                    f"{r.ratio:.0%}",
                    f">= {target:.0%} of ceiling",
                    _mark(r.ratio >= target),
                ]
            )
        by_method = {r.method: r for r in unary_rows}
        for lr in loop_rows:
            base = by_method[lr.method]
            rows.append(
                [
                    f"{lr.method} on {lr.loop} (one round; asyncio above)",
                    f"real {lr.real.rps:,.0f} req/s ({lr.real.rps / base.real.rps - 1:+.0%})",
                    f"no-op grpc.aio: {lr.ceiling.rps:,.0f} req/s "
                    f"({lr.ceiling.rps / base.ceiling.rps - 1:+.0%})",
                    f"{lr.real.rps / lr.ceiling.rps:.0%}",
                    "(event loop comparison)",
                    "",
                ]
            )

    if "redis" in sections:
        missing = [tool for tool in ("h2load", "redis-server") if shutil.which(tool) is None]
        if missing:
            message = f"not measured: {' and '.join(missing)} missing"
            notes.append(f"Unary benchmarks on Redis {message}.")
            rows.append(["Unary on a Redis API replica", message, "", "", "", ""])
        else:
            import unary_redis

            redis_rows = timed("unary on Redis (h2load)", lambda: unary_redis.run(quick=args.quick))
            raw["unary_redis"] = [
                {"method": r.method, "real": vars(r.real), "ceiling": vars(r.ceiling)}
                for r in redis_rows
            ]
            for r in redis_rows:
                target = 0.80 if r.method.startswith("GetCandles") else 0.90
                rows.append(
                    [
                        f"{r.method}, API replica with local caches ({r.response_bytes:,} B)",
                        f"{r.real.rps:,.0f} req/s, mean {r.real.mean_ms:.2f} ms",
                        f"no-op grpc.aio: {r.ceiling.rps:,.0f} req/s, "
                        f"mean {r.ceiling.mean_ms:.2f} ms",
                        f"{r.ratio:.0%}",
                        f">= {target:.0%} of ceiling",
                        _mark(r.ratio >= target),
                    ]
                )

    if "fanout" in sections:
        import fanout

        report = timed("fan-out", lambda: fanout.run(quick=args.quick, other_loop=other_loop))
        raw["fanout"] = [vars(r) for r in report.rows]
        raw["fanout_other_loop"] = report.other_loop
        for r in report.rows:
            limit = 10.0 if r.n <= 100 else 50.0
            real, ceiling = r.real, r.ceiling
            rows.append(
                [
                    f"Fan-out {r.n:,} subscribers, {r.mode} series: latency from hub entry "
                    "(end to end from trade injection)",
                    f"p50 {real['hub_p50_ms']:.1f} / p99 {real['hub_p99_ms']:.1f} / "
                    f"max {real['hub_max_ms']:.1f} ms (p50 {real['p50_ms']:.1f} / "
                    f"p99 {real['p99_ms']:.1f} / max {real['max_ms']:.1f} ms)",
                    f"p50 {ceiling['p50_ms']:.1f} / p99 {ceiling['p99_ms']:.1f} / "
                    f"max {ceiling['max_ms']:.1f} ms",
                    f"p99 {real['hub_p99_ms'] / ceiling['p99_ms']:.1f}x",
                    f"p99 < {limit:.0f} ms",
                    _mark(real["hub_p99_ms"] < limit),
                ]
            )
            rows.append(
                [
                    f"Fan-out {r.n:,} subscribers, {r.mode} series: delivered",
                    f"{real['msgs_per_s']:,.0f} msg/s (server CPU {real['server_cpu']:.0%})",
                    f"{ceiling['msgs_per_s']:,.0f} msg/s (server CPU {ceiling['server_cpu']:.0%})",
                    f"{r.ratio:.0%}",
                    ">= 80% of ceiling",
                    _mark(r.ratio >= 0.8),
                ]
            )
            if r.slow is not None:
                slow = r.slow
                rows.append(
                    [
                        f"Fan-out {r.n:,} {r.mode}: others' p99 with one slow subscriber "
                        f"({slow['trials']} interleaved pairs of {slow['window_s']:.0f} s windows)",
                        f"median change {slow['median_change']:+.1%} (range "
                        f"{slow['min_change']:+.0%} to {slow['max_change']:+.0%}); pooled p99 "
                        f"{slow['pooled_with_p99_ms']:.1f} ms with, "
                        f"{slow['pooled_without_p99_ms']:.1f} ms without",
                        "",
                        f"{slow['median_change']:+.0%}",
                        "changes p99 by < 10%",
                        _mark(abs(slow["median_change"]) < 0.10),
                    ]
                )
        other = report.other_loop
        for n in other.get("real", {}):
            real_o, ceil_o = other["real"][n], other["ceiling"][n]
            base = next(r for r in report.rows if r.n == n and r.mode == "same")
            rows.append(
                [
                    f"Fan-out {n:,} same on {other['loop']} (asyncio above): "
                    "p99 from hub entry, server CPU",
                    f"{real_o['hub_p99_ms']:.1f} ms (asyncio {base.real['hub_p99_ms']:.1f}), "
                    f"CPU {real_o['server_cpu']:.0%} (asyncio {base.real['server_cpu']:.0%})",
                    f"{ceil_o['p99_ms']:.1f} ms (asyncio {base.ceiling['p99_ms']:.1f}), "
                    f"CPU {ceil_o['server_cpu']:.0%} (asyncio {base.ceiling['server_cpu']:.0%})",
                    "",
                    "(event loop comparison)",
                    "",
                ]
            )
        rows.append(
            [
                "Idle subscriber (server RSS per open stream, 1,000 streams)",
                f"{report.idle_bytes_per_subscriber:,.0f} B",
                "",
                "",
                "(reported)",
                "",
            ]
        )

    if "saxo" in sections:
        count = "20000" if args.quick else "100000"
        decoder = timed(
            "saxo decoder", lambda: _json_child(["bench/saxo.py", "decoder", count], bench_core)
        )
        latency = timed(
            "saxo latency",
            lambda: _json_child(["bench/saxo.py", "latency", "100" if args.quick else "300"], None),
        )
        raw["saxo"] = {"decoder": decoder, "latency": latency}
        rows.append(
            [
                "Saxo decoder: frames split, JSON, merged, quotes and ticks (7 pairs), one core",
                f"{decoder['quotes_per_s']:,.0f} quotes/s",
                f"struct + json.loads only: {decoder['baseline_frames_per_s']:,.0f} frames/s",
                f"{1 / decoder['ratio']:.0%}",
                ">= 100,000 quotes/s",
                _mark(decoder["quotes_per_s"] >= 100_000),
            ]
        )
        base = latency["baseline_ws"]
        for key, label in (("get_price", "GetPrice"), ("subscriber", "a SubscribeCandles stream")):
            row = latency[key]
            rows.append(
                [
                    f"Saxo: frame on the fake Saxo's socket to {label} (p50 / p99)",
                    f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f} ms",
                    f"bare websocket message: {base['p50_ms']:.2f} / {base['p99_ms']:.2f} ms",
                    f"{latency[key + '_p50_ratio']:.0f}x",
                    "(reported)",
                    "",
                ]
            )

    if "ingest" in sections:
        result = timed(
            "ingest",
            lambda: _json_child(
                ["bench/ingest.py", "--json"] + (["--quick"] if args.quick else []), bench_core
            ),
        )
        raw["ingest"] = result
        rows += [
            [
                "Ingest: aggregation, all 16 intervals (batches of 1,000 trades), one core",
                f"{result['aggregator_trades_per_s']:,.0f} trades/s",
                "",
                "",
                ">= 50,000 trades/s",
                _mark(result["aggregator_trades_per_s"] >= 50_000),
            ],
            [
                "Ingest: aggregation + memory store + hub (batches of 1,000 trades)",
                f"{result['ingest_batch1000_trades_per_s']:,.0f} trades/s",
                "",
                "",
                ">= 50,000 trades/s",
                _mark(result["ingest_batch1000_trades_per_s"] >= 50_000),
            ],
            [
                "Ingest: aggregation + memory store + hub (one trade per call, live)",
                f"{result['ingest_batch1_trades_per_s']:,.0f} trades/s "
                f"({result['ingest_batch1_updates_per_s']:,.0f} candle updates/s)",
                "",
                "",
                "(reported: each trade stores 16+ candle versions)",
                "",
            ],
            [
                "Store: candle updates written to the memory store",
                f"{result['store_updates_per_s']:,.0f} updates/s",
                "",
                "",
                "(reported)",
                "",
            ],
        ]
        if "redis" in result:
            rows.append(["Store: candle updates written to Redis", result["redis"], "", "", "", ""])
        else:
            rows += [
                [
                    "Store: candle updates written to Redis (local redis-server, one trade's "
                    "updates per call)",
                    f"{result['redis_batch1_updates_per_s']:,.0f} updates/s",
                    f"memory store: {result['store_updates_per_s']:,.0f} updates/s",
                    f"{result['redis_batch1_updates_per_s'] / result['store_updates_per_s']:.0%}",
                    "(reported)",
                    "",
                ],
                [
                    "Store: candle updates written to Redis (batches of 1,000 trades)",
                    f"{result['redis_batch1000_updates_per_s']:,.0f} updates/s",
                    "",
                    "",
                    "(reported)",
                    "",
                ],
            ]

    if "footprint" in sections:
        candles = timed(
            "footprint: candles", lambda: _json_child(["bench/footprint.py", "candles"], None)
        )
        raw["footprint_candles"] = candles
        rows.append(
            [
                "Memory per stored candle (20 symbols x 16 intervals x 5,000)",
                f"{candles['bytes_per_candle']:,.0f} B "
                f"(frame {candles['frame_bytes_mean']:.0f} B on the wire); full GC pause "
                f"{candles['full_gc_ms']:.0f} ms with the store filled",
                "",
                "",
                "<= 150 B",
                _mark(candles["bytes_per_candle"] <= 150),
            ]
        )
        attempts = 1 if args.quick else 2
        ready = timed(
            "footprint: readiness",
            lambda: min(
                (_json_child(["bench/footprint.py", "ready"], None) for _ in range(attempts)),
                key=lambda r: r["ready_s"],
            ),
        )
        raw["footprint_ready"] = ready
        rows.append(
            [
                "`candlewire serve` start to readiness SERVING (embedded defaults)",
                f"{ready['ready_s']:.2f} s (liveness {ready['liveness_s']:.2f} s)",
                "",
                "",
                "<= 3 s",
                _mark(ready["ready_s"] <= 3.0),
            ]
        )

    if "history" in sections:
        import glob

        if not glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("h2load") is None:
            message = "not measured: PostgreSQL's server binaries or h2load are missing"
            notes.append(f"History tier benchmarks {message}.")
            rows.append(["History tier", message, "", "", "", ""])
        else:
            history = timed(
                "history tier (PostgreSQL)",
                lambda: _json_child(
                    ["bench/history.py", "--json", *(["--quick"] if args.quick else [])], None
                ),
            )
            raw["history"] = history
            rows.extend(history_rows(history))
    if "trades" in sections:
        trades = timed(
            "trades",
            lambda: _json_child(
                ["bench/trades.py", "--json"] + (["--quick"] if args.quick else []), None
            ),
        )
        raw["trades"] = trades
        for kind, figures in trades["store"].items():
            if isinstance(figures, str):
                rows.append([f"Trades stored and published ({kind})", figures, "", "", "", ""])
                continue
            rows.append(
                [
                    f"Trades stored and published, {kind} (validation, trade log, hub)",
                    f"{figures['record_batch1000_per_s']:,.0f} trades/s in batches of 1,000; "
                    f"{figures['record_batch1_per_s']:,.0f} one at a time",
                    f"with aggregation into 16 intervals: "
                    f"{figures['full_batch1000_per_s']:,.0f} / {figures['full_batch1_per_s']:,.0f}",
                    "",
                    "(reported)",
                    "",
                ]
            )
        for name, row in trades["stream"].items():
            rows.append(
                [
                    f"SubscribeTrades: {row['streams']} streams, "
                    f"{row['offered_per_s']:,.0f} msgs/s offered ({name})",
                    f"{row['real']['msgs_per_s']:,.0f} msgs/s delivered "
                    f"(server CPU {row['real']['server_cpu_s']:.1f} s)",
                    f"no-op grpc.aio fan-out: {row['ceiling']['msgs_per_s']:,.0f} msgs/s "
                    f"(CPU {row['ceiling']['server_cpu_s']:.1f} s)",
                    f"{row['ratio']:.0%}",
                    ">= 80% of ceiling",
                    _mark(row["ratio"] >= 0.8),
                ]
            )
        day = trades["profile"]
        for key, label in (("profile", "levels"), ("profile_footprint_1m", "and 1m footprint")):
            figures = day[key]
            rows.append(
                [
                    f"GetVolumeProfile over one day ({day['trades']:,} trades), {label}",
                    f"{figures['median_s'] * 1000:,.0f} ms median ({figures['levels']} levels, "
                    f"{figures['footprint_candles']} candles)",
                    "",
                    "",
                    "(reported)",
                    "",
                ]
            )

    elapsed = time.monotonic() - started
    lines = [
        f"# Benchmark results{(' — ' + args.label) if args.label else ''}",
        "",
        f"Mode: {'quick' if args.quick else 'full'}; took {elapsed:.0f} s; "
        f"service code from `{args.server or 'server'}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| Environment | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in env.items()],
        "",
        _table(rows),
        "",
        *[f"- {n}" for n in notes],
        "",
        "<details><summary>Raw numbers</summary>",
        "",
        "```json",
        json.dumps(raw, indent=1, default=str),
        "```",
        "</details>",
        "",
    ]
    text = "\n".join(lines)
    args.output.write_text(text)
    print(_table(rows))
    print(f"\nwritten to {args.output} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
