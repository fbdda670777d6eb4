"""A backing store that is down is a 503 with Retry-After in each API's own format: /v1
(OpenAI's envelope, inference/errors.py) and the DRF APIs (rbee/api_errors.py), whether
the error comes as kernel.errors.Unavailable or as the driver's own exception; and a
request-path database call that does not answer in RBEE_DB_TIMEOUT is Unavailable."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis.exceptions
from django.db import OperationalError, connections, transaction

from inference.errors import from_domain
from kernel.aio import db
from kernel.errors import KernelCode, Unavailable, store_down
from rbee.api_errors import exception_handler
from tenants.models import Tenant


@pytest.mark.parametrize(
    ("exc", "store"),
    [
        (OperationalError("connection refused"), "database"),
        (redis.exceptions.ConnectionError("refused"), "Redis"),
        (redis.exceptions.TimeoutError("timed out"), "Redis"),
        (ValueError("a bug"), ""),
    ],
)
def test_which_errors_say_a_store_is_down(exc: Exception, store: str) -> None:
    assert store_down(exc) == store


def test_v1_answers_503_with_retry_after() -> None:
    resp = from_domain(Unavailable("Redis", "TimeoutError")).response()
    assert resp.status_code == 503 and int(resp["Retry-After"]) >= 1
    body = json.loads(resp.content)["error"]
    assert (body["type"], body["code"]) == ("server_error", KernelCode.UNAVAILABLE)


def test_drf_answers_503_with_retry_after_for_a_driver_error() -> None:
    resp = exception_handler(OperationalError("server closed the connection"), {})
    assert resp is not None and resp.status_code == 503
    assert int(resp["Retry-After"]) >= 1
    assert resp.data["error"]["code"] == KernelCode.UNAVAILABLE


def _hold_tenants(locked: threading.Event, release: threading.Event) -> None:
    try:
        with transaction.atomic():
            Tenant.objects.select_for_update().get(name="locked")
            locked.set()
            release.wait(30)
    finally:
        connections.close_all()


def _rename() -> None:
    try:
        Tenant.objects.filter(name="locked").update(status="active")
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
async def test_a_database_call_that_does_not_answer_is_unavailable(settings: Any) -> None:
    from asgiref.sync import sync_to_async

    settings.RBEE_DB_TIMEOUT = 0.5
    await sync_to_async(Tenant.objects.create)(name="locked")
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_tenants, args=(locked, release))
    holder.start()
    try:
        assert locked.wait(10)
        with pytest.raises(Unavailable) as exc:
            await db(_rename)  # waits for the row lock: no answer in time
        assert exc.value.headers["Retry-After"]
    finally:
        release.set()
        holder.join()
    await sync_to_async(connections.close_all)()
