"""What TLS costs a request: the same queen and hive over https:// and http://.

    python bench/tls.py [--requests N]

Starts two real queens, each with a real hive serving the built-in echo engine (answers
at once), on the embedded default (or PostgreSQL + Redis when RBEE_DATABASE_URL /
RBEE_REDIS_URL are set): one serving plain http, one serving TLS itself with a
certificate made at run time (testkit/tls.py), its hive on wss:// checking it. One client
sends N chat completions to each, alternating request by request (the machine is shared:
what else runs then hits both alike), on kept-alive connections and then with a new
connection (a full TLS handshake) per request; the table gives the median and p99.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import BODY, MODEL, pct  # noqa: E402
from testkit.live import Deployment, Hive, Queen  # noqa: E402
from testkit.tls import issue  # noqa: E402

WARMUP = 20


def start(dep: Deployment, tls: bool) -> tuple[Queen, str]:
    queen = Queen(dep, tls=issue(dep.home / "tls", "127.0.0.1") if tls else None)
    Hive(dep, queen, "bench-hive", [f"{MODEL}=echo:"])
    dep.rbee("tenant", "create", "bench")
    return queen, dep.rbee("key", "create", "--tenant", "bench").stdout.strip()


def json_request(client: httpx.Client, url: str) -> None:
    r = client.post(url, json=BODY)
    assert r.status_code == 200, r.text


def stream_request(client: httpx.Client, url: str) -> None:
    with client.stream("POST", url, json={**BODY, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line == "data: [DONE]":
                break


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400, help="requests per row and scheme")
    args = ap.parse_args()
    mode = "PostgreSQL + Redis" if os.environ.get("RBEE_DATABASE_URL") else "embedded default"
    deps = [Deployment(), Deployment()]
    try:
        queens = [start(deps[0], tls=False), start(deps[1], tls=True)]
        rows: list[tuple[str, bool, Callable[[httpx.Client, str], None]]] = [
            ("json, kept-alive", True, json_request),
            ("stream, kept-alive", True, stream_request),
            ("json, new connection", False, json_request),
        ]
        print(f"https vs http, one client, {args.requests} requests per row ({mode}); echo\n")
        print(
            f"{'requests':22} | {'http p50':>9} {'p99':>8} | {'https p50':>9} {'p99':>8} | "
            f"{'added p50':>9}"
        )
        for name, keepalive, request in rows:
            limits = httpx.Limits(max_keepalive_connections=None if keepalive else 0)
            clients = [
                httpx.Client(
                    verify=q.verify, limits=limits, headers={"Authorization": f"Bearer {key}"}
                )
                for q, key in queens
            ]
            latencies: list[list[float]] = [[], []]
            for i in range(WARMUP + args.requests):
                for side, (queen, _) in enumerate(queens):
                    t = time.perf_counter()
                    request(clients[side], f"{queen.url}/v1/chat/completions")
                    if i >= WARMUP:
                        latencies[side].append(time.perf_counter() - t)
            for c in clients:
                c.close()
            plain, tls = latencies
            p50, t50 = statistics.median(plain), statistics.median(tls)
            print(
                f"{name:22} | {p50 * 1e3:7.2f}ms {pct(plain, 99) * 1e3:6.1f}ms | "
                f"{t50 * 1e3:7.2f}ms {pct(tls, 99) * 1e3:6.1f}ms | {(t50 - p50) * 1e3:7.2f}ms",
                flush=True,
            )
    finally:
        for dep in deps:
            dep.close()


if __name__ == "__main__":
    main()
