"""/ui/scheduler: only operators with the scheduler permission see it or change anything;
Check reports compile errors at line:column and dry-runs should_admit and route_task over
the live fleet; Reload stores a version through the same service as the API and the CLI,
audited as the signed-in operator; any stored version can be viewed and restored; the
recent decisions show who decided and why."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from gdpr.actions import AuditAction as A
from hives.models import CatalogModel, Hive, Worker
from inference import decisions
from inference.models import SchedulerScript
from inference.scheduler import counters, digest
from inference.services import scheduler_script_store
from tests.audit_events import (
    actions,
    audit_home,  # noqa: F401 (the fixture, used by name)
    one,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("audit_home")]

CODENAMES = {"fleet": "operate_fleet", "scheduler": "operate_scheduler"}

GOOD = """\
fn should_admit(task, customer) {
    if task.model == "blocked-model" { return deny("not on this fleet"); }
    admit()
}
fn route_task(task, workers) {
    workers.filter(|w| w.device == "cuda:1").first()
}
"""
BROKEN = "fn route_task(task, workers) {\n    let x = ;\n}\n"


def operator(username: str, *areas: str) -> Client:
    user = User.objects.create_user(username, f"{username}@example.com", "pw-123456789")
    for area in areas:
        user.user_permissions.add(Permission.objects.get(codename=CODENAMES[area]))
    client = Client()
    client.force_login(user)
    return client


def text(response: object) -> str:
    """The response's visible text, tags dropped, entities decoded, spaces collapsed."""
    body = response.content.decode()  # type: ignore[attr-defined]
    body = re.sub(r"</?(?:span|a|strong|code)\b[^>]*>", "", body)  # inline: no space
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


@pytest.fixture
def fleet() -> CatalogModel:
    """One live hive with a chat model on two GPUs."""
    hive = Hive.objects.create(
        name="old-server",
        token_prefix="tp-sched",
        token_hash="x",
        status=Hive.Status.ONLINE,
        channel_name="specific.hive!1",
        last_seen_at=timezone.now(),
        devices=[
            {"kind": "cuda", "index": 0, "gpu_type": "RTX3090", "memory_free_mb": 24000},
            {"kind": "cuda", "index": 1, "gpu_type": "RTX3090", "memory_free_mb": 24000},
        ],
    )
    model = CatalogModel.objects.create(name="chat-8b", capability="text-gen", engine="echo")
    for device in ("cuda:0", "cuda:1"):
        Worker.objects.create(hive=hive, model=model, device=device, state="ready")
    return model


def test_signed_out_visitors_are_sent_to_the_login_page() -> None:
    response = Client().get("/ui/scheduler")
    assert response.status_code == 302
    assert response["Location"] == "/ui/login?next=%2Fui%2Fscheduler"
    response = Client().post("/ui/scheduler/reload", {"source": GOOD})
    assert response.status_code == 302
    assert not SchedulerScript.objects.exists()


def test_an_operator_without_the_scheduler_permission_gets_403_everywhere() -> None:
    row = scheduler_script_store(source=GOOD, actor="cli:root")
    before = actions()
    client = operator("fleetonly", "fleet")
    assert client.get("/ui/scheduler").status_code == 403
    assert client.get("/ui/scheduler/decisions").status_code == 403
    assert client.get(f"/ui/scheduler/v/{row.pk}").status_code == 403
    assert client.post("/ui/scheduler/check", {"source": BROKEN}).status_code == 403
    assert client.post("/ui/scheduler/reload", {"source": BROKEN + "//"}).status_code == 403
    assert client.post("/ui/scheduler/reload", {"source": GOOD + "//x"}).status_code == 403
    assert client.post(f"/ui/scheduler/v/{row.pk}/restore").status_code == 403
    assert list(SchedulerScript.objects.values_list("pk", flat=True)) == [row.pk]
    assert actions() == before


def test_the_page_shows_the_script_in_force_in_the_editor(fleet: CatalogModel) -> None:
    client = operator("ops", "scheduler")
    response = client.get("/ui/scheduler")
    assert response.status_code == 200
    body = response.content.decode()
    assert "<title>Scheduler · rbee</title>" in body
    assert "No script stored: the default policy (least loaded) decides." in text(response)
    row = scheduler_script_store(source=GOOD, origin="api", actor="cli:root")
    response = client.get("/ui/scheduler")
    textarea = re.search(
        r'<textarea id="source"[^>]*>(.*?)</textarea>', response.content.decode(), re.S
    )
    # One newline after the tag, which HTML drops, so a leading newline would survive.
    assert textarea is not None and html.unescape(textarea.group(1)) == "\n" + GOOD
    assert f"In force: v{row.pk}" in text(response)
    assert '<option value="chat-8b"' in response.content.decode()


def test_check_reports_a_compile_error_at_line_and_column() -> None:
    client = operator("ops", "scheduler")
    response = client.post("/ui/scheduler/check", {"source": BROKEN}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Does not compile 2:13: Unexpected ';'" in text(response)
    assert 'data-error-line="2" data-error-column="13"' in response.content.decode()
    assert not SchedulerScript.objects.exists()
    # Without htmx: the whole page, the broken script still in the editor.
    response = client.post("/ui/scheduler/check", {"source": BROKEN})
    assert response.status_code == 200
    assert "<title>Scheduler · rbee</title>" in response.content.decode()
    assert "2:13: Unexpected ';'" in text(response)
    assert html.escape(BROKEN, quote=False).split("\n")[1] in response.content.decode()


def test_check_dry_runs_the_script_over_the_live_fleet(fleet: CatalogModel) -> None:
    client = operator("ops", "scheduler")
    decided_before = counters["script_decisions"]
    response = client.post(
        "/ui/scheduler/check",
        {"source": GOOD, "model": "chat-8b", "tier": "pro"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    shown = text(response)
    assert "Compiles; dry run below" in shown
    assert "Sample request chat-8b, tier pro, over 2 live workers" in shown
    assert "should_admit admitted" in shown
    worker = Worker.objects.get(device="cuda:1")
    assert f"route_task old-server/cuda:1 script route_task chose worker {worker.pk}" in shown
    # A dry run does not count as one of the queen's decisions (/metrics).
    assert counters["script_decisions"] == decided_before
    # should_admit's refusal, for a model the script refuses.
    CatalogModel.objects.create(name="blocked-model", capability="text-gen", engine="echo")
    response = client.post(
        "/ui/scheduler/check", {"source": GOOD, "model": "blocked-model"}, HTTP_HX_REQUEST="true"
    )
    shown = text(response)
    assert "should_admit denied (403): not on this fleet" in shown
    assert "route_task not asked (refused)" in shown


def test_check_shows_runtime_errors_with_their_position(fleet: CatalogModel) -> None:
    client = operator("ops", "scheduler")
    source = "fn route_task(task, workers) {\n    workers[0].nope()\n}\n"
    response = client.post(
        "/ui/scheduler/check", {"source": source, "model": "chat-8b"}, HTTP_HX_REQUEST="true"
    )
    shown = text(response)
    assert "Compiles, but failed while running" in shown
    assert re.search(r"2:\d+: Function not found: nope .*\(in route_task\)", shown), shown
    assert "route_task old-server/cuda:0 default route_task failed: 2:" in shown


def test_reload_stores_a_version_and_audits_it_as_the_operator() -> None:
    client = operator("ops", "scheduler")
    response = client.post("/ui/scheduler/reload", {"source": GOOD})
    assert response.status_code == 302 and response["Location"] == "/ui/scheduler"
    row = SchedulerScript.objects.get()
    assert row.source == GOOD and row.origin == "web: ops" and row.sha256 == digest(GOOD)
    ev = one(A.SCHEDULER_RELOAD)
    assert ev["actor"] == "user:ops@example.com"
    assert ev["data"] == {"version": row.pk, "sha256": digest(GOOD), "origin": "web: ops"}
    page = client.get("/ui/scheduler")
    assert f"Scheduler v{row.pk} stored; every queen switches to it within 1 s." in text(page)


def test_a_broken_script_is_refused_and_nothing_is_stored_or_recorded() -> None:
    client = operator("ops", "scheduler")
    kept = scheduler_script_store(source=GOOD, actor="cli:root")
    before = actions()
    response = client.post("/ui/scheduler/reload", {"source": BROKEN})
    assert response.status_code == 400
    shown = text(response)
    assert "Refused: the script does not compile, and the running one stays in force." in shown
    assert "2:13: Unexpected ';'" in shown
    assert list(SchedulerScript.objects.values_list("pk", flat=True)) == [kept.pk]
    assert actions() == before


def test_reload_needs_the_csrf_token() -> None:
    user = User.objects.create_user("ops", "ops@example.com", "pw-123456789")
    user.user_permissions.add(Permission.objects.get(codename="operate_scheduler"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post("/ui/scheduler/reload", {"source": GOOD}).status_code == 403
    assert client.post("/ui/scheduler/check", {"source": GOOD}).status_code == 403
    assert not SchedulerScript.objects.exists()
    assert actions() == []


def test_history_lists_versions_and_restores_one_as_a_new_version() -> None:
    first = scheduler_script_store(source=GOOD, origin="api", actor="cli:root")
    second = scheduler_script_store(source=GOOD + "// second\n", origin="api", actor="cli:root")
    client = operator("ops", "scheduler")
    page = client.get("/ui/scheduler").content.decode()
    assert page.index(f'href="/ui/scheduler/v/{second.pk}"') < page.index(
        f'href="/ui/scheduler/v/{first.pk}"'
    )
    view = client.get(f"/ui/scheduler/v/{first.pk}")
    assert view.status_code == 200
    assert f"<title>Scheduler v{first.pk} · rbee</title>" in view.content.decode()
    assert html.escape(GOOD.split("\n")[1]) in view.content.decode()
    assert f"Restore v{first.pk}" in text(view)
    assert "Restore" not in text(client.get(f"/ui/scheduler/v/{second.pk}"))
    assert client.get("/ui/scheduler/v/999999").status_code == 404
    assert client.post("/ui/scheduler/v/999999/restore").status_code == 404
    assert client.get(f"/ui/scheduler/v/{first.pk}/restore").status_code == 405

    response = client.post(f"/ui/scheduler/v/{first.pk}/restore")
    assert response.status_code == 302 and response["Location"] == "/ui/scheduler"
    latest = SchedulerScript.objects.first()
    assert latest is not None and latest.pk > second.pk
    assert latest.source == GOOD
    assert latest.origin == f"web: ops restored v{first.pk}"
    ev = one(A.SCHEDULER_RELOAD)
    assert ev["data"]["version"] == latest.pk and ev["actor"] == "user:ops@example.com"
    shown = text(client.get("/ui/scheduler"))
    assert f"v{first.pk} restored as v{latest.pk}" in shown


def test_recent_decisions_say_who_decided_and_why() -> None:
    decisions.clear()
    decisions.note(
        kind="route",
        model="chat-8b",
        tenant="acme",
        source="script",
        outcome="old-server/cuda:1",
        reason="route_task chose worker 7",
        version=3,
    )
    decisions.note(
        kind="admission",
        model="blocked-model",
        tenant="acme",
        source="script",
        outcome="denied (403)",
        reason="should_admit: not on this fleet",
        version=3,
    )
    client = operator("ops", "scheduler")
    response = client.get("/ui/scheduler/decisions")
    assert response.status_code == 200
    rows = re.findall(r'<tr class="decision".*?</tr>', response.content.decode(), re.S)
    assert len(rows) == 2
    first = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", rows[0]))).split()
    assert (
        first[1:]
        == "blocked-model acme script denied (403) should_admit: not on this fleet v3".split()
    )
    second = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", rows[1]))).split()
    assert (
        second[1:] == "chat-8b acme script old-server/cuda:1 route_task chose worker 7 v3".split()
    )
    decisions.clear()
    assert "No request has been scheduled" in text(client.get("/ui/scheduler/decisions"))


def test_a_script_longer_than_the_api_takes_is_refused_not_cut_short() -> None:
    client = operator("ops", "scheduler")
    huge = GOOD + "//" + "x" * 200_000
    response = client.post("/ui/scheduler/reload", {"source": huge})
    assert response.status_code == 400
    assert "1:1: the script is longer than 200,000 characters" in text(response)
    assert not SchedulerScript.objects.exists()
    response = client.post("/ui/scheduler/check", {"source": huge}, HTTP_HX_REQUEST="true")
    assert "1:1: the script is longer than 200,000 characters" in text(response)
