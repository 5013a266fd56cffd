"""GetPrice with authentication, rate limiting and metrics on, against the same
server with them off and the no-op ceiling, in the same run.

    python bench/secure.py [--quick]

Three servers run pinned to one core: the ceiling (``bench/ceiling.py``,
returning the bytes the real server sent), the real service with no call
policy (``--bare``: no authentication, no limits, no RPC metrics) and the
real service with all of it: an API keys file (every call sends
``x-api-key``, hashed and looked up), a per-key and a per-address rate limit
checked on every call (set high enough never to refuse), RPC metrics and the
store's latency histograms. h2load runs pinned to the other core. Runs
alternate between the three; the best of ``--rounds`` is kept for each.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, cores, pinned, spawn, wait_serving
from unary import CASES, H2Result, call_raw, h2load

from candlewire.api.keys import add_key
from candlewire.api.server import SERVICE_NAME


def run(*, quick: bool) -> dict[str, H2Result]:
    available = cores()
    server_core = available[0] if len(available) > 1 else None
    load_core = available[1] if len(available) > 1 else None
    seconds = 3.0 if quick else 8.0
    rounds = 1 if quick else 3
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
                for _ in range(rounds):
                    for label in ("ceiling", "off", "on"):
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
                        if label not in best or result.rps > best[label].rps:
                            best[label] = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    best = run(quick=args.quick)
    ceiling = best["ceiling"].rps
    if args.json:
        print(json.dumps({k: vars(v) for k, v in best.items()}))
        return
    for label, text in (
        ("ceiling", "no-op grpc.aio"),
        ("off", "GetPrice, policy off"),
        ("on", "GetPrice, auth + limits + metrics"),
    ):
        r = best[label]
        print(
            f"{text:36} {r.rps:9,.0f} req/s  mean {r.mean_ms:6.2f} ms  "
            f"{r.rps / ceiling:6.1%} of the ceiling"
        )
    points = (best["off"].rps - best["on"].rps) / ceiling * 100
    print(f"cost of the policy: {points:.1f} points of the ceiling (target: within 5)")


if __name__ == "__main__":
    main()
