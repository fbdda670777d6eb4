"""billing/gate.py: Meter. What a hive reports is not trusted: a usage that is negative,
not a number, infinite or absurdly large is never recorded, and the request's usage row
is written all the same."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections

from billing.gate import Admitted, Meter
from billing.models import UsageEvent
from billing.services import Usage
from tenants.models import Tenant
from tenants.selectors import Caller

INSANE: dict[str, Any] = {
    "prompt_tokens": -5,
    "completion_tokens": 10**12,
    "images": float("nan"),
    "seconds": float("inf"),
    "characters": -float("inf"),
}


def meter(tenant_id: int = 1, modality: str = "chat", request_id: str = "req-1") -> Meter:
    caller = Caller(
        tenant_id=tenant_id, tenant_name="acme", tier="free", api_key_id=None, api_key_prefix=""
    )
    return Meter(Admitted(caller=caller), request_id=request_id, model="m1", modality=modality)


def test_sane_reports_are_recorded_as_reported() -> None:
    reported = {
        "prompt_tokens": 12,
        "completion_tokens": 10**9,  # the most a request may report
        "images": 2,
        "seconds": 3.5,
        "characters": 40,
    }
    assert meter(modality="transcription").usage_of(reported) == Usage(
        prompt_tokens=12, completion_tokens=10**9, images=2, audio_seconds=3.5, characters=40
    )


@pytest.mark.parametrize(
    ("unit", "value"),
    [
        ("prompt_tokens", -1),
        ("prompt_tokens", 10**9 + 1),
        pytest.param("prompt_tokens", 10**400, id="prompt_tokens-10**400"),
        ("completion_tokens", float("nan")),
        ("completion_tokens", float("inf")),
        ("completion_tokens", 1e300),
        ("images", 10**4 + 1),
        ("images", -0.5),
        ("seconds", float("nan")),
        ("seconds", -1.0),
        ("seconds", 1e300),
        ("characters", float("-inf")),
        ("characters", 2**31),
    ],
)
def test_an_impossible_number_counts_as_zero_and_is_logged(
    unit: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="billing.gate"):
        usage = meter(modality="transcription").usage_of({"images": 1, unit: value})
    assert usage == Usage(images=0 if unit == "images" else 1)
    assert unit in caplog.text and "req-1" in caplog.text


def test_running_counts_out_of_range_are_ignored() -> None:
    m = meter()
    m.progress(3, 4)
    m.progress(-1, 10**12)
    assert m.usage_of(None) == Usage(prompt_tokens=3, completion_tokens=4)


@pytest.mark.django_db(transaction=True)  # the meter writes on an executor thread
@pytest.mark.asyncio
async def test_the_usage_row_is_written_whatever_the_hive_reported() -> None:
    loop = asyncio.get_running_loop()
    # One executor thread, whose connection is closed at the end (or the test database
    # could not be dropped).
    with ThreadPoolExecutor(max_workers=1) as pool:
        loop.set_default_executor(pool)
        try:
            tenant = await loop.run_in_executor(None, lambda: Tenant.objects.create(name="acme"))
            m = meter(tenant.pk, modality="transcription")
            await m.finish(INSANE, "ok", "h1/cuda:0")
            row = await loop.run_in_executor(
                None, lambda: UsageEvent.objects.get(request_id="req-1")
            )
        finally:
            await loop.run_in_executor(None, connections.close_all)
    assert (row.prompt_tokens, row.completion_tokens, row.images) == (0, 0, 0)
    assert (row.audio_seconds, row.characters) == (0.0, 0)
    assert (row.outcome, row.worker, row.tenant_id) == ("ok", "h1/cuda:0", tenant.pk)
