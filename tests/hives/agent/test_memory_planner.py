"""The memory planner: no two models ever fight over a device's memory."""

from __future__ import annotations

from typing import Any

import pytest

from hives.agent.memory import (
    DEFAULT_HEADROOM,
    Plan,
    Resident,
    device_label,
    fmt_bytes,
    plan_placement,
)

MiB = 2**20
GiB = 2**30


def gpu(total_gib: float, free_gib: float, *, kind: str = "cuda", index: int = 0) -> dict[str, Any]:
    total = int(total_gib * 1024)
    free = int(free_gib * 1024)
    return {
        "index": index,
        "kind": kind,
        "name": "test",
        "gpu_type": "RTX4090",
        "memory_total_mb": total,
        "memory_free_mb": free,
        "memory_used_mb": total - free,
        "utilization": 0,
    }


def res(
    model: str,
    gib: float,
    *,
    device: str = "cuda:0",
    pinned: bool = False,
    busy: bool = False,
    last_used: float = 0.0,
    state: str = "ready",
) -> Resident:
    return Resident(
        model=model,
        device=device,
        bytes=int(gib * GiB),
        pinned=pinned,
        busy=busy,
        last_used=last_used,
        state=state,
    )


def plan(need_gib: float, device: dict[str, Any], residents: list[Resident], **kw: Any) -> Plan:
    return plan_placement(
        model=kw.pop("model", "new-model"),
        need_bytes=int(need_gib * GiB),
        device=device,
        residents=residents,
        **kw,
    )


# --- fmt_bytes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (256 * MiB, "256 MiB"),
        (GiB, "1.0 GiB"),
        (int(39 * GiB), "39.0 GiB"),
        (int(6.2 * GiB), "6.2 GiB"),
        (3 * 2**40, "3.0 TiB"),
        (-2 * GiB, "-2.0 GiB"),
    ],
)
def test_fmt_bytes(n: int, text: str) -> None:
    assert fmt_bytes(n) == text


def test_device_labels() -> None:
    assert device_label(gpu(24, 24)) == "cuda:0"
    assert device_label(gpu(24, 24, kind="rocm", index=1)) == "rocm:1"
    assert device_label({"kind": "cpu", "index": 0}) == "cpu"
    assert device_label({"kind": "metal", "index": 0}) == "metal:0"


# --- fitting without eviction -----------------------------------------------------------


def test_fits_in_free_memory_without_evicting_anything() -> None:
    p = plan(10, gpu(24, 20), [res("old", 4, last_used=1)])
    assert p.fits and p.evict == []


def test_exact_boundary_fits_and_one_byte_more_does_not() -> None:
    device = gpu(24, 10)
    free = 10 * GiB - DEFAULT_HEADROOM
    at = plan_placement(model="m", need_bytes=free, device=device, residents=[])
    over = plan_placement(model="m", need_bytes=free + 1, device=device, residents=[])
    assert at.fits and at.evict == []
    assert not over.fits
    assert "headroom" in over.message


def test_headroom_is_configurable() -> None:
    device = gpu(24, 10)
    assert plan_placement(
        model="m", need_bytes=10 * GiB, device=device, residents=[], headroom_bytes=0
    ).fits
    assert not plan_placement(
        model="m", need_bytes=9 * GiB, device=device, residents=[], headroom_bytes=2 * GiB
    ).fits


def test_starting_residents_are_counted_against_free_memory() -> None:
    # 20 GiB free by telemetry, but a 12 GiB model is still loading: its memory is not
    # visible yet and must not be handed out twice.
    device = gpu(24, 20)
    starting = res("loading", 12, state="starting")
    assert plan(10, device, []).fits
    p = plan(10, device, [starting])
    assert not p.fits and p.evict == []
    assert "loading 12.0 GiB (starting)" in p.message


def test_a_starting_resident_is_never_evicted() -> None:
    p = plan(10, gpu(24, 9), [res("loading", 3, state="starting", last_used=0)])
    assert not p.fits


# --- eviction ---------------------------------------------------------------------------


def test_idle_models_are_evicted_least_recently_used_first() -> None:
    device = gpu(24, 2)  # 22 GiB held by the three idle models
    residents = [
        res("recent", 6, last_used=300),
        res("oldest", 6, last_used=100),
        res("middle", 10, last_used=200),
    ]
    # needs 2 GiB + 6 (oldest) + 10 (middle) to fit 17 GiB
    p = plan(17, device, residents)
    assert p.fits
    assert p.evict == ["oldest", "middle"]
    assert "after unloading oldest, middle" in p.message


def test_only_as_many_as_needed_are_evicted() -> None:
    residents = [res("a", 8, last_used=1), res("b", 8, last_used=2), res("c", 4, last_used=3)]
    assert plan(9, gpu(24, 4), residents).evict == ["a"]


def test_pinned_models_are_never_evicted() -> None:
    residents = [res("pinned-old", 12, pinned=True, last_used=0), res("idle", 6, last_used=5)]
    p = plan(10, gpu(24, 6), residents)
    assert p.fits and p.evict == ["idle"]
    # and when only the pinned one would make room, it does not fit
    p = plan(14, gpu(24, 6), residents)
    assert not p.fits and p.evict == []
    assert "pinned-old 12.0 GiB (pinned)" in p.message


def test_busy_models_are_never_evicted() -> None:
    residents = [res("busy-old", 12, busy=True, last_used=0), res("idle", 6, last_used=5)]
    assert plan(10, gpu(24, 6), residents).evict == ["idle"]
    p = plan(14, gpu(24, 6), residents)
    assert not p.fits
    assert "busy-old 12.0 GiB (busy)" in p.message


def test_residents_of_other_devices_are_left_alone() -> None:
    residents = [res("on-gpu1", 12, device="cuda:1"), res("on-cpu", 12, device="cpu")]
    assert not plan(10, gpu(24, 4), residents).fits


def test_cuda_and_cuda0_are_the_same_device() -> None:
    p = plan(10, gpu(24, 4), [res("idle", 12, device="cuda")])
    assert p.fits and p.evict == ["idle"]


def test_another_replica_of_the_same_model_is_not_evicted_to_make_room_for_itself() -> None:
    p = plan(10, gpu(24, 4), [res("llama", 12)], model="llama")
    assert not p.fits


def test_lru_ties_break_by_name_so_plans_are_stable() -> None:
    residents = [res("b", 8, last_used=1), res("a", 8, last_used=1)]
    assert plan(9, gpu(24, 4), residents).evict == ["a"]


# --- not fitting: the message -----------------------------------------------------------


def test_the_message_says_what_needs_what_and_what_is_using_the_memory() -> None:
    device = gpu(48, 6.2)  # 41.8 GiB used: 6.9 + 3.1 by rbee's workers, the rest not
    residents = [
        res("sdxl", 6.9, pinned=True, last_used=1),
        res("whisper-large", 3.1, busy=True, last_used=2),
    ]
    p = plan(39, device, residents, model="llama-3-70b")
    assert not p.fits and p.evict == []
    assert p.message == (
        "cannot place llama-3-70b on cuda:0: it needs 39.0 GiB and 6.2 GiB is free of "
        "48.0 GiB; in use: sdxl 6.9 GiB (pinned), whisper-large 3.1 GiB (busy), "
        "other processes 31.8 GiB"
    )


def test_other_processes_are_left_out_when_the_residents_account_for_everything() -> None:
    residents = [res("sdxl", 10, pinned=True)]
    p = plan(20, gpu(24, 14), residents)
    assert not p.fits
    assert p.message.endswith("in use: sdxl 10.0 GiB (pinned)")
    assert "other processes" not in p.message


def test_idle_models_that_are_not_enough_are_listed_without_a_tag() -> None:
    residents = [res("idle", 4, last_used=1), res("sdxl", 10, pinned=True)]
    p = plan(20, gpu(24, 10), residents)
    assert not p.fits and p.evict == []
    assert "in use: sdxl 10.0 GiB (pinned), idle 4.0 GiB" in p.message


def test_a_device_too_small_for_the_model() -> None:
    p = plan(39, gpu(24, 24), [], model="llama-3-70b")
    assert not p.fits and p.evict == []
    assert p.message == (
        "cannot place llama-3-70b on cuda:0: it needs 39.0 GiB and the device is too "
        "small: 24.0 GiB in total"
    )


def test_too_small_once_the_headroom_is_kept() -> None:
    p = plan(24, gpu(24, 24), [])
    assert not p.fits
    assert "too small" in p.message and "headroom" in p.message


def test_a_device_without_memory_figures_is_refused() -> None:
    p = plan_placement(model="m", need_bytes=GiB, device={"kind": "cuda", "index": 0}, residents=[])
    assert not p.fits and "no memory figures" in p.message


# --- CPU, AMD, Apple --------------------------------------------------------------------


def test_cpu_device_uses_available_ram() -> None:
    cpu = {
        "index": 0,
        "kind": "cpu",
        "name": "AMD EPYC",
        "gpu_type": "CPU",
        "memory_total_mb": 64 * 1024,
        "memory_free_mb": 8 * 1024,
        "memory_used_mb": 56 * 1024,
    }
    residents = [res("whisper", 6, device="cpu", last_used=1), res("tts", 2, device="cpu")]
    assert plan(7, cpu, residents).fits
    p = plan(12, cpu, residents)
    assert p.fits and p.evict == ["tts", "whisper"]  # tts is older (0 < 1)
    p = plan(20, cpu, residents)
    assert not p.fits
    assert p.message.startswith("cannot place new-model on cpu: it needs 20.0 GiB and 8.0 GiB")
    assert "other processes 48.0 GiB" in p.message


def test_rocm_device_is_planned_like_any_other() -> None:
    mi300x = gpu(191.69, 150, kind="rocm", index=1)
    p = plan(170, mi300x, [res("qwen", 30, device="rocm:1")])
    assert p.fits and p.evict == ["qwen"]
    assert "on rocm:1" in p.message


def test_unified_memory_counts_and_may_unload_the_cpus_models() -> None:
    metal = {
        "index": 0,
        "kind": "metal",
        "memory_total_mb": 192 * 1024,
        "memory_free_mb": 20 * 1024,
        "memory_used_mb": 172 * 1024,
        "unified": True,
    }
    residents = [res("cpu-embedder", 30, device="cpu"), res("other-gpu", 30, device="cuda:0")]
    p = plan(40, metal, residents)
    assert p.fits and p.evict == ["cpu-embedder"]
    loading = [res("cpu-llm", 15, device="cpu", state="starting")]
    assert not plan(10, metal, loading).fits
