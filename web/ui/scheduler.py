"""/ui/scheduler: the Rhai scheduler script in force, in an editor; "Check" (compile, then a
dry run of should_admit and route_task over the live fleet's placements of a model with a
sample request); "Reload" (store it as the new version through the service the API and
the CLI use, audited; every queen switches within RBEE_SCHEDULER_CHECK_SECONDS, without a
restart); the stored versions (view any, restore one); and this queen's recent
decisions (inference/decisions.py). Operators with the scheduler permission only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from hives import selectors as hive_selectors
from inference import decisions, scheduler
from inference import selectors as inference_selectors
from inference.scheduler import Policy, ScriptError, sample_request
from inference.services import scheduler_script_store
from tenants.actors import user_actor
from web.auth import operator_page

STARTER = """\
// No script is in force: the default policy (least loaded) decides.
// Define route_task(task, workers) and/or should_admit(task, customer),
// press Check to try it on the live fleet, then Reload to put it in force.
fn route_task(task, workers) {
    workers.least_loaded()
}
"""
TIERS = ("free", "pro", "enterprise")
MAX_SOURCE = 200_000  # as the management API


@dataclass
class CheckResult:
    """What Check found: a compile error at line:column, or the dry run's answers."""

    error: str = ""  # "line:column: what", as the Rhai engine reports it
    line: int | None = None
    column: int | None = None
    model: str = ""
    tier: str = "free"
    workers: int = 0
    admission: str = ""
    admitted: bool = True
    route: str = ""
    route_source: str = ""
    route_reason: str = ""
    runtime_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and not self.runtime_errors


def check_script(source: str, *, model_name: str = "", tier: str = "free") -> CheckResult:
    """Compile `source`, then run its should_admit and route_task once against the live
    placements of `model_name` (the first served model when empty) with a sample
    request of `tier`. Nothing is stored and nothing counts in /metrics."""
    tier = tier if tier in TIERS else "free"
    try:
        policy = Policy(source, counted=False)
    except ScriptError as exc:
        return CheckResult(
            error=exc.message, line=exc.data["line"], column=exc.data["column"], tier=tier
        )
    model = hive_selectors.catalog_model_get(name=model_name) if model_name else None
    if model is None:
        served = hive_selectors.served_models()
        model = served[0].model if served else None
    placements = hive_selectors.placements_for_model(model=model) if model is not None else []
    name = model.name if model is not None else model_name or "sample-model"
    capability = model.capability if model is not None else "text-gen"
    task, customer = sample_request(kind=capability, model=name, tier=tier)
    result = CheckResult(model=name, tier=tier, workers=len(placements))
    admission = policy.admit(task, customer)
    result.admitted = admission.admitted
    if admission.admitted:
        result.admission = "admitted"
    else:
        verb = "denied" if admission.status == 403 else "rejected"
        result.admission = f"{verb} ({admission.status}): {admission.reason}"
    if admission.admitted and placements:
        decision = policy.route(task, placements, {})
        p = decision.placement
        result.route = f"{p.hive_name}/{p.device}"
        result.route_source = decision.source
        result.route_reason = decision.reason
    result.runtime_errors = list(dict.fromkeys(policy.errors))
    return result


def _base(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    current = inference_selectors.scheduler_script_current()
    served = hive_selectors.served_models()
    return {
        "face": "ui",
        "section": "scheduler",
        "title": "Scheduler · rbee",
        "current": current,
        "source": current.source if current is not None else STARTER,
        "history": list(inference_selectors.scheduler_script_history()),
        "models": [s.model.name for s in served],
        "tiers": TIERS,
        "model": "",
        "tier": "free",
        "check_seconds": settings.RBEE_SCHEDULER_CHECK_SECONDS,
        **_decisions_context(),
        **extra,
    }


def _decisions_context() -> dict[str, Any]:
    rows = [{**vars(d), "when": datetime.fromtimestamp(d.at, tz=UTC)} for d in decisions.recent(50)]
    c = scheduler.counters
    return {
        "decisions": rows,
        "counts": {
            "script": c["script_decisions"],
            "default": c["default_decisions"],
            "timeouts": c["timeouts"],
            "fallbacks": c["fallbacks"],
            "errors": c["script_errors"],
            "rejections": c["rejections"],
        },
        "version_in_force": scheduler.version_in_force(),
    }


def _posted_source(request: HttpRequest) -> str:
    """The posted script; one longer than the management API takes is refused (never
    cut short: a truncated script could compile and do something else)."""
    source = request.POST.get("source", "")
    if len(source) > MAX_SOURCE:
        raise ScriptError(f"the script is longer than {MAX_SOURCE:,} characters", line=1, column=1)
    return source


@operator_page("scheduler")
@require_GET
def scheduler_page(request: HttpRequest) -> HttpResponse:
    """GET /ui/scheduler."""
    return render(request, "ui/scheduler.html", _base(request))


@operator_page("scheduler")
@require_POST
def check(request: HttpRequest) -> HttpResponse:
    """POST /ui/scheduler/check: the result as a fragment for htmx, else the whole page
    with the posted script still in the editor. Always 200: the check itself worked."""
    model = request.POST.get("model", "")[:200]
    tier = request.POST.get("tier", "free")
    try:
        source = _posted_source(request)
    except ScriptError as exc:
        source = ""
        result = CheckResult(error=exc.message, line=1, column=1)
    else:
        result = check_script(source, model_name=model, tier=tier)
    if request.headers.get("HX-Request") == "true":
        return render(request, "ui/scheduler_check.html", {"check": result})
    context = _base(request, source=source, check=result, model=model, tier=result.tier)
    return render(request, "ui/scheduler.html", context)


@operator_page("scheduler")
@require_POST
def reload(request: HttpRequest) -> HttpResponse:
    """POST /ui/scheduler/reload: store the script as the new version (audited as
    scheduler.reload by the signed-in operator); a broken one is refused (400) and the
    running one stays."""
    source = request.POST.get("source", "")
    try:
        row = scheduler_script_store(
            source=_posted_source(request),
            origin=f"web: {request.user.get_username()}",
            actor=user_actor(request.user),
            reload=True,
        )
    except ScriptError as exc:
        result = CheckResult(error=exc.message, line=exc.data["line"], column=exc.data["column"])
        context = _base(request, source=source[:MAX_SOURCE], check=result, refused=True)
        return render(request, "ui/scheduler.html", context, status=400)
    messages.success(
        request,
        f"Scheduler v{row.pk} stored; every queen switches to it within "
        f"{settings.RBEE_SCHEDULER_CHECK_SECONDS:g} s.",
    )
    return HttpResponseRedirect("/ui/scheduler")


@operator_page("scheduler")
@require_GET
def decisions_fragment(request: HttpRequest) -> HttpResponse:
    """GET /ui/scheduler/decisions: the recent decisions table (refreshed by htmx)."""
    return render(request, "ui/scheduler_decisions.html", _decisions_context())


def _version_or_404(version: int) -> Any:
    row = inference_selectors.scheduler_script_get(version=version)
    if row is None:
        raise Http404("no such scheduler script version")
    return row


@operator_page("scheduler")
@require_GET
def version_page(request: HttpRequest, version: int) -> HttpResponse:
    """GET /ui/scheduler/v/<version>: one stored version, read only."""
    row = _version_or_404(version)
    current = inference_selectors.scheduler_script_current()
    return render(
        request,
        "ui/scheduler_version.html",
        {
            "face": "ui",
            "section": "scheduler",
            "title": f"Scheduler v{row.pk} · rbee",
            "row": row,
            "in_force": current is not None and current.pk == row.pk,
        },
    )


@operator_page("scheduler")
@require_POST
def restore(request: HttpRequest, version: int) -> HttpResponse:
    """POST /ui/scheduler/v/<version>/restore: store that version's text as a new version
    (the history only grows; audited like any reload)."""
    row = _version_or_404(version)
    try:
        new = scheduler_script_store(
            source=row.source,
            origin=f"web: {request.user.get_username()} restored v{row.pk}",
            actor=user_actor(request.user),
            reload=True,
        )
    except ScriptError as exc:  # stored versions compiled once; the engine may have changed
        messages.error(request, f"v{row.pk} no longer compiles: {exc.message}")
        return HttpResponseRedirect(f"/ui/scheduler/v/{row.pk}")
    messages.success(
        request,
        f"v{row.pk} restored as v{new.pk}; every queen switches to it within "
        f"{settings.RBEE_SCHEDULER_CHECK_SECONDS:g} s.",
    )
    return HttpResponseRedirect("/ui/scheduler")


urlpatterns = [
    path("scheduler", scheduler_page, name="ui-scheduler"),
    path("scheduler/check", check, name="ui-scheduler-check"),
    path("scheduler/reload", reload, name="ui-scheduler-reload"),
    path("scheduler/decisions", decisions_fragment, name="ui-scheduler-decisions"),
    path("scheduler/v/<int:version>", version_page, name="ui-scheduler-version"),
    path("scheduler/v/<int:version>/restore", restore, name="ui-scheduler-restore"),
]
