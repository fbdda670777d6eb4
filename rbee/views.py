from __future__ import annotations

import hmac
import ipaddress
from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from hives import selectors
from hives.protocol import WorkerState
from kernel.aio import db
from tenants.permissions import may_operate
from tenants.selectors import KeyRejected, caller_from_key


def _bearer(request: HttpRequest) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _is_staff(request: HttpRequest) -> bool:
    """Whether the request carries the session of an operator holding the fleet
    permission (the /v1 app runs no middleware, so the session is read here). Sync: the
    database."""
    key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not key:
        return False
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(key)
    user = get_user(request)  # type: ignore[arg-type]
    return may_operate(user, "fleet")


def holds_metrics_token(request: HttpRequest) -> bool:
    """Whether the request presents RBEE_METRICS_TOKEN (compared in constant time). No
    database: a scraper is told apart even while the database does not answer."""
    token = settings.RBEE_METRICS_TOKEN
    presented = _bearer(request)
    return bool(token and presented and hmac.compare_digest(presented.encode(), token.encode()))


def may_see_internals(request: HttpRequest) -> bool:
    """In production, /metrics and the /healthz inventory are for the holder of
    RBEE_METRICS_TOKEN (compared in constant time) and for fleet operators; nobody else, loopback
    included (a proxy on this machine makes every client look local). Sync: the database."""
    return holds_metrics_token(request) or _is_staff(request)


def _may_see_inventory(request: HttpRequest) -> bool:
    """Hive names, regions and models are for this machine and for operators' keys; a
    tenant's key, or a load balancer probing from elsewhere, learns only that the queen
    is up."""
    if settings.RBEE_PRODUCTION:
        return may_see_internals(request)
    try:
        if ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "").is_loopback:
            return True
    except ValueError:
        pass
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return False
    try:
        caller = caller_from_key(key.strip())
    except KeyRejected:
        return False
    return caller.operator  # tenants' keys never learn hive names


def _health(request: HttpRequest) -> dict[str, object]:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
    if not _may_see_inventory(request):
        return {"status": "ok"}
    hives = [
        {
            "name": h.name,
            "region": h.region,
            "models": sorted(w.model.name for w in h.workers.all() if w.state == WorkerState.READY),
            "workers": [
                {"model": w.model.name, "device": w.device, "state": w.state, "message": w.message}
                for w in sorted(h.workers.all(), key=lambda w: (w.model.name, w.device))
            ],
        }
        for h in selectors.live_hives().prefetch_related("workers__model").order_by("name")
    ]
    return {"status": "ok", "hives": hives}


async def healthz(request: HttpRequest) -> HttpResponse:
    """200 once the queen serves and its database answers; lists the connected hives to
    local callers and operators' keys."""
    try:
        body = await db(_health, request)
    except Exception as exc:
        return JsonResponse({"status": "unavailable", "reason": type(exc).__name__}, status=503)
    return JsonResponse(body)
