from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from hives import selectors
from rbee.db import db


def _health() -> dict[str, object]:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
    hives = [
        {
            "name": h.name,
            "region": h.region,
            "models": sorted(w.model.name for w in h.workers.all() if w.state == "ready"),
        }
        for h in selectors.live_hives().prefetch_related("workers__model").order_by("name")
    ]
    return {"status": "ok", "hives": hives}


async def healthz(request: HttpRequest) -> HttpResponse:
    """200 once the queen serves and its database answers; lists the connected hives."""
    try:
        body = await db(_health)
    except Exception as exc:
        return JsonResponse({"status": "unavailable", "reason": type(exc).__name__}, status=503)
    return JsonResponse(body)
