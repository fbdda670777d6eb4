"""/ui/ws/fleet: the fleet page's live feed, through the queen's real ASGI application
(same-origin check, session user): a snapshot on every connect, one coalesced push per
burst of fleet changes announced by the hives app after commit, a stale transition
pushed by the periodic tick with no event at all, and refusals for the anonymous, for
operators without the fleet permission and for other origins. Rendering is shared (one
render per change for every socket, only the changed pieces sent, nothing on an idle
tick), sockets are capped per operator, and the feed ends with its session."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import transaction
from django.test import Client
from django.utils import timezone

from hives import services as hive_services
from hives.events import announce_fleet_change
from hives.models import Hive, ModelApproval, Worker
from tests.web.fleet_fixtures import PASSWORD, hive, operator, seed_fleet, worker
from web.ui import consumers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

HOST = "testserver"


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(consumers.FleetConsumer, "min_interval", 0.6)
    monkeypatch.setattr(consumers.FleetConsumer, "tick", 60.0)
    yield


def _session(username: str, *areas: str) -> str:
    operator(username, *areas)
    c = Client()
    assert c.login(username=username, password=PASSWORD)
    return str(c.cookies[settings.SESSION_COOKIE_NAME].value)


async def _open(session: str | None, origin: str = f"http://{HOST}") -> tuple[Any, bool, Any]:
    from rbee.asgi import application

    headers = [(b"host", HOST.encode()), (b"origin", origin.encode())]
    if session:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    comm = WebsocketCommunicator(application, "/ui/ws/fleet", headers=headers)
    connected, code = await comm.connect(timeout=5)
    return comm, connected, code


def _state(html: str, worker_key: str) -> str:
    found = re.search(rf'data-worker="{re.escape(worker_key)}" data-state="([a-z]+)"', html)
    assert found, html[:400]
    return found.group(1)


async def test_signed_out_non_fleet_operators_and_other_origins_are_refused() -> None:
    await database_sync_to_async(seed_fleet)()
    refused, connected, code = await _open(None)
    assert (connected, code) == (False, 4403)
    await refused.disconnect()  # the client goes; the app instance must end too
    sched = await database_sync_to_async(_session)("sched", "scheduler", "tenants", "audit")
    refused, connected, code = await _open(sched)
    assert (connected, code) == (False, 4403)
    await refused.disconnect()
    ops = await database_sync_to_async(_session)("ops", "fleet")
    refused, connected, code = await _open(ops, origin="http://evil.example")
    assert (connected, code) == (False, 4403)
    await refused.disconnect()
    comm, connected, _ = await _open(ops)
    assert connected
    await comm.receive_from(timeout=5)
    await comm.disconnect()


async def test_a_snapshot_on_connect_then_one_push_per_burst_of_changes() -> None:
    fleet = await database_sync_to_async(seed_fleet)()
    ops = await database_sync_to_async(_session)("ops", "fleet")
    comm, connected, _ = await _open(ops)
    assert connected
    first = await comm.receive_from(timeout=5)
    assert first.startswith('<div id="fleet-live"')
    assert _state(first, "sdxl@cuda:0") == "ready"
    assert 'data-hive="old-server" data-status="stale"' in first

    # Twenty changes in a burst (the last one matters): one render, after the interval.
    def burst() -> None:
        w: Worker = fleet["sdxl"]
        for i, state in enumerate(["stopping", "stopped"] * 9 + ["starting", "failed"]):
            Worker.objects.filter(pk=w.pk).update(state=state, message=f"change {i}")
            announce_fleet_change("test")

    await database_sync_to_async(burst)()
    pushed = await comm.receive_from(timeout=3)
    assert _state(pushed, "sdxl@cuda:0") == "failed" and "change 19" in pushed
    assert await comm.receive_nothing(timeout=1.0)
    await comm.disconnect()


async def test_a_heartbeat_through_the_hives_services_reaches_the_page() -> None:
    ops = await database_sync_to_async(_session)("ops", "fleet")

    def connected_hive() -> Hive:
        h = hive("box", devices=[])
        worker(h, "tiny", "cpu", "starting")
        ModelApproval.objects.create(hive=h, model_name="tiny", approved=True)
        return h

    h = await database_sync_to_async(connected_hive)()
    comm, _, _ = await _open(ops)
    assert _state(await comm.receive_from(timeout=5), "tiny@cpu") == "starting"
    beat = {
        "devices": [{"index": 0, "kind": "cpu", "gpu_type": "CPU", "memory_total_mb": 2048}],
        "workers": [{"model": "tiny", "device": "cpu", "state": "ready", "pid": 7}],
    }

    def heartbeat() -> None:
        h2 = Hive.objects.get(pk=h.pk)
        assert hive_services.hive_heartbeat(hive_id=h.pk, channel_name=h2.channel_name, beat=beat)

    await database_sync_to_async(heartbeat)()
    pushed = await comm.receive_from(timeout=3)
    assert _state(pushed, "tiny@cpu") == "ready"
    uptime = r'data-worker="tiny@cpu"[^>]*>.*?<td data-label="Uptime">&lt;10s</td>'
    assert re.search(uptime, pushed, re.S)
    await comm.disconnect()


async def test_a_hive_whose_heartbeat_gets_old_turns_stale_without_any_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumers.FleetConsumer, "tick", 0.5)
    ops = await database_sync_to_async(_session)("ops", "fleet")
    stale_after = settings.RBEE_HIVE_STALE_AFTER

    def nearly_stale() -> None:
        h = hive("edge")
        Hive.objects.filter(pk=h.pk).update(
            last_seen_at=timezone.now() - timedelta(seconds=stale_after - 1.5)
        )

    await database_sync_to_async(nearly_stale)()
    comm, _, _ = await _open(ops)
    first = await comm.receive_from(timeout=5)
    assert 'data-hive="edge" data-status="online"' in first
    deadline = asyncio.get_running_loop().time() + 6
    while True:
        html = await comm.receive_from(timeout=3)
        if 'data-hive="edge" data-status="stale"' in html:
            break
        assert asyncio.get_running_loop().time() < deadline, "never turned stale"
    await comm.disconnect()


async def test_download_progress_is_pushed_and_a_rolled_back_change_announces_nothing() -> None:
    ops = await database_sync_to_async(_session)("ops", "fleet")

    def queued() -> tuple[int, int]:
        h = hive("box")
        d = hive_services.model_download_create(hive_name="box", source="org/model")
        return h.pk, d.pk

    hive_id, download_id = await database_sync_to_async(queued)()
    comm, _, _ = await _open(ops)
    first = await comm.receive_from(timeout=5)
    assert 'data-download="org/model" data-status="queued"' in first

    def rolled_back() -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            report = {"id": download_id, "state": "running", "done": 1, "total": 4}
            hive_services.model_download_progress(hive_id=hive_id, report=report)
            raise RuntimeError("rolled back")

    await database_sync_to_async(rolled_back)()
    assert await comm.receive_nothing(timeout=1.5)

    def progress() -> None:
        report = {"id": download_id, "state": "running", "done": 3 * 2**20, "total": 4 * 2**20}
        hive_services.model_download_progress(hive_id=hive_id, report=report)

    await database_sync_to_async(progress)()
    pushed = await comm.receive_from(timeout=3)
    row = re.search(r'data-download="org/model" data-status="running">(.*?)</tr>', pushed, re.S)
    assert row and '<progress max="100" value="75"' in row.group(1)
    assert "75% · 3.0 MiB of 4.0 MiB" in row.group(1)
    await comm.disconnect()


async def test_an_operator_losing_the_fleet_permission_is_cut_off_at_the_next_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumers.FleetConsumer, "tick", 0.3)
    ops = await database_sync_to_async(_session)("ops", "fleet")
    comm, connected, _ = await _open(ops)
    assert connected
    await comm.receive_from(timeout=5)

    def revoke() -> None:
        from tenants.services import operator_revoke

        operator_revoke(username="ops", areas=["fleet"])

    await database_sync_to_async(revoke)()
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        out = await comm.receive_output(timeout=3)
        if out["type"] == "websocket.close":
            assert out["code"] == 4403
            break
        assert asyncio.get_running_loop().time() < deadline
    await comm.disconnect()


def _login(username: str) -> str:
    """Another session of an existing operator (another browser)."""
    c = Client()
    assert c.login(username=username, password=PASSWORD)
    return str(c.cookies[settings.SESSION_COOKIE_NAME].value)


async def test_every_socket_gets_the_same_changed_card_from_one_render() -> None:
    fleet = await database_sync_to_async(seed_fleet)()
    ops = await database_sync_to_async(_session)("ops", "fleet")
    socks = []
    for _ in range(3):
        comm, connected, _ = await _open(ops)
        assert connected
        assert (await comm.receive_from(timeout=5)).startswith('<div id="fleet-live"')
        socks.append(comm)

    def burst() -> None:
        for i in range(10):
            Worker.objects.filter(pk=fleet["sdxl"].pk).update(state="failed", message=f"oom {i}")
            announce_fleet_change("test")

    await database_sync_to_async(burst)()
    pushed = [await comm.receive_from(timeout=3) for comm in socks]
    # Only what changed: gaming-pc's card and the time; the other hives' cards are not sent.
    assert pushed[0] == pushed[1] == pushed[2]
    assert pushed[0].startswith('<div class="kpis" id="fleet-kpis"')  # 1 of 2 ready -> 0 of 2
    assert '<section class="card hive hive-online" id="hive-gaming-pc"' in pushed[0]
    assert _state(pushed[0], "sdxl@cuda:0") == "failed" and "oom 9" in pushed[0]
    assert 'id="hive-old-server"' not in pushed[0] and 'id="hive-mac-studio"' not in pushed[0]
    assert re.search(r'<p class="small muted" id="fleet-updated">.*UTC\.</p>$', pushed[0])
    for comm in socks:
        assert await comm.receive_nothing(timeout=0.8)
    # This process rendered twice: for the three sockets' connects, then for the burst.
    assert consumers.fleet_feed().renders == 2
    for comm in socks:
        await comm.disconnect()


async def test_idle_ticks_send_nothing_when_nothing_shown_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumers.FleetConsumer, "tick", 0.3)
    await database_sync_to_async(seed_fleet)()
    ops = await database_sync_to_async(_session)("ops", "fleet")
    comm, connected, _ = await _open(ops)
    assert connected
    await comm.receive_from(timeout=5)
    # Several ticks, the clock moving on ("Updated HH:MM:SS"), nothing else: no push.
    assert await comm.receive_nothing(timeout=2.5)
    await comm.disconnect()


async def test_a_ninth_socket_of_one_operator_is_refused() -> None:
    await database_sync_to_async(seed_fleet)()
    ops = await database_sync_to_async(_session)("ops", "fleet")
    socks = []
    for _ in range(8):
        comm, connected, _ = await _open(ops)
        assert connected
        await comm.receive_from(timeout=5)
        socks.append(comm)
    refused, connected, code = await _open(ops)
    assert (connected, code) == (False, 4429)
    await refused.disconnect()
    # Another operator is not counted against this one.
    other = await database_sync_to_async(_session)("ops2", "fleet")
    comm, connected, _ = await _open(other)
    assert connected
    await comm.receive_from(timeout=5)
    await comm.disconnect()
    # A tab closed frees its place.
    await socks.pop().disconnect()
    comm, connected, _ = await _open(ops)
    assert connected
    await comm.receive_from(timeout=5)
    socks.append(comm)
    for comm in socks:
        await comm.disconnect()


async def _pushes_until_closed(comm: Any, timeout: float) -> tuple[list[str], int | None]:
    pushed: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            out = await comm.receive_output(timeout=deadline - asyncio.get_running_loop().time())
        except TimeoutError:
            break
        if out["type"] == "websocket.close":
            return pushed, out["code"]
        pushed.append(out.get("text", ""))
    return pushed, None


async def test_a_session_that_ends_elsewhere_ends_the_feed_before_its_next_push(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumers.FleetConsumer, "min_interval", 0.1)
    monkeypatch.setattr(consumers.FleetConsumer, "tick", 0.3)
    await database_sync_to_async(seed_fleet)()
    ops = await database_sync_to_async(_session)("ops", "fleet")
    comm, connected, _ = await _open(ops)
    assert connected
    await comm.receive_from(timeout=5)
    # The session expires (or is deleted) in the database; the socket's scope still has it.
    await database_sync_to_async(
        lambda: Session.objects.filter(session_key=ops).update(
            expire_date=timezone.now() - timedelta(seconds=1)
        )
    )()
    # A change comes before the next tick: it is not pushed to a session that has ended.
    await database_sync_to_async(announce_fleet_change)("after the session ended")
    pushed, code = await _pushes_until_closed(comm, timeout=3)
    assert (pushed, code) == ([], 4403)
    await comm.disconnect()


async def test_signing_out_closes_that_sessions_sockets_at_once() -> None:
    await database_sync_to_async(seed_fleet)()
    ops = await database_sync_to_async(_session)("ops", "fleet")
    elsewhere = await database_sync_to_async(_login)("ops")
    comm, connected, _ = await _open(ops)
    assert connected
    await comm.receive_from(timeout=5)
    other, connected, _ = await _open(elsewhere)
    assert connected
    await other.receive_from(timeout=5)

    def sign_out() -> None:
        c = Client()
        c.cookies[settings.SESSION_COOKIE_NAME] = ops
        assert c.post("/ui/logout").status_code == 302

    await database_sync_to_async(sign_out)()
    # The tick is a minute away (the fixture): the sign-out itself closes the socket.
    pushed, code = await _pushes_until_closed(comm, timeout=2)
    assert (pushed, code) == ([], 4403)
    await comm.disconnect()
    # The operator's other session goes on.
    assert await other.receive_nothing(timeout=0.5)

    def change() -> None:
        Hive.objects.filter(name="old-server").update(version="1.0.0")
        announce_fleet_change("test")

    await database_sync_to_async(change)()
    assert "rbee 1.0.0" in await other.receive_from(timeout=3)
    await other.disconnect()


async def test_a_socket_that_fails_to_start_gives_its_place_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Channels runs no disconnect() after a connect() that raised: the socket must give
    back its place under the per-operator cap itself, or the page's reconnects use them up
    until the queen restarts."""
    await database_sync_to_async(seed_fleet)()
    ops = await database_sync_to_async(_session)("ops", "fleet")

    async def broken(self: Any, max_age: float) -> Any:
        raise RuntimeError("the fleet cannot be rendered")

    monkeypatch.setattr(consumers.FleetFeed, "latest", broken)
    for _ in range(consumers.FleetConsumer.max_per_user + 2):
        comm, connected, _ = await _open(ops)
        assert connected  # accepted, then closed with an error
        out = await comm.receive_output(timeout=5)
        assert out == {"type": "websocket.close", "code": 1011}
        await comm.disconnect()
    monkeypatch.undo()
    comm, connected, code = await _open(ops)
    assert (connected, code) == (True, None)
    assert "fleet" in await comm.receive_from(timeout=5)
    await comm.disconnect()


async def test_a_socket_that_cannot_be_pushed_to_does_not_keep_the_render_from_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumers.FleetConsumer, "min_interval", 0.1)
    fleet = await database_sync_to_async(seed_fleet)()
    ops = await database_sync_to_async(_session)("ops", "fleet")
    first, connected, _ = await _open(ops)
    assert connected
    await first.receive_from(timeout=5)
    second, connected, _ = await _open(ops)
    assert connected
    await second.receive_from(timeout=5)
    feed = consumers.fleet_feed()
    assert len(feed.sockets) == 2
    # Whichever socket the feed serves first cannot be pushed to: the other still is.
    broken = next(iter(feed.sockets))

    async def fails(parts: Any) -> None:
        raise RuntimeError("this socket is gone")

    monkeypatch.setattr(broken, "deliver", fails)

    def change() -> None:
        Worker.objects.filter(pk=fleet["sdxl"].pk).update(state="failed", message="oom")
        announce_fleet_change("test")

    await database_sync_to_async(change)()
    await asyncio.sleep(2)
    quiet = [await comm.receive_nothing(timeout=0.2) for comm in (first, second)]
    assert sorted(quiet) == [False, True]  # the other socket still got the change
    served = second if quiet[0] else first
    assert "oom" in await served.receive_from(timeout=1)
    await first.disconnect()
    await second.disconnect()
