"""How fast the queen and the hive relay streamed tokens (issue 15).

    python bench/relay.py [--streams 64] [--tokens 256] [--rounds 3] [--cpu 1]
                          [--model-tokens 128] [--no-model]

Starts a real queen and a real hive serving the echo engine, which answers at once
with as many words as the prompt has (here `--tokens` words, so every stream is that
many chunks, with no delay between them). `--streams` clients stream at once, each
request after the last, for `--rounds` rounds of `--streams * 4` requests. The queen,
the hive and its worker are pinned to CPU `--cpu` (every thread, taskset-style), the
client to the other CPUs, so "tokens/s" is what one core of queen + hive + worker
relays. CPU seconds of each process are read from /proc before and after.

The real-model row runs the bundled SmolLM2 on llama.cpp: first the engine alone
in this process (its own tokens/s, greedy, `--model-tokens` tokens), then the same
request streamed through a queen and a hive, one client, so the ratio is what the
relay costs a real model.

The embedded default unless RBEE_DATABASE_URL / RBEE_REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.live import Deployment, Hive, Queen, bundled_gguf  # noqa: E402

ECHO = "echo-relay"
REAL = "smollm2-relay"
USAGE = re.compile(rb'"completion_tokens":\s*(\d+)')


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` (sched_setaffinity on a pid moves only its main thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, PermissionError):
            pass


def family(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def cpu_seconds(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    out = {}
    for name, ps in procs.items():
        total = 0.0
        for p in ps:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        out[name] = total
    return out


async def stream_once(port: int, key: str, body: bytes) -> tuple[int, float, float]:
    """One streamed request on a fresh connection: (completion tokens, seconds to the
    first content chunk, seconds in all)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + body
    )
    await writer.drain()
    first = 0.0
    tail = b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        if not first and b'"content":"' in data and b"data: " in data:
            first = time.perf_counter() - started
        tail = (tail + data)[-4096:]
    writer.close()
    found = USAGE.findall(tail)
    if not found:
        raise RuntimeError(f"no usage in the stream's end: {tail[-300:]!r}")
    return int(found[-1]), first, time.perf_counter() - started


def request_body(model: str, prompt: str, max_tokens: int, **extra: Any) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            **extra,
        }
    ).encode()


async def load(port: int, key: str, body: bytes, streams: int, total: int) -> tuple[int, float]:
    done = 0
    tokens = 0

    async def client() -> None:
        nonlocal done, tokens
        while done < total:
            done += 1
            n, _, _ = await stream_once(port, key, body)
            tokens += n

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(streams)))
    return tokens, time.perf_counter() - started


def echo_rows(args: argparse.Namespace, cpus: set[int], client_cpus: set[int]) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        hive = Hive(dep, queen, "relay-hive", [f"{ECHO}=echo:?slots={args.streams}"])
        dep.rbee("tenant", "create", "bench")
        key = dep.rbee("key", "create", "--tenant", "bench").stdout.strip()
        procs = {"queen": family(queen.proc.pid), "hive": family(hive.proc.pid)[:1]}
        procs["worker"] = family(hive.proc.pid)[1:]
        for ps in procs.values():
            for p in ps:
                pin(p.pid, cpus)
        os.sched_setaffinity(0, client_cpus)
        words = " ".join(f"w{i % 1000}" for i in range(args.tokens))
        body = request_body(ECHO, words, args.tokens)
        asyncio.run(load(queen.port, key, body, min(8, args.streams), 16))  # warm up
        print(
            f"relay: echo engine, {args.streams} concurrent streams of {args.tokens} tokens, "
            f"queen + hive + worker pinned to CPU {sorted(cpus)}, client on "
            f"{sorted(client_cpus)}"
        )
        print(
            f"{'round':>5} {'streams':>7} {'tokens':>8} {'seconds':>7} {'tokens/s':>9} | "
            f"{'CPU s queen':>11} {'hive':>6} {'worker':>6} | {'CPU ms/1k tok q+h':>17} "
            f"{'+worker':>8} | {'tok/s per core q+h':>18}"
        )
        rates = []
        per_k = []
        for r in range(args.rounds):
            before = cpu_seconds(procs)
            tokens, seconds = asyncio.run(
                load(queen.port, key, body, args.streams, args.streams * 4)
            )
            after = cpu_seconds(procs)
            used = {k: after[k] - before[k] for k in procs}
            rate = tokens / seconds
            qh = (used["queen"] + used["hive"]) / tokens * 1e6
            allp = qh + used["worker"] / tokens * 1e6
            rates.append(rate)
            per_k.append(qh)
            print(
                f"{r + 1:5d} {args.streams:7d} {tokens:8d} {seconds:7.2f} {rate:9.0f} | "
                f"{used['queen']:11.2f} {used['hive']:6.2f} {used['worker']:6.2f} | "
                f"{qh:14.1f} ms {allp:8.1f} | {1e6 / qh:18.0f}",
                flush=True,
            )
        print(
            f"median: {statistics.median(rates):.0f} tokens/s; queen + hive "
            f"{statistics.median(per_k):.1f} CPU ms per 1k tokens, so one core of theirs "
            f"relays {1e6 / statistics.median(per_k):.0f} tokens/s\n"
        )
    finally:
        dep.close()


def engine_alone(engine: Any, request: dict[str, Any]) -> tuple[int, float]:
    """The engine's own run of `request`, in this process: (tokens, seconds)."""
    from hives.protocol import EventKind

    started = time.perf_counter()
    n = 0
    for event in engine.chat(request, lambda: False):
        if event.get("kind") == EventKind.DONE:
            n = int(event["usage"]["completion_tokens"])
    return n, time.perf_counter() - started


def model_row(args: argparse.Namespace, cpus: set[int]) -> None:
    from hives.agent.engines import get_engine
    from hives.spec import ModelSpec

    prompt = "Write a long story about a bee who learns to fly across the sea."
    dep = Deployment()
    try:
        queen = Queen(dep)
        hive = Hive(dep, queen, "relay-model-hive", [f"{REAL}=llama.cpp:{bundled_gguf()}"])
        dep.rbee("tenant", "create", "bench")
        key = dep.rbee("key", "create", "--tenant", "bench").stdout.strip()
        for p in family(queen.proc.pid) + family(hive.proc.pid):
            pin(p.pid, cpus)
        # The engine alone runs here, on the worker's CPU, between the runs through rbee
        # (alternating, so a change in the machine's load falls on both alike).
        os.sched_setaffinity(0, cpus)
        engine = get_engine("llama.cpp")
        engine.load(ModelSpec(name=REAL, engine="llama.cpp", source=bundled_gguf()))
        request = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": args.model_tokens,
            "temperature": 0,
            "seed": 1,
        }
        body = request_body(REAL, prompt, args.model_tokens, temperature=0, seed=1)
        asyncio.run(stream_once(queen.port, key, body))  # warm up
        alone: list[float] = []
        through: list[float] = []
        firsts: list[float] = []
        n_alone = n_rbee = 0
        for _ in range(args.model_rounds):
            n_alone, took = engine_alone(engine, request)
            alone.append(n_alone / took)
            n_rbee, first, took = asyncio.run(stream_once(queen.port, key, body))
            through.append(n_rbee / took)
            firsts.append(first)
        engine.unload()
        a, t = statistics.median(alone), statistics.median(through)
        print(
            f"real model: SmolLM2-135M Q4_1 on llama.cpp (1 thread), {args.model_tokens} "
            f"tokens, greedy, one stream, {args.model_rounds} alternating runs, medians"
        )
        print(f"  engine in-process: {n_alone} tokens, {a:.1f} tokens/s")
        print(
            f"  through rbee:      {n_rbee} tokens, {t:.1f} tokens/s (first token "
            f"{statistics.median(firsts) * 1e3:.0f} ms) = {t / a * 100:.1f}% of the engine"
        )
        print(f"  runs, engine: {' '.join(f'{x:.1f}' for x in alone)}")
        print(f"  runs, rbee:   {' '.join(f'{x:.1f}' for x in through)}")
    finally:
        dep.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=1, help="the CPU of queen, hive and worker")
    ap.add_argument("--model-tokens", type=int, default=128)
    ap.add_argument("--model-rounds", type=int, default=5)
    ap.add_argument("--no-model", action="store_true", help="skip the real-model row")
    ap.add_argument("--no-echo", action="store_true", help="skip the echo rows")
    args = ap.parse_args()
    os.environ.setdefault("RBEE_LLAMA_THREADS", "1")  # as the deployment's worker has
    cpus = {args.cpu}
    client_cpus = {c for c in range(os.cpu_count() or 1)} - cpus or cpus
    mode = "PostgreSQL + Redis" if os.environ.get("RBEE_DATABASE_URL") else "embedded default"
    print(f"bench/relay.py ({mode})\n")
    if not args.no_echo:
        echo_rows(args, cpus, client_cpus)
    if not args.no_model:
        model_row(args, cpus)


if __name__ == "__main__":
    main()
