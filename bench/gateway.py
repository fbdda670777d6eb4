"""rbee as a gateway in front of an OpenAI-compatible server, against that server direct.

    python bench/gateway.py [--requests 200] [--concurrency 1,16,64] [--modes embedded,pg]

A zero-delay fake upstream (testkit/fakeupstream.py: 16 words, as JSON or 16 SSE chunks,
with usage) runs as a process. A real queen and hive serve two models: `up`, the upstream
through the openai engine, and `echo16`, the echo engine answering the same 16 words (what
the queen, hive and worker cost with no upstream at all). The load generator (this process)
and the upstream run on CPU 0; the queen, the hive and its workers on CPU 1 (taskset), so
the gateway's figures are one core's. Modes: the embedded default, and PostgreSQL + Redis
when RBEE_DATABASE_URL and RBEE_REDIS_URL are set.

Prints, per path, streaming or not, and clients: p50, p99, requests/s, errors, the p50 added
to the upstream direct, and the CPU each gateway process spent per request (from
/proc/PID/stat: queen, hive, the model's worker).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import load, pct  # noqa: E402
from testkit.fakeupstream import WORDS  # noqa: E402
from testkit.live import Deployment, Hive, Queen, free_port, stop_process  # noqa: E402

LOAD_CPU = 0
GATEWAY_CPU = 1
TICK = os.sysconf("SC_CLK_TCK")
MESSAGES = [{"role": "user", "content": " ".join(WORDS)}]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def descendants(pid: int) -> list[int]:
    """The process and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def pin(pids: list[int], cpu: int) -> None:
    for p in pids:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(cpu), str(p)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


def worker_pid(hive_pid: int, model: str) -> int | None:
    """The worker process of `model` under the hive (its spec is on its command line)."""
    for p in descendants(hive_pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "hives.agent.worker" in cmd and f'"name": "{model}"' in cmd:
            return p
    return None


def wait_answering(url: str, body: dict[str, object], key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for _ in range(300):
        try:
            if httpx.post(url, json=body, headers=headers, timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} does not answer")


def row(
    label: str,
    url: str,
    key: str | None,
    body: dict[str, object],
    clients: int,
    total: int,
    stream: bool,
    direct_p50: float | None,
    procs: dict[str, int],
) -> float:
    before = {name: cpu_seconds(p) for name, p in procs.items()}
    lat, rps, err = asyncio.run(load(url, key, clients, total, stream, body))
    spent = {name: cpu_seconds(p) - before[name] for name, p in procs.items()}
    p50 = statistics.median(lat) if lat else float("nan")
    # The load generator warms up with a few requests before timing: count them too.
    n = len(lat) + min(clients, 8) + err
    cpu = " ".join(f"{name} {spent[name] / n * 1e3:5.2f}" for name in procs)
    added = f"{(p50 - direct_p50) * 1e3:+8.2f}ms" if direct_p50 is not None else " " * 10
    p99 = pct(lat, 99) if lat else float("nan")
    print(
        f"{label:11} {'stream' if stream else 'json':6} {clients:4d} | {p50 * 1e3:8.2f}ms "
        f"{p99 * 1e3:8.1f}ms {rps:7.0f} {err:4d} | {added} | {cpu}",
        flush=True,
    )
    return p50


def run_mode(mode: str, upstream_url: str, levels: list[int], requests: int) -> None:
    dep = Deployment(embedded=mode == "embedded")
    try:
        queen = Queen(dep, env={"RBEE_QUEUE_MAX_PER_TENANT": "0", "RBEE_QUEUE_MAX": "1000"})
        hive = Hive(
            dep,
            queen,
            "bench-hive",
            [f"up=openai:{upstream_url}?model=fake-model&health_interval=30", "echo16=echo:"],
        )
        queen.wait_for_model("bench-hive", "echo16")
        dep.rbee("tenant", "create", "bench")
        key = dep.rbee("key", "create", "--tenant", "bench").stdout.strip()
        chat = f"{queen.url}/v1/chat/completions"
        for model in ("up", "echo16"):
            wait_answering(chat, {"model": model, "messages": MESSAGES}, key)
        gateway = descendants(queen.proc.pid) + descendants(hive.proc.pid)
        pin(gateway, GATEWAY_CPU)
        queen_pid = queen.proc.pid
        hive_pid = hive.proc.pid
        workers = {m: worker_pid(hive_pid, m) for m in ("up", "echo16")}
        title = "embedded default" if mode == "embedded" else "PostgreSQL + Redis"
        print(f"\n## {title}: queen, hive and workers on CPU {GATEWAY_CPU}\n")
        print(
            f"{'path':11} {'mode':6} {'cl':>4} | {'p50':>10} {'p99':>10} {'req/s':>7} {'err':>4} | "
            f"{'added p50':>10} | CPU ms per request"
        )
        for stream in (False, True):
            for c in levels:
                total = max(requests, c * 4)
                direct = row(
                    "upstream",
                    f"{upstream_url}/chat/completions",
                    None,
                    {"model": "fake-model", "messages": MESSAGES},
                    c,
                    total,
                    stream,
                    None,
                    {},
                )
                for model in ("up", "echo16"):
                    procs = {"queen": queen_pid, "hive": hive_pid}
                    wpid = workers[model]
                    if wpid is not None:
                        procs["worker"] = wpid
                    row(
                        f"rbee:{model}",
                        chat,
                        key,
                        {"model": model, "messages": MESSAGES},
                        c,
                        total,
                        stream,
                        direct,
                        procs,
                    )
    finally:
        dep.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--requests", type=int, default=200, help="requests per row (at least 4 per client)"
    )
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument(
        "--modes",
        default="embedded,pg",
        help="embedded, pg (needs RBEE_DATABASE_URL and RBEE_REDIS_URL)",
    )
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    if "pg" in modes and not (
        os.environ.get("RBEE_DATABASE_URL") and os.environ.get("RBEE_REDIS_URL")
    ):
        print("(PostgreSQL + Redis skipped: set RBEE_DATABASE_URL and RBEE_REDIS_URL)")
        modes.remove("pg")
    if os.cpu_count() and os.cpu_count() < 2:  # type: ignore[operator]
        raise SystemExit("needs two CPUs: one for the load, one for the gateway")
    os.sched_setaffinity(0, {LOAD_CPU})  # the load generator, and the upstream it starts
    port = free_port()
    upstream = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "testkit.fakeupstream",
            "--port",
            str(port),
            "--models",
            "fake-model",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    upstream_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_answering(
            f"{upstream_url}/chat/completions", {"model": "fake-model", "messages": MESSAGES}
        )
        print(
            "rbee as a gateway: the fake upstream direct, through the openai engine (rbee:up) "
            "and the echo engine (rbee:echo16), 16 chunks per answer; "
            f"load and upstream on CPU {LOAD_CPU}, {args.requests} requests per row"
        )
        for mode in modes:
            run_mode(mode, upstream_url, levels, args.requests)
    finally:
        stop_process(upstream)


if __name__ == "__main__":
    main()
