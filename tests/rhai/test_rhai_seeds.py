"""The six scheduler scripts from the product documents run verbatim."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest

import rhai

FIXTURE = pathlib.Path(__file__).resolve().parents[2] / "testkit" / "seed_scheduler_scripts.rhai"


def split_scripts() -> list[tuple[str, str]]:
    text = FIXTURE.read_text()
    parts = re.split(r"^(// ---- from .*)$", text, flags=re.M)
    out = []
    for i in range(1, len(parts), 2):
        out.append((parts[i], parts[i] + parts[i + 1]))
    return out


SCRIPTS = split_scripts()


def least_loaded(workers: list[dict[str, Any]]) -> Any:
    return min(workers, key=lambda w: w["load"]) if workers else None


def make_engine() -> rhai.Engine:
    e = rhai.Engine(max_operations=100_000, max_call_levels=64, max_expr_depth=64)
    e.register_fn("first", lambda ws: ws[0] if ws else None)
    e.register_fn("least_loaded", least_loaded)
    e.register_fn("admit", lambda: {"admitted": True})
    e.register_fn("reject", lambda reason: {"admitted": False, "reason": reason})
    return e


def W(name: str, hive: str, gpu: str, load: float, cap: str = "text-gen") -> dict[str, Any]:
    return {"id": name, "hive": hive, "gpu_type": gpu, "load": load, "capability": cap}


WORKERS = [
    W("gaming-0", "gaming-pc", "RTX4090", 0.6, "image-gen"),
    W("mac-0", "mac-studio", "M2Ultra", 0.5),
    W("old-0", "old-server", "RTX3090", 0.7, "audio-gen"),
    W("old-1", "old-server", "RTX3090", 0.25, "audio-gen"),
    W("h100-0", "cloud", "H100", 0.4),
    W("h100-1", "cloud", "H100", 0.3),
    W("a100-0", "cloud", "A100", 0.2),
    W("a100-1", "cloud", "A100", 0.9),
]


def route(idx: int, task: dict[str, Any], workers: list[dict[str, Any]] = WORKERS) -> Any:
    e = make_engine()
    ast = e.compile(SCRIPTS[idx][1])
    r = e.call_fn(ast, "route_task", task, workers)
    return r["id"] if isinstance(r, dict) else r


def test_six_scripts_found_and_compile() -> None:
    assert len(SCRIPTS) == 6
    e = make_engine()
    for header, src in SCRIPTS:
        ast = e.compile(src)
        assert ast.has_fn("route_task", 2) or ast.has_fn("should_admit", 2), header


def test_script1_routes() -> None:
    assert route(0, {"type": "image-gen", "model": "sdxl"}) == "gaming-0"
    assert route(0, {"type": "text-gen", "model": "llama-3-70b"}) == "mac-0"
    assert route(0, {"type": "text-gen", "model": "llama-3-8b"}) == "old-1"
    assert route(0, {"type": "audio-transcription", "model": "whisper"}) == "old-0"
    assert route(0, {"type": "embedding", "model": "bge"}) == "a100-0"
    # no RTX4090 on the gaming pc: first() of an empty array is unit
    assert route(0, {"type": "image-gen", "model": "x"}, WORKERS[1:]) is None


def test_script1_should_admit() -> None:
    e = make_engine()
    ast = e.compile(SCRIPTS[0][1])
    assert ast.fn_params("should_admit") == ["task", "queue_depth"]
    assert e.call_fn(ast, "should_admit", {"type": "x"}, 3) == {"admitted": True}
    assert e.call_fn(ast, "should_admit", {"type": "x"}, 10) == {"admitted": True}
    assert e.call_fn(ast, "should_admit", {"type": "x"}, 11) == {
        "admitted": False,
        "reason": "Queue full, try again later",
    }


def test_script2_batch() -> None:
    assert route(1, {"priority": "batch"}) == "old-0"
    assert route(1, {"priority": "interactive"}) == "gaming-0"


def test_script3_routes() -> None:
    assert route(2, {"type": "image-gen", "model": "sdxl"}) == "gaming-0"
    assert route(2, {"type": "text-gen", "model": "llama-3-70b"}) == "mac-0"
    assert route(2, {"type": "text-gen", "model": "llama-3-8b"}) == "a100-0"


def test_script4_customer_quota_and_tier() -> None:
    e = make_engine()
    ast = e.compile(SCRIPTS[3][1])
    assert ast.fn_params("should_admit")[1] == "customer"
    ok = {"tokens_used_today": 10, "daily_limit": 100, "tier": "pro"}
    over = {"tokens_used_today": 101, "daily_limit": 100, "tier": "enterprise"}
    ent = {"tokens_used_today": 0, "daily_limit": 100, "tier": "enterprise"}
    big = {"model": "llama-3-405b"}
    small = {"model": "llama-3-8b"}
    assert e.call_fn(ast, "should_admit", small, ok) == {"admitted": True}
    assert e.call_fn(ast, "should_admit", small, over) == {
        "admitted": False,
        "reason": "Quota exceeded",
    }
    assert e.call_fn(ast, "should_admit", big, ok) == {
        "admitted": False,
        "reason": "Upgrade to enterprise",
    }
    assert e.call_fn(ast, "should_admit", big, ent) == {"admitted": True}


def test_script5_model_routes_and_unit_fallthrough() -> None:
    assert route(4, {"model": "llama-3-8b"}) == "gaming-0"
    assert route(4, {"model": "llama-3-405b"}) == "h100-0"
    # no final return: the function's value is unit
    assert route(4, {"model": "mistral"}) is None


def test_script6_tiers_and_match() -> None:
    assert route(5, {"customer_tier": "enterprise", "type": "text-gen"}) == "h100-1"
    assert route(5, {"customer_tier": "free", "type": "text-gen"}) == "a100-0"
    assert route(5, {"customer_tier": "pro", "type": "image-gen"}) == "gaming-0"
    assert route(5, {"customer_tier": "pro", "type": "audio-gen"}) == "old-1"
    assert route(5, {"customer_tier": "pro", "type": "text-gen"}) == "a100-0"


@pytest.mark.parametrize("idx", range(6))
def test_scripts_do_not_mutate_host_data(idx: int) -> None:
    import copy

    before = copy.deepcopy(WORKERS)
    if idx == 3:  # the quota script only defines should_admit
        return
    route(idx, {"type": "image-gen", "model": "x", "priority": "batch", "customer_tier": "x"})
    assert WORKERS == before
