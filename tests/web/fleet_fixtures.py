"""A small fleet in the database, as hives would have reported it, for the /ui tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Permission, User
from django.utils import timezone

from hives.models import CatalogModel, Hive, Worker
from kernel import secrets

PASSWORD = "pw-123456789"
CODENAMES = {
    "fleet": "operate_fleet",
    "scheduler": "operate_scheduler",
    "tenants": "operate_tenants",
    "audit": "read_audit",
}

RTX = {
    "index": 0,
    "kind": "cuda",
    "name": "NVIDIA GeForce RTX 4090",
    "gpu_type": "RTX4090",
    "memory_total_mb": 24564,
    "memory_free_mb": 6140,
    "memory_used_mb": 18424,
    "utilization": 87,
}
CPU = {
    "index": 0,
    "kind": "cpu",
    "name": "AMD Ryzen 9 7950X",
    "gpu_type": "CPU",
    "memory_total_mb": 65536,
    "memory_free_mb": 60000,
    "utilization": None,
}


def operator(username: str, *areas: str) -> User:
    user = User.objects.create_user(username, f"{username}@rbee.example", PASSWORD, is_staff=True)
    for area in areas:
        user.user_permissions.add(Permission.objects.get(codename=CODENAMES[area]))
    return user


def hive(
    name: str,
    *,
    online: bool = True,
    age_s: float = 1.0,
    devices: list[dict[str, Any]] | None = None,
    telemetry: dict[str, Any] | None = None,
) -> Hive:
    made = secrets.make(Hive.TOKEN_KIND)
    return Hive.objects.create(
        name=name,
        token_prefix=made.prefix,
        token_hash=made.digest,
        status=Hive.Status.ONLINE if online else Hive.Status.OFFLINE,
        channel_name=f"specific.test!{name}" if online else "",
        last_seen_at=timezone.now() - timedelta(seconds=age_s),
        connected_at=timezone.now() - timedelta(hours=3),
        version="0.9.0",
        devices=devices if devices is not None else [CPU],
        telemetry=telemetry or {},
    )


def worker(h: Hive, model: str, device: str, state: str, **fields: Any) -> Worker:
    m, _ = CatalogModel.objects.get_or_create(
        name=model, defaults={"capability": "text-gen", "engine": "echo", "source": ""}
    )
    return Worker.objects.create(hive=h, model=m, device=device, state=state, **fields)


def seed_fleet() -> dict[str, Any]:
    """gaming-pc (RTX 4090 with SDXL pinned and ready, its CPU free), old-server
    (stale), mac-studio (offline), like the dashboard mock-up of the seeds."""
    now = timezone.now().timestamp()
    gaming = hive(
        "gaming-pc",
        devices=[CPU, RTX],
        telemetry={"inflight": 2, "ready_since": {"sdxl|cuda:0": [4242, now - 9240]}},
    )
    sdxl = worker(
        gaming,
        "sdxl",
        "cuda:0",
        "ready",
        pinned=True,
        memory_bytes=18 * 2**30,
        inflight=1,
        slots=2,
    )
    big = worker(
        gaming,
        "llama-3-70b",
        "cpu",
        "refused",
        message="llama-3-70b needs 40.0 GiB on cpu; 6.0 GiB free (sdxl holds 18.0 GiB)",
    )
    stale = hive("old-server", age_s=120)
    offline = hive("mac-studio", online=False, age_s=4000)
    return {"gaming": gaming, "sdxl": sdxl, "big": big, "stale": stale, "offline": offline}
