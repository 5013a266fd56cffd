"""GetPrice with authentication, rate limiting and metrics on, against the same
server with them off and the no-op ceiling, in the same run.

    python bench/secure.py [--quick]

Three servers run pinned to one core: the ceiling (``bench/ceiling.py``,
returning the bytes the real server sent), the real service with no call
policy (``--bare``: no authentication, no limits, no RPC metrics) and the
real service with all of it: an API keys file (every call sends
``x-api-key``, hashed and looked up), a per-key and a per-address rate limit
checked on every call (set high enough never to refuse), RPC metrics and the
store's latency histograms. h2load runs pinned to the other core.

A round loads the three one after the other (the order rotating from round to
round) and gives each real server's share of the ceiling in that round: on
a shared machine whose speed drifts by more than the policy costs, the three
loads of a round see nearly the same machine. Reported: the median share over
``--rounds`` rounds (and the spread), and the best requests/s of each server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, cores, pinned, spawn, wait_serving
from unary import CASES, H2Result, call_raw, h2load

from candlewire.api.keys import add_key
from candlewire.api.server import SERVICE_NAME

LABELS = ("ceiling", "off", "on")


def run(*, quick: bool, rounds: int) -> tuple[dict[str, H2Result], dict[str, list[float]]]:
    """The best load of each server, and each real server's share of the
    ceiling in every round."""
    available = cores()
    server_core = available[0] if len(available) > 1 else None
    load_core = available[1] if len(available) > 1 else None
    seconds = 3.0 if quick else 5.0
    rounds = 1 if quick else rounds
    name, method, request, check = CASES[0]  # GetPrice
    with tempfile.TemporaryDirectory(prefix="cw-secure-") as tmp:
        work = Path(tmp)
        key = add_key(work / "keys.json", "bench")
        serve = [PYTHON, "bench/serve.py", "--feed", "sim", "--symbols", "20"]
        bare_argv = [*serve, "--bare"]
        secure_argv = [*serve, "--keys-file", str(work / "keys.json"), "--ip-rate", "1e9"]
        with (
            spawn(pinned(server_core, bare_argv)) as bare,
            spawn(pinned(server_core, secure_argv)) as secure,
        ):
            ports = {"off": int(bare.expect("PORT ")), "on": int(secure.expect("PORT "))}
            for port in ports.values():
                wait_serving(port, service=SERVICE_NAME, timeout=120)
            raw = call_raw(ports["off"], method, request)
            if check(raw):
                raise RuntimeError(f"{name}: {check(raw)}")
            (work / f"{method}.bin").write_bytes(raw)
            message = request.SerializeToString()
            body = work / f"{method}.req"
            body.write_bytes(struct.pack(">BI", 0, len(message)) + message)
            ceiling_argv = [PYTHON, "bench/ceiling.py", "--responses", str(work)]
            with spawn(pinned(server_core, ceiling_argv)) as ceiling:
                ports["ceiling"] = int(ceiling.expect("PORT "))
                best: dict[str, H2Result] = {}
                shares: dict[str, list[float]] = {"off": [], "on": []}
                for r in range(rounds):
                    got: dict[str, float] = {}
                    for label in LABELS[r % 3 :] + LABELS[: r % 3]:
                        result = h2load(
                            ports[label],
                            method,
                            body,
                            seconds=seconds,
                            core=load_core,
                            conns=4,
                            streams=8,
                            headers=(f"x-api-key: {key}",),
                        )
                        if result.failed:
                            raise RuntimeError(f"{name} on {label}: {result}")
                        got[label] = result.rps
                        if label not in best or result.rps > best[label].rps:
                            best[label] = result
                    for label in shares:
                        shares[label].append(got[label] / got["ceiling"])
    return best, shares


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    best, shares = run(quick=args.quick, rounds=args.rounds)
    median = {label: statistics.median(found) for label, found in shares.items()}
    costs = [(off - on) * 100 for off, on in zip(shares["off"], shares["on"], strict=True)]
    if args.json:
        print(json.dumps({"best": {k: vars(v) for k, v in best.items()}, "shares": shares}))
        return
    print(f"{'GetPrice':36} {'best req/s':>10}  {'share of the ceiling, by round':>30}")
    for label, text in (
        ("ceiling", "no-op grpc.aio"),
        ("off", "policy off"),
        ("on", "auth + limits + metrics"),
    ):
        line = f"{text:36} {best[label].rps:10,.0f}"
        if label in shares:
            found = shares[label]
            line += f"  median {median[label]:6.1%} (from {min(found):.1%} to {max(found):.1%})"
        print(line)
    print(
        f"cost of the policy: median {statistics.median(costs):.1f} points of the ceiling "
        f"(from {min(costs):.1f} to {max(costs):.1f}; target: within 5); "
        f"with it on: median {median['on']:.1%} of the ceiling (target: at least 85 %)"
    )


if __name__ == "__main__":
    main()
