"""A hive is not trusted with the catalog, its region or its own numbers (the queen's
consumer, driven through Channels' WebsocketCommunicator, on the real database)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from hives import selectors
from hives.models import Assignment, CatalogModel, Hive, ModelApproval, Worker
from hives.protocol import CLOSE_BAD_TOKEN, CLOSE_DISABLED
from hives.services import (
    hive_revoke,
    hive_token_create,
    hive_update,
    model_alias_set,
    model_approve,
)
from tests.hives.test_hive_consumer import HELLO, connect, dispatch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def worker(model: str, **extra: Any) -> dict[str, Any]:
    return {**HELLO["workers"][0], "model": model, **extra}


async def hello(
    name: str, workers: list[dict[str, Any]], *, trust: bool = False, region: str = "eu"
) -> tuple[WebsocketCommunicator, Hive]:
    _, token = await database_sync_to_async(hive_token_create)(name=name, trust_models=trust)
    comm = await connect(token)
    await comm.send_to(
        text_data=json.dumps({**HELLO, "name": name, "region": region, "workers": workers})
    )
    welcome = json.loads(await comm.receive_from(timeout=5))
    assert welcome["op"] == "welcome"
    return comm, await Hive.objects.aget(name=name)


async def beat(comm: WebsocketCommunicator, workers: list[dict[str, Any]], **extra: Any) -> None:
    """A heartbeat, then a wait until the consumer has handled it (the next frame is
    answered only after it)."""
    await comm.send_to(
        text_data=json.dumps({"op": "heartbeat", "devices": [], "workers": workers, **extra})
    )
    await asyncio.sleep(0.3)


async def test_a_model_neither_assigned_nor_approved_is_pending_and_never_routed() -> None:
    comm, hive = await hello("rogue", [worker("brand-new")])
    assert not await CatalogModel.objects.filter(name="brand-new").aexists()
    assert not await Worker.objects.filter(hive=hive).aexists()
    pending = await ModelApproval.objects.aget(hive=hive, model_name="brand-new")
    assert not pending.approved and pending.engine == "echo"
    names = [
        p.model_name
        async for p in selectors.pending_models().filter(hive__name="rogue").aiterator()
    ]
    assert names == ["brand-new"]
    # Heartbeats claiming it ready change nothing.
    await beat(comm, [worker("brand-new", state="ready")])
    assert not await Worker.objects.filter(hive=hive).aexists()
    # The operator approves it once: the next report makes it a routable worker.
    await database_sync_to_async(model_approve)(hive_name="rogue", model_name="brand-new")
    await beat(comm, [worker("brand-new", state="ready")])
    w = await Worker.objects.select_related("model").aget(hive=hive)
    assert (w.model.name, w.state) == ("brand-new", "ready")
    await comm.disconnect()


async def test_an_assigned_model_is_accepted_without_approval() -> None:
    _, token = await database_sync_to_async(hive_token_create)(name="box")
    hive = await Hive.objects.aget(name="box")
    await Assignment.objects.acreate(hive=hive, model_name="m1", spec="m1=echo:", device="cpu")
    comm = await connect(token)
    await comm.send_to(text_data=json.dumps({**HELLO, "name": "box"}))
    await comm.receive_from(timeout=5)
    assert await Worker.objects.filter(hive=hive, model__name="m1").aexists()
    await comm.disconnect()


async def test_a_hive_report_never_changes_a_models_definition() -> None:
    await CatalogModel.objects.acreate(
        name="m1", capability="embedding", engine="sentence-transformers", source="org/real"
    )
    # Even a hive whose start models the operator trusts.
    comm, _hive = await hello(
        "h1", [worker("m1", capability="text-gen", engine="echo", source="/tmp/evil")], trust=True
    )
    await beat(comm, [worker("m1", capability="image-gen", engine="diffusers", source="x/y")])
    m = await CatalogModel.objects.aget(name="m1")
    assert (m.capability, m.engine, m.source) == ("embedding", "sentence-transformers", "org/real")
    await comm.disconnect()


async def test_a_hive_cannot_shadow_an_alias() -> None:
    await database_sync_to_async(model_alias_set)(
        alias="gpt-4o", target="real", capability="text-gen", engine="echo"
    )
    comm, hive = await hello("h1", [worker("gpt-4o")], trust=True)
    assert not await CatalogModel.objects.filter(name="gpt-4o").aexists()
    assert not await Worker.objects.filter(hive=hive).aexists()
    model = await database_sync_to_async(selectors.catalog_model_get)(name="gpt-4o")
    assert model is not None and model.name == "real"
    assert (await ModelApproval.objects.aget(hive=hive, model_name="gpt-4o")).approved is False
    await comm.disconnect()


async def test_a_trusted_hive_has_only_its_start_models_approved() -> None:
    comm, hive = await hello("local", [worker("m1")], trust=True)
    assert await Worker.objects.filter(hive=hive, model__name="m1").aexists()
    # A model that appears later (not one it was started with) waits for the operator.
    await beat(comm, [worker("m1"), worker("later")])
    assert not await CatalogModel.objects.filter(name="later").aexists()
    await comm.disconnect()


async def test_the_hello_region_does_not_change_the_hive_region() -> None:
    _, token = await database_sync_to_async(hive_token_create)(
        name="h1", trust_models=True, region="eu"
    )
    comm = await connect(token)
    await comm.send_to(text_data=json.dumps({**HELLO, "region": "us"}))
    await comm.receive_from(timeout=5)
    hive = await Hive.objects.aget(name="h1")
    assert (hive.region, hive.reported_region) == ("eu", "us")
    placements = await database_sync_to_async(selectors.placements_for_model)(
        model=await CatalogModel.objects.aget(name="m1")
    )
    assert [p.region for p in placements] == ["eu"]
    await comm.disconnect()
    # A hive with no region on record gets none from its hello either.
    comm, hive = await hello("h2", [worker("m2")], trust=True, region="eu")
    assert (hive.region, hive.reported_region) == ("", "eu")
    await comm.disconnect()


async def closed_within(comm: WebsocketCommunicator, seconds: float) -> dict[str, Any]:
    """The close the consumer sends, skipping the frames before it."""
    deadline = time.monotonic() + seconds
    while True:
        out = await comm.receive_output(timeout=max(0.01, deadline - time.monotonic()))
        if out["type"] == "websocket.close":
            return dict(out)


async def test_a_revoked_token_closes_the_open_socket_within_a_heartbeat(
    settings: Any,
) -> None:
    settings.RBEE_HIVE_HEARTBEAT = 0.5
    _, token = await database_sync_to_async(hive_token_create)(name="h1", trust_models=True)
    comm = await connect(token)
    await comm.send_to(text_data=json.dumps(HELLO))
    assert json.loads(await comm.receive_from(timeout=5))["heartbeat_interval"] == 0.5
    hive = await Hive.objects.aget(name="h1")
    assert await database_sync_to_async(lambda: selectors.live_hives().count())() == 1
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await dispatch(hive, "inflight", reply)
    await comm.receive_from(timeout=5)
    await database_sync_to_async(hive_revoke)(name="h1")
    # Nothing is routed to it from the moment it is revoked...
    assert await database_sync_to_async(lambda: selectors.live_hives().count())() == 0
    # ...and its socket (which sends no heartbeat here) is closed within one interval,
    # with the reason, its job failed.
    started = time.monotonic()
    out = await closed_within(comm, 1.5)
    assert out["code"] == CLOSE_BAD_TOKEN
    assert time.monotonic() - started < 1.0
    failed = await asyncio.wait_for(layer.receive(reply), 5)
    assert failed["events"][0]["code"] == "hive_disconnected"
    assert (await Hive.objects.aget(pk=hive.pk)).status == Hive.Status.OFFLINE
    # A reconnect with the revoked token is refused.
    again = await connect(token)
    assert json.loads(await again.receive_from(timeout=5))["op"] == "refused"
    assert (await again.receive_output(timeout=5))["code"] == CLOSE_BAD_TOKEN


async def test_a_disabled_hive_is_closed_and_refused_until_enabled(settings: Any) -> None:
    settings.RBEE_HIVE_HEARTBEAT = 0.5
    _, token = await database_sync_to_async(hive_token_create)(name="h1", trust_models=True)
    comm = await connect(token)
    await comm.send_to(text_data=json.dumps(HELLO))
    await comm.receive_from(timeout=5)
    await database_sync_to_async(hive_update)(name="h1", disabled=True)
    assert await database_sync_to_async(lambda: selectors.live_hives().count())() == 0
    # A heartbeat is the first thing that finds out.
    await comm.send_to(text_data=json.dumps({"op": "heartbeat", "workers": []}))
    assert (await closed_within(comm, 1.0))["code"] == CLOSE_DISABLED
    again = await connect(token)
    assert (await again.receive_output(timeout=5))["code"] == CLOSE_DISABLED
    await database_sync_to_async(hive_update)(name="h1", disabled=False)
    back = await connect(token)
    await back.send_to(text_data=json.dumps(HELLO))
    assert json.loads(await back.receive_from(timeout=5))["op"] == "welcome"
    await back.disconnect()


async def test_out_of_range_numbers_are_clamped_and_the_socket_stays_up() -> None:
    comm, hive = await hello(
        "h1",
        [worker("m1", inflight=-5, slots=10**12, memory_bytes=-1)],
        trust=True,
    )
    w = await Worker.objects.aget(hive=hive)
    assert (w.inflight, w.slots, w.memory_bytes) == (0, 4096, 0)
    # Types that are not numbers, and a number past any integer column.
    await beat(
        comm,
        [worker("m1", inflight="lots", slots=True, memory_bytes=10**40, state="bogus")],
        inflight=-(10**30),
    )
    w = await Worker.objects.aget(hive=hive)
    assert (w.inflight, w.slots, w.memory_bytes, w.state) == (0, 1, 2**50, "failed")
    assert (await Hive.objects.aget(pk=hive.pk)).telemetry == {"inflight": 0}
    # Still connected and listened to.
    await beat(comm, [worker("m1", inflight=2)], inflight=2)
    assert (await Worker.objects.aget(hive=hive)).inflight == 2
    await comm.disconnect()


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -3, "completion_tokens": 1},
        {"prompt_tokens": 10**15},
        {"completion_tokens": True},
        {"completion_tokens": "many"},
        {"prompt_tokens_details": {"cached_tokens": -1}},
        "lots",
    ],
)
async def test_a_bad_usage_fails_the_job_and_not_the_consumer(usage: object) -> None:
    comm, hive = await hello("h1", [worker("m1")], trust=True)
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await dispatch(hive, "j", reply)
    await comm.receive_from(timeout=5)
    done = {"kind": "done", "finish_reason": "stop", "usage": usage}
    await comm.send_to(text_data=json.dumps({"op": "events", "id": "j", "events": [done]}))
    got = await asyncio.wait_for(layer.receive(reply), 5)
    assert got["events"][0]["kind"] == "error"
    assert got["events"][0]["code"] == "hive_protocol_error"
    # The socket still works for the next job.
    reply2 = await layer.new_channel()
    await dispatch(hive, "k", reply2)
    await comm.receive_from(timeout=5)
    good = {"kind": "done", "finish_reason": "stop", "usage": {"prompt_tokens": 3}}
    await comm.send_to(text_data=json.dumps({"op": "event", "id": "k", "event": good}))
    assert (await asyncio.wait_for(layer.receive(reply2), 5))["events"] == [good]
    await comm.disconnect()


async def test_download_progress_numbers_are_bounded() -> None:
    from hives.models import ModelDownload

    comm, hive = await hello("h1", [], trust=True)
    d = await ModelDownload.objects.acreate(hive=hive, source="org/model")
    for report in (
        {"op": "download", "id": d.pk, "state": "running", "done": -1, "total": 10**30},
        {"op": "download", "id": "nope", "state": "running", "done": 1, "total": 2},
    ):
        await comm.send_to(text_data=json.dumps(report))
    await asyncio.sleep(0.3)
    await d.arefresh_from_db()
    assert (d.done_bytes, d.total_bytes) == (0, 2**50)
    await comm.send_to(
        text_data=json.dumps(
            {
                "op": "download",
                "id": d.pk,
                "state": "done",
                "done": 5,
                "total": 5,
                "revision": "v1.0",
                "path": "/m/x",
            }
        )
    )
    await asyncio.sleep(0.3)
    await d.arefresh_from_db()
    assert (d.status, d.done_bytes, d.revision) == ("done", 5, "v1.0")
    await comm.disconnect()


async def test_device_fields_are_scalars_within_bounds() -> None:
    """memory_free_mb as a string would break every placement of the hive's workers (each
    request for their models), and text fields reach the scheduler's maps."""
    _, token = await database_sync_to_async(hive_token_create)(name="h1", trust_models=True)
    comm = await connect(token)
    device = {
        "index": 0,
        "kind": "cpu",
        "gpu_type": "CPU\r\nX-Evil: 1",
        "memory_free_mb": "lots",
        "memory_total_mb": -(10**30),
        "utilization": 1e300,
        "processes": [{"pid": 1}],
    }
    await comm.send_to(text_data=json.dumps({**HELLO, "devices": [device]}))
    await comm.receive_from(timeout=5)
    hive = await Hive.objects.aget(name="h1")
    assert hive.devices == [
        {
            "index": 0,
            "kind": "cpu",
            "gpu_type": "CPUX-Evil: 1",
            "memory_total_mb": 0,
            "utilization": 2**50,
        }
    ]
    placements = await database_sync_to_async(selectors.placements_for_model)(
        model=await CatalogModel.objects.aget(name="m1")
    )
    assert [(p.vram_free_mb, p.vram_total_mb) for p in placements] == [(0, 0)]
    await comm.disconnect()


async def test_the_watchdog_outlives_a_database_error(settings: Any, caplog: Any) -> None:
    """The watchdog's check meets a database error once (its table is briefly gone, as
    in a migration gone wrong): the error is logged, and the next check still closes a
    revoked hive's socket within a heartbeat, though the hive sends none."""
    import logging

    import psycopg
    from django.db import connection

    settings.RBEE_HIVE_HEARTBEAT = 0.5
    _, token = await database_sync_to_async(hive_token_create)(name="h1", trust_models=True)
    comm = await connect(token)
    await comm.send_to(text_data=json.dumps(HELLO))
    assert json.loads(await comm.receive_from(timeout=5))["op"] == "welcome"
    name = connection.settings_dict["NAME"]
    table = Hive._meta.db_table
    with (
        caplog.at_level(logging.ERROR, logger="hives.consumer"),
        psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as db,
    ):
        db.execute(f"alter table {table} rename to {table}_away")
        try:
            deadline = time.monotonic() + 5
            while not any("token check failed" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the watchdog never met the error"
                await asyncio.sleep(0.05)
        finally:
            db.execute(f"alter table {table}_away rename to {table}")
    await database_sync_to_async(hive_revoke)(name="h1")
    started = time.monotonic()
    out = await closed_within(comm, 2.0)
    assert out["code"] == CLOSE_BAD_TOKEN
    assert time.monotonic() - started < 1.0


async def test_the_orders_a_report_draws_are_bounded() -> None:
    """A heartbeat listing thousands of workers it says the queen assigned draws at most
    as many stop orders as the queen takes workers from one report (256)."""
    comm, _hive = await hello("h1", [], trust=True)
    workers = [worker(f"x{i}", assigned=True) for i in range(600)]
    await comm.send_to(text_data=json.dumps({"op": "heartbeat", "workers": workers}))
    stops = 0
    while not await comm.receive_nothing(timeout=2):
        stops += json.loads(await comm.receive_from())["op"] == "stop"
    assert stops == 256
    await comm.disconnect()
