"""/ui: the fleet, live. The page renders the whole fleet server-side; a websocket
(web/ui/consumers.py) pushes the same fragment again whenever the hives app announces a
change. The forms post here (CSRF, the operators' fleet permission) and call the hives
app's services, audited with the operator as actor, as the management API does."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from hives import selectors as hive_selectors
from hives import services as hive_services
from hives.agent.catalog import BUNDLED
from hives.errors import HiveError, HiveErrorCode
from hives.models import CatalogModel, Worker
from tenants.actors import user_actor
from web.auth import operator_page
from web.ui import login_link
from web.ui.live import device_names, fleet_snapshot

NOT_FOUND_CODES = {HiveErrorCode.UNKNOWN_HIVE, HiveErrorCode.NOT_FOUND, HiveErrorCode.NO_WORKER}


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    fleet = fleet_snapshot()
    catalog = sorted({m.name for m in CatalogModel.objects.all()} | set(BUNDLED))
    return {
        "face": "ui",
        "section": "fleet",
        "title": "Fleet · rbee",
        "fleet": fleet,
        "catalog": catalog,
        "form": {},
        "error": "",
        "error_form": "",
        **extra,
    }


def _page(request: HttpRequest, status: int = 200, **extra: Any) -> HttpResponse:
    return render(request, "ui/fleet.html", _context(request, **extra), status=status)


def _refused(request: HttpRequest, which: str, exc: HiveError) -> HttpResponse:
    """A domain error, on the page beside the form that caused it, with a 4xx."""
    status = 404 if exc.code in NOT_FOUND_CODES else 400
    return _page(request, status, error=exc.message, error_form=which, form=request.POST)


@require_GET
@operator_page("fleet")
def fleet(request: HttpRequest) -> HttpResponse:
    # ?hive=NAME (a hive card's "Spawn worker" link) preselects that hive in the forms.
    return _page(request, form={"hive": request.GET.get("hive", "")})


def _spec_for(model: str) -> str:
    """What to ask the hive for: a bundled name as it is, a catalog model by its own
    definition (NAME=ENGINE:SOURCE), anything else as typed (checked by the service)."""
    if model in BUNDLED or "=" in model:
        return model
    known = CatalogModel.objects.filter(name=model).first()
    if known is not None and known.engine:
        return f"{known.name}={known.engine}:{known.source}"
    return model


@require_POST
@operator_page("fleet")
def spawn(request: HttpRequest) -> HttpResponse:
    """POST /ui/spawn: run a model on a hive's device (an assignment: the hive loads it
    within a heartbeat, and a pinned one comes back there after restarts)."""
    hive_name = request.POST.get("hive", "").strip()
    model = request.POST.get("model", "").strip()
    device = request.POST.get("device", "").strip() or "cpu"
    pinned = request.POST.get("pinned") == "on"
    try:
        if not model:
            raise HiveError(HiveErrorCode.INVALID_SPEC, "choose a model to run")
        hive = hive_selectors.hive_list().filter(name=hive_name).first()
        if hive is None:
            raise HiveError(HiveErrorCode.UNKNOWN_HIVE, f"no hive named {hive_name!r}")
        reported = device_names(hive.devices)
        if reported and device not in reported:
            raise HiveError(
                HiveErrorCode.INVALID_DEVICE,
                f"hive {hive_name!r} has no device {device!r} (it reports "
                f"{', '.join(sorted(reported))})",
            )
        assignment = hive_services.assignment_add(
            hive_name=hive_name,
            spec=_spec_for(model),
            device=device,
            pinned=pinned,
            actor=user_actor(request.user),
        )
    except HiveError as exc:
        return _refused(request, "spawn", exc)
    messages.success(
        request,
        f"Spawning {assignment.model_name} on {hive_name}:{assignment.device}"
        f"{' (pinned)' if assignment.pinned else ''}: the hive loads it within a heartbeat.",
    )
    return HttpResponseRedirect("/ui/")


@require_POST
@operator_page("fleet")
def worker_action(request: HttpRequest, worker_id: int) -> HttpResponse:
    """POST /ui/workers/<id>/action (action=start|stop|restart)."""
    worker = Worker.objects.select_related("hive", "model").filter(pk=worker_id).first()
    try:
        if worker is None:
            raise HiveError(HiveErrorCode.NOT_FOUND, "no such worker")
        hive_services.worker_command_create(
            hive_name=worker.hive.name,
            model_name=worker.model.name,
            device=worker.device,
            action=request.POST.get("action", ""),
            actor=user_actor(request.user),
        )
    except HiveError as exc:
        return _refused(request, "worker", exc)
    action = request.POST["action"]
    messages.success(
        request,
        f"{action.capitalize()} sent to {worker.model.name} on {worker.hive.name}:"
        f"{worker.device} with its hive's next heartbeat.",
    )
    return HttpResponseRedirect("/ui/")


@require_POST
@operator_page("fleet")
def download(request: HttpRequest) -> HttpResponse:
    """POST /ui/downloads: fetch a Hub repo onto a hive (progress shows live; an
    unfinished one resumes when the hive reconnects, a failed one by asking again)."""
    try:
        row = hive_services.model_download_create(
            hive_name=request.POST.get("hive", "").strip(),
            source=request.POST.get("source", ""),
            actor=user_actor(request.user),
        )
    except HiveError as exc:
        return _refused(request, "download", exc)
    messages.success(request, f"Downloading {row.source} on {row.hive.name}.")
    return HttpResponseRedirect("/ui/#downloads")


@require_POST
@operator_page("fleet")
def alias(request: HttpRequest) -> HttpResponse:
    """POST /ui/aliases: another name for a catalog model (e.g. gpt-4o-mini)."""
    name = request.POST.get("alias", "").strip()
    target = request.POST.get("target", "").strip()
    try:
        if not target:
            raise HiveError(HiveErrorCode.UNKNOWN_MODEL, "choose the model the alias names")
        row = hive_services.model_alias_set(
            alias=name, target=target, actor=user_actor(request.user)
        )
    except HiveError as exc:
        return _refused(request, "alias", exc)
    messages.success(request, f"{row.name} now names {row.model.name}.")
    return HttpResponseRedirect("/ui/")


@require_POST
@operator_page("fleet")
def assignment_remove(request: HttpRequest) -> HttpResponse:
    """POST /ui/assignments/remove: stop running a model the operator put on a hive."""
    hive_name = request.POST.get("hive", "").strip()
    model = request.POST.get("model", "").strip()
    removed = hive_services.assignment_remove(
        hive_name=hive_name, model_name=model, actor=user_actor(request.user)
    )
    if not removed:
        exc = HiveError(HiveErrorCode.NOT_FOUND, f"{model!r} is not assigned to {hive_name!r}")
        return _refused(request, "worker", exc)
    messages.success(request, f"Removed {model} from {hive_name}: its worker stops.")
    return HttpResponseRedirect("/ui/")


urlpatterns = [
    path("", fleet, name="ui-fleet"),
    path("spawn", spawn, name="ui-spawn"),
    path("workers/<int:worker_id>/action", worker_action, name="ui-worker-action"),
    path("downloads", download, name="ui-download"),
    path("aliases", alias, name="ui-alias"),
    path("assignments/remove", assignment_remove, name="ui-assignment-remove"),
    *login_link.urlpatterns,
]
