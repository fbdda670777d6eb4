"""Reads for hives, their workers and the model catalog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from hives.models import CatalogModel, Hive, Worker
from rbee import secrets


@dataclass(frozen=True)
class Placement:
    """A worker that can take a job now, and the channel that reaches its hive."""

    worker_id: int
    hive_id: int
    hive_name: str
    channel_name: str
    device: str
    inflight: int


def hive_for_token(plaintext: str) -> Hive | None:
    prefix = secrets.parse_prefix(Hive.TOKEN_KIND, plaintext)
    hive = Hive.objects.filter(token_prefix=prefix).first() if prefix else None
    if hive is None:
        secrets.matches(plaintext, secrets.digest("none"))
        return None
    return hive if secrets.matches(plaintext, hive.token_hash) else None


def _fresh_after() -> object:
    return timezone.now() - timedelta(seconds=settings.RBEE_HIVE_STALE_AFTER)


def live_hives() -> QuerySet[Hive]:
    return Hive.objects.filter(status=Hive.Status.ONLINE, last_seen_at__gte=_fresh_after()).exclude(
        channel_name=""
    )


def hive_list() -> QuerySet[Hive]:
    return Hive.objects.order_by("name")


def catalog_model_get(*, name: str) -> CatalogModel | None:
    return CatalogModel.objects.filter(name=name).first()


def served_models() -> list[tuple[CatalogModel, list[str]]]:
    """Models with at least one ready worker on a live hive, and the hives serving them."""
    rows = (
        Worker.objects.filter(state=Worker.State.READY, hive__in=live_hives())
        .select_related("model", "hive")
        .order_by("model__name", "hive__name")
    )
    out: dict[str, tuple[CatalogModel, list[str]]] = {}
    for w in rows:
        entry = out.setdefault(w.model.name, (w.model, []))
        if w.hive.name not in entry[1]:
            entry[1].append(w.hive.name)
    return list(out.values())


def placements_for_model(
    *, model: CatalogModel, exclude_hive_ids: set[int] | None = None
) -> list[Placement]:
    rows = (
        Worker.objects.filter(model=model, state=Worker.State.READY, hive__in=live_hives())
        .select_related("hive")
        .only("id", "device", "inflight", "hive__id", "hive__name", "hive__channel_name")
    )
    out = [
        Placement(
            worker_id=w.id,
            hive_id=w.hive.id,
            hive_name=w.hive.name,
            channel_name=w.hive.channel_name,
            device=w.device,
            inflight=w.inflight,
        )
        for w in rows
        if not exclude_hive_ids or w.hive.id not in exclude_hive_ids
    ]
    return out
