"""Where the queen's own time goes per request: cProfile on the queen process.

    python bench/profile_queen.py [--requests 1000] [--concurrency 1] [--stream] [--top 15]

Starts a real queen and a real hive serving the echo engine (as bench/overhead.py does),
sends the requests with httpx, has the queen write cProfile's figures of those requests only
(bench/_profiled_queen.py: SIGUSR1 starts the profiler after the warm-up, SIGUSR2 writes it
out), and prints the top functions by own time and by cumulative time. cProfile sees the
queen's main thread (the event loop: Daphne, the channel layer, the views); the database
executor's threads are not in it, their cost shows as the awaits that wait for them.
cProfile itself roughly doubles the cost of each Python call: read shares, not times.
Also prints the queen process's CPU per request (from /proc; --no-profile: without cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import MODEL, load  # noqa: E402
from testkit.live import Deployment, Hive, Queen, free_port  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProfiledQueen(Queen):
    def __init__(self, dep: Deployment, out: Path | None, server: str = "daphne") -> None:
        self.out = out
        self.server = server
        super().__init__(dep)

    def start(self) -> None:
        args = ["queen", "start", "--host", self.host, "--port", str(self.port)]
        env = {**self.env, "RBEE_BENCH_PROFILE": str(self.out or "")}
        name, http, loop = [*self.server.split(":"), "httptools", "uvloop"][:3]
        env |= {
            "RBEE_BENCH_SERVER": name,
            "RBEE_BENCH_UVICORN_HTTP": http,
            "RBEE_BENCH_UVICORN_LOOP": loop,
        }
        program = [sys.executable, str(ROOT / "bench" / "_profiled_queen.py")]
        self.proc, self.log = self.dep.spawn_program([*program, *args], self.name, env)
        self.wait_healthy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-profile", action="store_true", help="CPU per request only")
    ap.add_argument(
        "--server",
        default="daphne",
        help="daphne, or uvicorn[:HTTP[:LOOP]] (HTTP h11|httptools, LOOP asyncio|uvloop): "
        "the same application on uvicorn (bench/_profiled_queen.py), for comparison",
    )
    args = ap.parse_args()

    dep = Deployment()
    out = None if args.no_profile else Path(tempfile.gettempdir()) / f"queen-{free_port()}.prof"
    try:
        queen = ProfiledQueen(dep, out, args.server)
        Hive(dep, queen, "bench-hive", [f"{MODEL}=echo:"])
        dep.rbee("tenant", "create", "bench")
        key = dep.rbee("key", "create", "--tenant", "bench").stdout.strip()
        url = f"{queen.url}/v1/chat/completions"
        asyncio.run(load(url, key, args.concurrency, 50, args.stream))  # warm
        if out is not None:
            queen.proc.send_signal(signal.SIGUSR1)
        cpu0, t0 = cpu_seconds(queen.proc.pid), time.perf_counter()
        lat, rps, err = asyncio.run(load(url, key, args.concurrency, args.requests, args.stream))
        cpu = cpu_seconds(queen.proc.pid) - cpu0
        wall = time.perf_counter() - t0
        n = len(lat)
        lat.sort()
        print(
            f"{args.server} {'stream' if args.stream else 'json'} c={args.concurrency}: "
            f"{n} ok, {err} errors, "
            f"p50 {lat[n // 2] * 1e3:.2f} ms, {rps:.0f} req/s, queen CPU "
            f"{cpu / max(n, 1) * 1e3:.2f} ms per request ({wall:.1f} s wall)"
            + (" [under cProfile]" if out else "")
        )
        if out is not None:
            queen.proc.send_signal(signal.SIGUSR2)
            for _ in range(100):
                if out.exists():
                    break
                time.sleep(0.1)
            time.sleep(0.5)
    finally:
        dep.close()
    if out is not None and out.exists():
        stats = pstats.Stats(str(out))
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top * 3)
        out.unlink()


if __name__ == "__main__":
    main()
