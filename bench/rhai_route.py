"""Benchmark: the product's routing script (seed script 1) deciding over 100 and 1,000
worker maps, against a hand-written Python function making the same choice.

Run from the repository root:  python bench/rhai_route.py
"""

from __future__ import annotations

import pathlib
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import rhai  # noqa: E402

SCRIPT = (ROOT / "testkit" / "seed_scheduler_scripts.rhai").read_text()
SCRIPT = SCRIPT.split("// ---- from 000_f89a18c869ac2333.txt (batch)")[0]


def least_loaded(workers: list[dict[str, Any]]) -> Any:
    return min(workers, key=lambda w: w["load"]) if workers else None


def first(workers: list[dict[str, Any]]) -> Any:
    return workers[0] if workers else None


def route_python(task: dict[str, Any], workers: list[dict[str, Any]]) -> Any:
    """Hand-written equivalent of route_task in seed script 1."""
    t = task["type"]
    if t == "image-gen":
        c = [w for w in workers if w["hive"] == "gaming-pc"]
        c = [w for w in c if w["gpu_type"] == "RTX4090"]
        return first(c)
    if t == "text-gen" and "70b" in task["model"]:
        return first([w for w in workers if w["hive"] == "mac-studio"])
    if t == "text-gen" and "8b" in task["model"]:
        return least_loaded([w for w in workers if w["hive"] == "old-server"])
    if t == "audio-transcription":
        return first([w for w in workers if w["hive"] == "old-server"])
    return least_loaded(workers)


def make_workers(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    hives = [
        ("gaming-pc", "RTX4090"), ("gaming-pc", "RTX3080"), ("mac-studio", "M2Ultra"),
        ("old-server", "RTX3090"), ("cloud", "H100"), ("cloud", "A100"),
    ]  # fmt: skip
    out = []
    for i in range(n):
        hive, gpu = rnd.choice(hives)
        out.append({"id": f"w{i}", "hive": hive, "gpu_type": gpu, "load": rnd.random(),
                    "capability": "text-gen"})  # fmt: skip
    # make the image-gen answer the last RTX4090 so both filters scan everything
    return out


def median_us_pair(f: Callable[[], Any], g: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median microseconds of ``f`` and of ``g``, timed alternately so that both see the same
    background load (the container's CPU is shared)."""
    tf, tg = [], []
    clock = time.perf_counter_ns
    for _ in range(repeat):
        t0 = clock()
        f()
        t1 = clock()
        g()
        t2 = clock()
        tf.append(t1 - t0)
        tg.append(t2 - t1)
    return statistics.median(tf) / 1000.0, statistics.median(tg) / 1000.0


TASKS = {
    "image-gen (2 filters + first)": {"type": "image-gen", "model": "sdxl"},
    "text-gen 8b (filter + least_loaded)": {"type": "text-gen", "model": "llama-3-8b"},
    "other (least_loaded)": {"type": "embedding", "model": "bge"},
}


def main() -> list[tuple[str, int, float, float]]:
    engine = rhai.Engine(max_operations=1_000_000)
    engine.register_fn("least_loaded", least_loaded)
    engine.register_fn("first", first)
    engine.register_fn("admit", lambda: {"admitted": True})
    engine.register_fn("reject", lambda reason: {"admitted": False, "reason": reason})
    ast = engine.compile(SCRIPT)
    rows = []
    for n in (100, 1000):
        workers = make_workers(n)
        repeat = 2000 if n == 100 else 300
        for label, task in TASKS.items():
            want = route_python(task, workers)
            got = engine.call_fn(ast, "route_task", task, workers)
            assert got is want or got == want, (label, n, got, want)
            r_us, p_us = median_us_pair(
                lambda t=task, w=workers: engine.call_fn(ast, "route_task", t, w),
                lambda t=task, w=workers: route_python(t, w),
                repeat,
            )
            rows.append((label, n, r_us, p_us))
    print(f"{'decision':40} {'workers':>7} {'rhai us':>10} {'python us':>10} {'ratio':>6}")
    for label, n, r_us, p_us in rows:
        print(f"{label:40} {n:>7} {r_us:>10.1f} {p_us:>10.1f} {r_us / p_us:>5.1f}x")
    return rows


if __name__ == "__main__":
    main()
