"""The queen's hive consumer, driven through Channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from hives.models import CatalogModel, Hive, Worker
from hives.protocol import (
    CLOSE_BAD_VERSION,
    FRAME_BUDGET,
    OLDEST_COMPATIBLE,
    PROTOCOL_VERSION,
    batch_frames,
)
from hives.services import hive_token_create
from rbee.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

HELLO = {
    "op": "hello",
    "protocol": PROTOCOL_VERSION,
    "name": "h1",
    "version": "test",
    "region": "eu",
    "devices": [{"index": 0, "kind": "cpu", "gpu_type": "CPU"}],
    "workers": [
        {
            "model": "m1",
            "capability": "text-gen",
            "engine": "echo",
            "source": "",
            "device": "cpu",
            "state": "ready",
            "pinned": True,
            "inflight": 0,
        }
    ],
}


async def connect(token: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application, "/hive/ws", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await comm.connect()
    assert connected
    return comm


async def registered(
    name: str = "h1", protocol: int = PROTOCOL_VERSION
) -> tuple[WebsocketCommunicator, Hive]:
    # The operator lets this hive's start models in (`rbee hive token --trust-models`);
    # tests/hives/test_hive_trust.py covers hives it does not.
    _, token = await database_sync_to_async(hive_token_create)(name=name, trust_models=True)
    comm = await connect(token)
    await comm.send_to(text_data=json.dumps({**HELLO, "name": name, "protocol": protocol}))
    welcome = json.loads(await comm.receive_from(timeout=5))
    # The session speaks the hive's version (one the queen speaks).
    assert welcome == {
        "op": "welcome",
        "hive": name,
        "heartbeat_interval": 5.0,
        "protocol": protocol,
    }
    hive = await Hive.objects.aget(name=name)
    return comm, hive


async def dispatch(hive: Hive, job_id: str, reply: str, **request: Any) -> None:
    """What a view sends to the consumer holding the hive's socket."""
    await get_channel_layer().send(
        hive.channel_name,
        {
            "type": "job.dispatch",
            "id": job_id,
            "reply": reply,
            "model": "m1",
            "task": "chat",
            "request": request,
        },
    )


async def test_hello_registers_the_hive_and_its_workers() -> None:
    comm, hive = await registered()
    assert hive.status == Hive.Status.ONLINE
    # The region is the operator's (none here): the hello's is only recorded.
    assert (hive.region, hive.reported_region) == ("", "eu")
    assert hive.channel_name
    model = await CatalogModel.objects.aget(name="m1")
    assert (model.capability, model.engine) == ("text-gen", "echo")
    worker = await Worker.objects.aget(hive=hive, model=model)
    assert (worker.state, worker.pinned) == ("ready", True)
    await comm.disconnect()
    hive = await Hive.objects.aget(name="h1")
    assert hive.status == Hive.Status.OFFLINE
    assert hive.channel_name == ""


async def test_jobs_are_relayed_both_ways_by_id() -> None:
    comm, hive = await registered()
    layer = get_channel_layer()
    reply_a = await layer.new_channel()
    reply_b = await layer.new_channel()
    for job_id, reply in (("a", reply_a), ("b", reply_b)):
        await dispatch(hive, job_id, reply, messages=[])
    frames = [json.loads(await comm.receive_from(timeout=5)) for _ in range(2)]
    assert [(f["op"], f["id"]) for f in frames] == [("job", "a"), ("job", "b")]
    # Interleaved answers reach the right reply channels.
    for frame in (
        {"op": "ack", "id": "b"},
        {"op": "event", "id": "b", "event": {"kind": "delta", "text": "B"}},
        {"op": "ack", "id": "a"},
        {
            "op": "events",
            "id": "a",
            "events": [
                {"kind": "delta", "text": "A"},
                {"kind": "done", "finish_reason": "stop", "usage": {}},
            ],
        },
    ):
        await comm.send_to(text_data=json.dumps(frame))
    got_a = [await layer.receive(reply_a) for _ in range(2)]
    got_b = [await layer.receive(reply_b) for _ in range(2)]
    assert [m["type"] for m in got_a] == ["job.ack", "job.events"]
    assert [e["kind"] for e in got_a[1]["events"]] == ["delta", "done"]
    assert got_b[1]["events"] == [{"kind": "delta", "text": "B"}]
    assert all(m["hive_id"] == hive.pk for m in got_a + got_b)
    # A cancel for b goes to the hive; events for a finished job are dropped.
    await layer.send(hive.channel_name, {"type": "job.cancel", "id": "b"})
    assert json.loads(await comm.receive_from(timeout=5)) == {"op": "cancel", "id": "b"}
    await comm.disconnect()


async def test_a_batch_frame_relays_the_events_of_several_jobs_each_to_its_own_channel() -> None:
    """Protocol 2: one binary frame carries the events of every job that was ready; each
    job's go to its own reply channel in one message, checked as an `events` frame's."""
    comm, hive = await registered()
    layer = get_channel_layer()
    replies = {job_id: await layer.new_channel() for job_id in ("a", "b", "c")}
    for job_id, reply in replies.items():
        await dispatch(hive, job_id, reply, messages=[])
    for _ in replies:
        await comm.receive_from(timeout=5)
    outbox = [
        ("a", [{"kind": "delta", "text": "A1"}, {"kind": "delta", "text": "A2"}]),
        ("b", [{"kind": "delta", "text": "B"}, {"kind": "done", "usage": {"x": 1}}]),
        ("c", [{"kind": "done", "usage": {"completion_tokens": -5}}]),
        ("not-ours", [{"kind": "delta", "text": "dropped"}]),
    ]
    (frame,) = batch_frames(outbox)
    # Entries that are not [id, [events]] pairs are dropped; the rest still count.
    frame = frame.replace(b'"jobs":[', b'"jobs":[7,["a"],["a",{}],')
    await comm.send_to(bytes_data=frame)
    got = {job_id: await layer.receive(reply) for job_id, reply in replies.items()}
    assert got["a"]["events"] == outbox[0][1]
    assert got["b"]["events"] == outbox[1][1]
    # A usage that cannot be metered fails that job only.
    (failed,) = got["c"]["events"]
    assert (failed["kind"], failed["code"], failed["status"]) == (
        "error",
        "hive_protocol_error",
        502,
    )
    assert all(m == {**m, "type": "job.events", "hive_id": hive.pk} for m in got.values())
    # b and c ended: later events of theirs are dropped; a is still relayed.
    await comm.send_to(bytes_data=batch_frames([("b", [{"kind": "delta"}]), ("a", [{}])])[0])
    assert (await layer.receive(replies["a"]))["events"] == [{}]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(replies["b"]), 0.3)
    await comm.disconnect()


@pytest.mark.asyncio  # (the module marks every test; this one needs no loop)
async def test_batch_frames_keep_to_the_budget_and_never_split_a_job() -> None:
    big = "x" * (FRAME_BUDGET // 3)
    outbox = [(f"j{i}", [{"kind": "delta", "text": big}]) for i in range(4)]
    outbox.append(("huge", [{"kind": "done", "result": "y" * (FRAME_BUDGET * 2)}]))
    outbox.append(("last", [{"kind": "delta", "text": "z"}]))
    frames = batch_frames(outbox)
    read = [json.loads(f) for f in frames]
    assert [[job for job, _ in f["jobs"]] for f in read] == [
        ["j0", "j1"],
        ["j2", "j3"],
        ["huge"],
        ["last"],
    ]
    assert all(len(f) <= FRAME_BUDGET for f in frames if b'"huge"' not in f)
    assert [pair for f in read for pair in f["jobs"]] == [[j, e] for j, e in outbox]


async def test_an_events_frame_of_one_job_is_still_relayed() -> None:
    """The frame of one job's events (what a hive sends a queen that has no batch
    frames) is still read, and relayed to its job."""
    comm, hive = await registered()
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await dispatch(hive, "one", reply, messages=[])
    assert json.loads(await comm.receive_from(timeout=5))["op"] == "job"
    events = [{"kind": "delta", "text": "hi"}, {"kind": "done", "usage": {}}]
    await comm.send_to(text_data=json.dumps({"op": "events", "id": "one", "events": events}))
    assert (await layer.receive(reply))["events"] == events
    await comm.disconnect()


async def test_socket_loss_fails_inflight_jobs_and_marks_offline() -> None:
    comm, hive = await registered()
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await dispatch(hive, "x", reply)
    await comm.receive_from(timeout=5)
    await comm.disconnect()
    msg: dict[str, Any] = await layer.receive(reply)
    assert msg["events"][0]["kind"] == "error"
    assert msg["events"][0]["code"] == "hive_disconnected"
    assert (await Hive.objects.aget(pk=hive.pk)).status == Hive.Status.OFFLINE


async def test_heartbeat_updates_telemetry_and_workers() -> None:
    comm, hive = await registered()
    beat = {
        "op": "heartbeat",
        "devices": [{"index": 0, "kind": "cpu", "utilization": 50.0}],
        "workers": [{**HELLO["workers"][0], "state": "failed"}],
        "inflight": 3,
    }
    await comm.send_to(text_data=json.dumps(beat))
    await comm.send_to(text_data="not json")  # ignored, not fatal
    await comm.send_to(text_data=json.dumps({"op": "mystery"}))
    await comm.send_to(text_data=json.dumps(beat))
    for _ in range(50):
        hive = await Hive.objects.aget(pk=hive.pk)
        if hive.telemetry.get("inflight") == 3:
            break
        import asyncio

        await asyncio.sleep(0.05)
    assert hive.telemetry == {"inflight": 3}
    assert hive.devices[0]["utilization"] == 50.0
    assert (await Worker.objects.aget(hive=hive)).state == "failed"
    await comm.disconnect()


async def test_bad_token_is_refused_with_a_reason() -> None:
    comm = await connect("rbee-hive-aaaaaaaaaa-" + "x" * 40)
    assert json.loads(await comm.receive_from(timeout=5)) == {
        "op": "refused",
        "reason": "invalid hive token",
    }
    out = await comm.receive_output(timeout=5)
    assert out == {"type": "websocket.close", "code": 4001, "reason": "invalid hive token"}
    assert not await Hive.objects.filter(status=Hive.Status.ONLINE).aexists()


async def test_no_token_is_refused() -> None:
    comm = WebsocketCommunicator(application, "/hive/ws")
    connected, _ = await comm.connect()
    assert connected
    assert json.loads(await comm.receive_from(timeout=5))["op"] == "refused"
    assert (await comm.receive_output(timeout=5))["code"] == 4001


async def test_reconnect_takes_over_and_the_old_socket_is_closed() -> None:
    old, hive = await registered()
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await dispatch(hive, "lost", reply)
    await old.receive_from(timeout=5)
    _, token = await database_sync_to_async(hive_token_create)(name="h1")
    new = await connect(token)
    await new.send_to(text_data=json.dumps(HELLO))
    await new.receive_from(timeout=5)
    # The old socket is closed at once and its job failed, not left to the ping timeout.
    failed = await asyncio.wait_for(layer.receive(reply), 5)
    assert failed["events"][0]["code"] == "hive_disconnected"
    out = await old.receive_output(timeout=5)
    assert out["type"] == "websocket.close" and out["code"] == 4003
    await old.disconnect()
    # The old socket going away does not mark the hive offline: the new one owns it.
    assert (await Hive.objects.aget(pk=hive.pk)).status == Hive.Status.ONLINE
    await new.disconnect()


@pytest.mark.parametrize(
    ("protocol", "says"),
    [
        (PROTOCOL_VERSION + 1, f"speaks protocol version {PROTOCOL_VERSION + 1}"),
        (0, "speaks protocol version 0"),
        # A hive from before tool calling and log probabilities (docs/tools.md): its
        # engines would drop `tools` and `logprobs` without a word, so it is not let in.
        (1, "speaks protocol version 1"),
        (None, "sent no protocol version"),
        ("1", "speaks protocol version 1"),  # a string is not a version
    ],
)
async def test_a_hive_of_another_protocol_version_is_refused_with_what_to_do(
    protocol: object, says: str
) -> None:
    from kernel import __version__

    _, token = await database_sync_to_async(hive_token_create)(name="h1")
    comm = await connect(token)
    hello: dict[str, Any] = {**HELLO, "version": "9.9.9"}
    if protocol is None:
        del hello["protocol"]
    else:
        hello["protocol"] = protocol
    await comm.send_to(text_data=json.dumps(hello))
    msg = json.loads(await comm.receive_from(timeout=5))
    assert msg["op"] == "refused"
    reason = msg["reason"]
    # Both versions, and what to do about it.
    assert says in reason
    ours = (
        f"protocol version {PROTOCOL_VERSION}"
        if OLDEST_COMPATIBLE == PROTOCOL_VERSION
        else f"protocol versions {OLDEST_COMPATIBLE} to {PROTOCOL_VERSION}"
    )
    assert f"queen (rbee {__version__}) speaks {ours};" in reason
    assert "rbee 9.9.9" in reason and f"rbee {__version__}" in reason
    assert "rbee hive install HOST" in reason
    upgrade = "upgrade the queen" if protocol == PROTOCOL_VERSION + 1 else "upgrade the hive"
    assert upgrade in reason
    out = await comm.receive_output(timeout=5)
    assert out["type"] == "websocket.close" and out["code"] == CLOSE_BAD_VERSION
    # Never marked online, and no worker recorded.
    assert not await Hive.objects.filter(status=Hive.Status.ONLINE).aexists()
    assert not await Worker.objects.aexists()
    await comm.disconnect()


async def test_a_hive_of_a_compatible_protocol_version_is_welcomed() -> None:
    comm, hive = await registered()  # its hello carries PROTOCOL_VERSION
    assert hive.status == Hive.Status.ONLINE
    await comm.disconnect()


async def test_nothing_a_hive_sends_counts_before_its_hello() -> None:
    """A hive's version and name are checked at the hello: a download report or a heartbeat
    sent before it changes nothing."""
    from hives.models import ModelDownload

    _, token = await database_sync_to_async(hive_token_create)(name="early")
    hive = await Hive.objects.aget(name="early")
    download = await ModelDownload.objects.acreate(hive=hive, source="org/model")
    comm = await connect(token)
    report = {"op": "download", "id": download.pk, "state": "failed", "message": "nope"}
    await comm.send_to(text_data=json.dumps(report))
    await comm.send_to(text_data=json.dumps({"op": "heartbeat", "devices": [], "workers": []}))
    await asyncio.sleep(0.3)
    await download.arefresh_from_db()
    assert download.status == ModelDownload.Status.QUEUED
    await hive.arefresh_from_db()
    assert hive.status != Hive.Status.ONLINE
    await comm.disconnect()


async def test_a_frame_with_a_non_finite_number_is_ignored() -> None:
    """json.loads reads Infinity, NaN and 1e400; a hive's frame holding one is malformed,
    logged and dropped (it never reaches the view, whose meter would choke on it), and the
    socket stays up."""
    comm, hive = await registered()
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await dispatch(hive, "j", reply, messages=[])
    assert json.loads(await comm.receive_from(timeout=5))["op"] == "job"
    for usage in ("Infinity", "-Infinity", "NaN", "1e400"):
        await comm.send_to(
            text_data='{"op": "events", "id": "j", "events": [{"kind": "done", '
            f'"finish_reason": "stop", "usage": {{"prompt_tokens": {usage}}}}}]}}'
        )
    await comm.send_to(text_data=json.dumps({"op": "ack", "id": "j"}))
    # The first thing the view hears is the ack: every frame before it was dropped.
    first = await asyncio.wait_for(layer.receive(reply), 5)
    assert first["type"] == "job.ack"
    # The job is still the hive's to finish.
    done = {"kind": "done", "finish_reason": "stop", "usage": {"prompt_tokens": 3}}
    await comm.send_to(text_data=json.dumps({"op": "event", "id": "j", "event": done}))
    assert (await asyncio.wait_for(layer.receive(reply), 5))["events"] == [done]
    await comm.disconnect()


EVIL = "cuda:0\r\nX-Evil: 1"


async def test_devices_that_do_not_parse_are_dropped_and_the_hive_still_connects() -> None:
    """A device name goes into the X-Rbee-Worker response header of every job the worker
    serves: one a hive reports with CR/LF (or anything else Device.parse refuses) is
    never stored, in a worker entry or in the device list."""
    _, token = await database_sync_to_async(hive_token_create)(name="h1", trust_models=True)
    comm = await connect(token)
    good_device = {"index": 0, "kind": "cpu", "gpu_type": "CPU"}
    hello = {
        **HELLO,
        "devices": [
            good_device,
            {"index": 0, "kind": "cuda\r\nX-Evil: 1"},
            {"index": "0\r\nX-Evil: 1", "kind": "cuda"},
            {"index": 1.5, "kind": "cuda"},
            {"index": 0, "kind": "tpu"},
            "cuda:0",
        ],
        "workers": [
            HELLO["workers"][0],
            {**HELLO["workers"][0], "model": "m2", "device": EVIL},
            {**HELLO["workers"][0], "model": "m3", "device": "gpu:7"},
            {**HELLO["workers"][0], "model": "m4", "device": "CUDA:1"},  # canonical: cuda:1
        ],
    }
    await comm.send_to(text_data=json.dumps(hello))
    welcome = json.loads(await comm.receive_from(timeout=5))
    assert welcome["op"] == "welcome"
    hive = await Hive.objects.aget(name="h1")
    assert hive.status == Hive.Status.ONLINE
    assert hive.devices == [good_device]
    workers = {w.model.name: w.device async for w in Worker.objects.select_related("model")}
    assert workers == {"m1": "cpu", "m4": "cuda:1"}
    assert not await CatalogModel.objects.filter(name__in=["m2", "m3"]).aexists()
    # A heartbeat likewise: the bad entries go, the good ones are recorded.
    beat = {
        "op": "heartbeat",
        "devices": [{"index": 0, "kind": "cpu", "utilization": 5.0}, {"kind": EVIL}],
        "workers": [
            {**HELLO["workers"][0], "state": "failed"},
            {**HELLO["workers"][0], "model": "m2", "device": EVIL},
        ],
        "inflight": 7,
    }
    await comm.send_to(text_data=json.dumps(beat))
    for _ in range(50):
        hive = await Hive.objects.aget(pk=hive.pk)
        if hive.telemetry.get("inflight") == 7:
            break
        await asyncio.sleep(0.05)
    assert hive.devices == [{"index": 0, "kind": "cpu", "utilization": 5.0}]
    assert not await Worker.objects.filter(device__contains="\n").aexists()
    assert (await Worker.objects.aget(model__name="m1")).state == "failed"
    await comm.disconnect()


async def test_the_socket_that_holds_a_hive_is_known_until_it_reconnects_elsewhere(
    settings: Any,
) -> None:
    """hives.selectors.hive_socket_held: what a job relayed by another queen's consumer
    asks when it has been silent (inference/dispatch.py): true for the socket the hive is
    connected through, false once the hive reconnected through another one (another
    queen's consumer), went stale (nobody records its heartbeats) or offline."""
    from datetime import timedelta

    from django.utils import timezone

    from hives.selectors import hive_socket_held

    held = database_sync_to_async(hive_socket_held)
    old, hive = await registered()
    first = hive.channel_name
    assert await held(hive_id=hive.pk, channel_name=first)
    assert not await held(hive_id=hive.pk, channel_name=first + "x")
    _, token = await database_sync_to_async(hive_token_create)(name="h1")
    new = await connect(token)
    await new.send_to(text_data=json.dumps(HELLO))
    await new.receive_from(timeout=5)
    second = (await Hive.objects.aget(pk=hive.pk)).channel_name
    assert second != first
    assert not await held(hive_id=hive.pk, channel_name=first)
    assert await held(hive_id=hive.pk, channel_name=second)
    stale = timezone.now() - timedelta(seconds=settings.RBEE_HIVE_STALE_AFTER + 1)
    await Hive.objects.filter(pk=hive.pk).aupdate(last_seen_at=stale)
    assert not await held(hive_id=hive.pk, channel_name=second)
    await old.disconnect()
    await new.disconnect()
    assert not await held(hive_id=hive.pk, channel_name=second)
