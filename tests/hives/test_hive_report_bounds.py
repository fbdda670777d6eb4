"""A hive with a valid token cannot fill the database: what it reports is capped per
report (workers, devices) and per hive (models waiting for approval). Real PostgreSQL,
the services the consumer calls."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hives.models import Hive, ModelApproval, Worker
from hives.services import (
    hive_connected,
    hive_heartbeat,
    hive_token_create,
    model_approve,
)

pytestmark = pytest.mark.django_db

# The caps the queen promises (hives.services): per report, and per hive.
MAX_REPORTED_WORKERS = 256
MAX_REPORTED_DEVICES = 64
MAX_PENDING_MODELS = 64


def worker(model: str, device: str = "cpu", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "capability": "text-gen",
        "engine": "echo",
        "device": device,
        "state": "ready",
        **extra,
    }


def connected(name: str, workers: list[dict[str, Any]], *, trust: bool = False) -> Hive:
    hive, _ = hive_token_create(name=name, trust_models=trust)
    hive_connected(hive_id=hive.pk, channel_name="c1", hello={"workers": workers})
    return hive


def cap_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hives.services"
        and ("dropped" in r.getMessage() or "not recorded" in r.getMessage())
    ]


def test_pending_models_are_capped_per_hive(caplog: pytest.LogCaptureFixture) -> None:
    hive = connected("rogue", [worker(f"a{i}") for i in range(100)])
    assert ModelApproval.objects.filter(hive=hive, approved=False).count() == MAX_PENDING_MODELS
    # Every heartbeat with new names: still the same rows, one log line per report.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hives.services"):
        for beat in range(3):
            hive_heartbeat(
                hive_id=hive.pk,
                channel_name="c1",
                beat={"workers": [worker(f"b{beat}-{i}") for i in range(50)]},
            )
    assert ModelApproval.objects.filter(hive=hive).count() == MAX_PENDING_MODELS
    assert len(cap_lines(caplog)) == 3
    # The rows it has are still refreshed, and approving one makes room for one more.
    hive_heartbeat(
        hive_id=hive.pk, channel_name="c1", beat={"workers": [worker("a0", state="loading")]}
    )
    assert ModelApproval.objects.get(hive=hive, model_name="a0").state == "loading"
    model_approve(hive_name="rogue", model_name="a0")
    hive_heartbeat(
        hive_id=hive.pk, channel_name="c1", beat={"workers": [worker("a0"), worker("late")]}
    )
    assert ModelApproval.objects.filter(hive=hive, model_name="late", approved=False).exists()
    assert Worker.objects.filter(hive=hive, model__name="a0").exists()
    # Another hive has room of its own.
    other = connected("other", [worker("x")])
    assert ModelApproval.objects.filter(hive=other).count() == 1


def test_workers_and_devices_per_report_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    devices = [
        {"index": i, "kind": "cuda", "gpu_type": "G"} for i in range(MAX_REPORTED_DEVICES * 3)
    ]
    with caplog.at_level(logging.WARNING, logger="hives.services"):
        hive, _ = hive_token_create(name="big", trust_models=True)
        hive_connected(
            hive_id=hive.pk,
            channel_name="c1",
            hello={
                "devices": devices,
                "workers": [worker("m1", f"cuda:{i}") for i in range(MAX_REPORTED_WORKERS * 2)],
            },
        )
    hive.refresh_from_db()
    assert len(hive.devices) == MAX_REPORTED_DEVICES
    assert Worker.objects.filter(hive=hive).count() == MAX_REPORTED_WORKERS
    assert len(cap_lines(caplog)) == 2  # once for the workers, once for the devices
    # Heartbeats naming ever new devices do not grow the table past the cap either.
    for beat in range(1, 4):
        start = MAX_REPORTED_WORKERS * 2 * beat
        hive_heartbeat(
            hive_id=hive.pk,
            channel_name="c1",
            beat={
                "devices": devices,
                "workers": [worker("m1", f"cuda:{start + i}") for i in range(100)],
            },
        )
    assert Worker.objects.filter(hive=hive).count() <= MAX_REPORTED_WORKERS
    assert Worker.objects.filter(hive=hive, state="ready").count() == 100
    hive.refresh_from_db()
    assert len(hive.devices) == MAX_REPORTED_DEVICES
    # A list that is not a list counts as none, and the hive still beats.
    assert hive_heartbeat(hive_id=hive.pk, channel_name="c1", beat={"workers": 7, "devices": "x"})
    assert not Worker.objects.filter(hive=hive, state="ready").exists()
