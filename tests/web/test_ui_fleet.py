"""/ui, the fleet page: who may see it and act on it (signed out: the login page; no
fleet permission: 403, and nothing happens), what it shows of every hive (devices with
memory and utilisation, workers with state, pin, memory, uptime, in flight and queue,
free devices, stale and offline hives with their heartbeat age and why), and its actions
(CSRF, validation, domain errors as 4xx messages on the page, audited like the API)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client

from gdpr.actions import AuditAction as A
from hives.models import Assignment, Hive, ModelAlias, ModelDownload, WorkerCommand
from tests.audit_events import audit_home, events, one  # noqa: F401 (fixture by name)
from tests.web.fleet_fixtures import PASSWORD, operator, seed_fleet
from web.ui.live import coarse_age, fleet_snapshot, render_parts

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("audit_home")]

OPS = "user:ops@rbee.example"


def _signed_in(username: str, *areas: str, csrf: bool = False) -> Client:
    operator(username, *areas)
    c = Client(enforce_csrf_checks=csrf)
    assert c.login(username=username, password=PASSWORD)
    return c


def _csrf(c: Client) -> str:
    page = c.get("/ui/")
    assert page.status_code == 200
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert found
    return found.group(1)


def _text(html: bytes) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.decode()))


POSTS = [
    ("/ui/spawn", {"hive": "gaming-pc", "model": "sdxl", "device": "cpu"}),
    ("/ui/downloads", {"hive": "gaming-pc", "source": "org/model"}),
    ("/ui/aliases", {"alias": "gpt-4o", "target": "sdxl"}),
    ("/ui/assignments/remove", {"hive": "gaming-pc", "model": "sdxl"}),
]


def _nothing_happened() -> None:
    assert Assignment.objects.count() == 0
    assert ModelDownload.objects.count() == 0
    assert ModelAlias.objects.count() == 0
    assert WorkerCommand.objects.count() == 0
    assert events(A.MODEL_ADD) == events(A.WORKER_COMMAND) == []


def test_signed_out_visitors_are_sent_to_the_login_page_and_change_nothing() -> None:
    fleet = seed_fleet()
    c = Client()
    r = c.get("/ui/")
    assert (r.status_code, r["Location"]) == (302, "/ui/login?next=%2Fui%2F")
    for url, body in [*POSTS, (f"/ui/workers/{fleet['sdxl'].pk}/action", {"action": "stop"})]:
        r = c.post(url, body)
        assert r.status_code == 302 and r["Location"].startswith("/ui/login?next="), url
    _nothing_happened()


def test_operators_without_the_fleet_permission_get_403_and_change_nothing() -> None:
    fleet = seed_fleet()
    c = _signed_in("sched", "scheduler", "tenants", "audit")
    r = c.get("/ui/")
    assert r.status_code == 403
    assert b"gaming-pc" not in r.content
    for url, body in [*POSTS, (f"/ui/workers/{fleet['sdxl'].pk}/action", {"action": "stop"})]:
        assert c.post(url, body).status_code == 403, url
    _nothing_happened()


def test_the_page_shows_every_hive_its_devices_workers_and_free_devices() -> None:
    seed_fleet()
    c = _signed_in("ops", "fleet")
    r = c.get("/ui/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "<title>Fleet · rbee</title>" in html
    text = _text(r.content)
    # Order: by name.
    names = re.findall(r'data-hive="([a-z-]+)" data-status="([a-z]+)"', html)
    assert names == [("gaming-pc", "online"), ("mac-studio", "offline"), ("old-server", "stale")]
    assert "Hive: gaming-pc (RTX4090 · 24.0 GiB GPU memory) online" in text
    # The GPU: memory used/total from telemetry, utilisation; the CPU does not report one.
    row = re.search(r'<tr data-device="cuda:0">(.*?)</tr>', html, re.S)
    assert row
    cells = _text(row.group(1).encode())
    assert "NVIDIA GeForce RTX 4090" in cells
    assert "18.0 GiB / 24.0 GiB" in cells and "87%" in cells
    assert '<meter min="0" max="24564" value="18424"' in row.group(1)
    cpu = re.search(r'<tr data-device="cpu">(.*?)</tr>', html, re.S)
    assert cpu and "not reported" in cpu.group(1) and "data-free-device" in cpu.group(1)
    # The worker: pinned, ready, memory, uptime (2h 34m from the heartbeats), in flight.
    w = re.search(
        r'<tr id="worker-\d+" data-worker="sdxl@cuda:0" data-state="ready">(.*?)</tr>', html, re.S
    )
    assert w
    cells = _text(w.group(1).encode())
    assert re.fullmatch(
        r" sdxl pinned text-gen cuda:0 ready 18\.0 GiB 2h 3[34]m 1 / 2 0 Restart Stop ", cells
    ), cells
    # A placement that did not fit: the memory planner's explanation, as the hive said it.
    refused = re.search(
        r'data-worker="llama-3-70b@cpu" data-state="refused">(.*?)</tr>', html, re.S
    )
    assert refused and (
        "llama-3-70b needs 40.0 GiB on cpu; 6.0 GiB free (sdxl holds 18.0 GiB)" in refused.group(1)
    )
    assert "Available: cpu" in text
    # Stale and offline hives: the heartbeat age and the reason.
    stale = re.search(r'id="hive-old-server"(.*?)</section>', html, re.S)
    assert stale
    stale_text = _text(stale.group(1).encode())
    # Ages are coarse (whole minutes here), so that the live page changes only when they do.
    assert "Last heartbeat: 2m ago" in stale_text
    assert "Stale: no heartbeat for over 15s: jobs are not sent to it" in stale_text
    offline = re.search(r'id="hive-mac-studio"(.*?)</section>', html, re.S)
    assert offline and "Offline: its connection closed" in _text(offline.group(1).encode())
    assert "Last heartbeat: 1h 6m ago" in _text(offline.group(1).encode())
    # The live feed and the forms.
    assert 'ws-connect="/ui/ws/fleet"' in html
    assert 'action="/ui/spawn"' in html and 'action="/ui/downloads"' in html


def test_spawn_needs_the_csrf_token_then_assigns_pinned_and_is_audited() -> None:
    seed_fleet()
    c = _signed_in("ops", "fleet", csrf=True)
    body = {"hive": "gaming-pc", "model": "tiny=echo:", "device": "cuda:0", "pinned": "on"}
    assert c.post("/ui/spawn", body).status_code == 403
    _nothing_happened()
    r = c.post("/ui/spawn", {**body, "csrfmiddlewaretoken": _csrf(c)})
    assert (r.status_code, r["Location"]) == (302, "/ui/")
    a = Assignment.objects.get()
    assert (a.hive.name, a.model_name, a.spec, a.device, a.pinned) == (
        "gaming-pc", "tiny", "tiny=echo:", "cuda:0", True,
    )  # fmt: skip
    ev = one(A.MODEL_ADD)
    assert ev["actor"] == OPS
    assert ev["data"] == {
        "hive": "gaming-pc", "model": "tiny", "device": "cuda:0", "spec": "tiny=echo:",
        "pinned": True,
    }  # fmt: skip
    page = c.get("/ui/")
    assert "Spawning tiny on gaming-pc:cuda:0 (pinned)" in page.content.decode()


def test_spawn_of_a_catalog_model_sends_its_definition() -> None:
    seed_fleet()
    c = _signed_in("ops", "fleet")
    assert (
        c.post("/ui/spawn", {"hive": "gaming-pc", "model": "sdxl", "device": "cpu"}).status_code
        == 302
    )
    a = Assignment.objects.get()
    assert (a.model_name, a.spec, a.device, a.pinned) == ("sdxl", "sdxl=echo:", "cpu", False)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"hive": "gaming-pc", "model": "x=echo:", "device": "cuda:3"},
            400,
            "hive &#x27;gaming-pc&#x27; has no device &#x27;cuda:3&#x27; (it reports cpu, cuda:0)",
        ),
        (
            {"hive": "nowhere", "model": "x=echo:", "device": "cpu"},
            404,
            "no hive named &#x27;nowhere&#x27;",
        ),
        ({"hive": "gaming-pc", "model": "", "device": "cpu"}, 400, "choose a model to run"),
        ({"hive": "gaming-pc", "model": "broken=", "device": "cpu"}, 400, "NAME=ENGINE:SOURCE"),
    ],
)
def test_spawn_refusals_are_messages_on_the_page_with_a_4xx(
    body: dict[str, str], status: int, message: str
) -> None:
    seed_fleet()
    c = _signed_in("ops", "fleet")
    r = c.post("/ui/spawn", body)
    assert r.status_code == status
    html = r.content.decode()
    assert message in html
    assert re.search(r'<p class="error" role="alert">[^<]*' + re.escape(message), html)
    assert Assignment.objects.count() == 0 and events(A.MODEL_ADD) == []


def test_worker_orders_are_queued_audited_and_checked() -> None:
    fleet = seed_fleet()
    c = _signed_in("ops", "fleet")
    url = f"/ui/workers/{fleet['sdxl'].pk}/action"
    r = c.post(url, {"action": "restart"})
    assert (r.status_code, r["Location"]) == (302, "/ui/")
    cmd = WorkerCommand.objects.get()
    assert (cmd.hive.name, cmd.model_name, cmd.device, cmd.action, cmd.sent_at) == (
        "gaming-pc", "sdxl", "cuda:0", "restart", None,
    )  # fmt: skip
    ev = one(A.WORKER_COMMAND)
    assert (ev["actor"], ev["data"]["action"], ev["data"]["model"]) == (OPS, "restart", "sdxl")
    r = c.post(url, {"action": "explode"})
    assert r.status_code == 400
    assert "unknown action &#x27;explode&#x27;: use start, stop or restart" in r.content.decode()
    assert c.post("/ui/workers/999999/action", {"action": "stop"}).status_code == 404
    assert c.get(url).status_code == 405
    assert WorkerCommand.objects.count() == 1


def test_downloads_and_aliases_are_created_audited_and_checked() -> None:
    seed_fleet()
    c = _signed_in("ops", "fleet")
    r = c.post("/ui/downloads", {"hive": "gaming-pc", "source": " HuggingFaceTB/SmolLM2-135M "})
    assert (r.status_code, r["Location"]) == (302, "/ui/#downloads")
    d = ModelDownload.objects.get()
    assert (d.hive.name, d.source, d.status) == (
        "gaming-pc",
        "HuggingFaceTB/SmolLM2-135M",
        "queued",
    )
    assert one(A.MODEL_DOWNLOAD)["actor"] == OPS
    d.status, d.done_bytes, d.total_bytes = "running", 3 * 2**20, 12 * 2**20
    d.save()
    page = c.get("/ui/").content.decode()
    row = re.search(
        r'data-download="HuggingFaceTB/SmolLM2-135M" data-status="running">(.*?)</tr>', page, re.S
    )
    assert row and '<progress max="100" value="25"' in row.group(1)
    assert "25% · 3.0 MiB of 12.0 MiB" in row.group(1)
    r = c.post("/ui/downloads", {"hive": "gaming-pc", "source": "  "})
    assert r.status_code == 400 and "say what to download" in r.content.decode()
    assert c.post("/ui/downloads", {"hive": "ghost", "source": "a/b"}).status_code == 404
    assert ModelDownload.objects.count() == 1

    assert c.post("/ui/aliases", {"alias": "gpt-4o", "target": "sdxl"}).status_code == 302
    assert ModelAlias.objects.get().model.name == "sdxl"
    assert one(A.MODEL_ALIAS)["actor"] == OPS
    r = c.post("/ui/aliases", {"alias": "llama-3-70b", "target": "sdxl"})
    assert r.status_code == 400
    assert "&#x27;llama-3-70b&#x27; is already the name of a model" in r.content.decode()
    r = c.post("/ui/aliases", {"alias": "x", "target": "no-such-model"})
    assert r.status_code == 400 and "no model named &#x27;no-such-model&#x27;" in r.content.decode()
    assert ModelAlias.objects.count() == 1


def test_an_assigned_worker_can_be_removed_and_that_is_audited() -> None:
    seed_fleet()
    c = _signed_in("ops", "fleet")
    assert (
        c.post("/ui/spawn", {"hive": "gaming-pc", "model": "sdxl", "device": "cuda:0"}).status_code
        == 302
    )
    html = c.get("/ui/").content.decode()
    row = re.search(r'data-worker="sdxl@cuda:0" data-state="ready">(.*?)</tr>', html, re.S)
    assert (
        row and 'action="/ui/assignments/remove"' in row.group(1) and ">assigned<" in row.group(1)
    )
    refused = re.search(
        r'data-worker="llama-3-70b@cpu" data-state="refused">(.*?)</tr>', html, re.S
    )
    assert refused and "assignments/remove" not in refused.group(1)
    r = c.post("/ui/assignments/remove", {"hive": "gaming-pc", "model": "sdxl"})
    assert (r.status_code, r["Location"]) == (302, "/ui/")
    assert Assignment.objects.count() == 0
    ev = one(A.MODEL_REMOVE)
    assert (ev["actor"], ev["data"]["model"], ev["data"]["assignments"]) == (OPS, "sdxl", 1)
    r = c.post("/ui/assignments/remove", {"hive": "gaming-pc", "model": "sdxl"})
    assert r.status_code == 404
    assert "&#x27;sdxl&#x27; is not assigned to &#x27;gaming-pc&#x27;" in r.content.decode()
    assert len(events(A.MODEL_REMOVE)) == 1


def test_a_hive_cards_spawn_link_preselects_its_hive() -> None:
    seed_fleet()
    c = _signed_in("ops", "fleet")
    html = c.get("/ui/").content.decode()
    assert 'href="/ui/?hive=old-server#spawn"' in html
    html = c.get("/ui/?hive=old-server").content.decode()
    assert re.findall(r'<option value="([a-z-]+)" selected>', html) == ["old-server", "old-server"]


def test_ages_are_coarse_so_the_page_changes_only_when_they_do() -> None:
    got = [coarse_age(s) for s in (0, 9, 10, 59, 60, 119, 3599, 3600, 9240)]
    assert got == ["<10s", "<10s", "10s", "50s", "1m", "1m", "59m", "1h 0m", "2h 34m"]


def test_a_render_that_differs_only_by_its_time_is_no_change() -> None:
    seed_fleet()
    first = render_parts()
    later = fleet_snapshot()
    later.generated_at += timedelta(minutes=61)  # a clock that moved on, nothing else
    again = render_parts(later)
    assert f"Updated {later.generated_at:%H:%M:%S} UTC." in again.updated
    assert again.updated != first.updated
    assert again.changed_since(first) is None
    # The whole live part for a page that shows nothing yet, or whose hives came or went.
    assert again.changed_since(None) == again.full
    assert again.full.startswith('<div id="fleet-live" class="stack" aria-live="off">')
    Hive.objects.filter(name="old-server").update(version="1.0.0")
    changed = render_parts().changed_since(first)
    assert changed is not None and changed.startswith('<section class="card hive hive-stale"')
    assert 'id="hive-old-server"' in changed and "rbee 1.0.0" in changed
    assert 'id="hive-gaming-pc"' not in changed and 'id="fleet-updated"' in changed
    Hive.objects.filter(name="mac-studio").delete()
    fewer = render_parts()
    assert fewer.changed_since(first) == fewer.full
