"""The live fleet page (/ui) over a large fleet: what one render costs, what a push
weighs, and how many renders open sockets cost while heartbeats flow.

    python bench/web_fleet.py [--hives 200] [--workers 4] [--runs 5] [--sockets 1,8,32]
                              [--seconds 6] [--db postgres://postgres@127.0.0.1:5432/] [--sqlite]

On a fresh database of its own (PostgreSQL by default, dropped afterwards; `--sqlite`: a
file in a temporary RBEE_HOME) it creates `--hives` online hives with 4 GPUs each and
`--workers` ready workers per hive, then prints:

* one fleet render: the snapshot (queries), the whole `#fleet-live` template (what every
  socket rendered on its own for every push before renders were shared), the pieces
  (web.ui.live.render_parts) with no card cached, and with one hive's card changed
  (a heartbeat), with the bytes each sends;
* sockets x renders: `--sockets` fleet sockets of the real ASGI application
  (web.ui.consumers.FleetConsumer, the in-memory channel layer) while every hive sends
  a heartbeat every 5 s through hives.services.hive_heartbeat (its GPU memory moving),
  for `--seconds`: renders done by the process, bytes received per socket. The former
  design rendered once per socket per burst (about 3 a second each while heartbeats flow).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.benchdb import bench_database, h100s  # noqa: E402
from testkit.benchtime import timed  # noqa: E402

PASSWORD = "pw-123456789"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hives", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sockets", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/")
    ap.add_argument("--sqlite", action="store_true")
    args = ap.parse_args()

    with bench_database("fleet", sqlite=args.sqlite, server=args.db) as backend:
        from django.db import connection, connections
        from django.template.loader import render_to_string
        from django.test.utils import CaptureQueriesContext
        from django.utils import timezone

        from hives.models import CatalogModel, Hive, Worker
        from kernel import secrets
        from web.ui.live import fleet_snapshot, render_parts

        print(
            f"fleet page benchmark on {backend}; {args.hives} hives x 4 GPUs x "
            f"{args.workers} workers; CPython {sys.version.split()[0]}"
        )
        models = [
            CatalogModel.objects.create(name=f"m{i}", capability="text-gen", engine="echo")
            for i in range(args.workers)
        ]
        hives = []
        for n in range(args.hives):
            made = secrets.make(Hive.TOKEN_KIND)
            hives.append(
                Hive.objects.create(
                    name=f"hive-{n:03d}",
                    token_prefix=made.prefix,
                    token_hash=made.digest,
                    status=Hive.Status.ONLINE,
                    channel_name=f"specific.bench!{n}",
                    version="0.9.0",
                    devices=h100s(4, 1000, 50),
                    telemetry={"inflight": 0},
                )
            )
        Hive.objects.update(last_seen_at=timezone.now())
        Worker.objects.bulk_create(
            Worker(hive=h, model=m, device=f"cuda:{i % 4}", state="ready", slots=4)
            for h in hives
            for i, m in enumerate(models)
        )

        # --- one render ---------------------------------------------------------------
        snap_s, fleet = timed(fleet_snapshot, args.runs)
        with CaptureQueriesContext(connection) as q:
            fleet_snapshot()
        whole_s, whole = timed(
            lambda: render_to_string("ui/fleet_live.html", {"fleet": fleet, "csrf_token": ""}),
            args.runs,
        )
        import web.ui.live as live

        def cold() -> Any:
            live._cards.clear()
            return render_parts(fleet)

        cold_s, parts = timed(cold, args.runs)
        render_parts(fleet)  # every card cached

        # Fresh snapshots (as each render reads one), one hive's GPU memory moved in each.
        beats = [copy.deepcopy(fleet) for _ in range(args.runs + 1)]
        for i, f in enumerate(beats):
            f.hives[7].devices[0].used_mb = 2000 + i

        def one_changed() -> Any:
            return render_parts(beats.pop())

        before = render_parts(copy.deepcopy(fleet))
        warm_s, warm = timed(one_changed, args.runs)
        diff = warm.changed_since(before) or ""
        rows = [
            (f"snapshot ({len(q)} queries)", snap_s, None),
            ("whole #fleet-live template (former: per socket)", whole_s, len(whole)),
            ("pieces, no card cached (a connect after a restart)", cold_s, len(parts.full)),
            ("pieces, one hive changed (a heartbeat): its push", warm_s, len(diff)),
            ("snapshot + pieces, one hive changed", snap_s + warm_s, None),
        ]
        print(f"{'one render':<54} {'time':>9} {'bytes':>10}")
        for label, secs, size in rows:
            print(f"  {label:<52} {secs * 1e3:>6.1f} ms {'' if size is None else f'{size:,}':>10}")

        # --- sockets x renders -----------------------------------------------------------
        for n in (int(x) for x in args.sockets.split(",") if x.strip()):
            connections.close_all()
            print(asyncio.run(sockets_run(n, args.seconds, hives)))


async def sockets_run(n: int, seconds: float, hives: list[Any]) -> str:
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.conf import settings
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    from hives import services as hive_services
    from rbee.asgi import application
    from web.ui import consumers

    def sessions() -> list[str]:
        perm = Permission.objects.get(codename="operate_fleet")
        keys = []
        for i in range(n):
            name = f"ops-{n}-{i // consumers.MAX_PER_USER}"
            user = User.objects.filter(username=name).first()
            if user is None:
                user = User.objects.create_user(name, password=PASSWORD, is_staff=True)
                user.user_permissions.add(perm)
            c = Client()
            assert c.login(username=name, password=PASSWORD)
            keys.append(str(c.cookies[settings.SESSION_COOKIE_NAME].value))
        return keys

    keys = await database_sync_to_async(sessions)()
    socks = []
    for key in keys:
        headers = [
            (b"host", b"testserver"),
            (b"origin", b"http://testserver"),
            (b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode()),
        ]
        comm = WebsocketCommunicator(application, "/ui/ws/fleet", headers=headers)
        connected, code = await comm.connect(timeout=30)
        assert connected, code
        await comm.receive_from(timeout=30)
        socks.append(comm)
    feed = consumers.fleet_feed()
    renders0 = feed.renders
    received = [0] * n

    async def drain(i: int, comm: Any) -> None:
        while True:
            try:
                received[i] += len(await comm.receive_from(timeout=seconds + 5))
            except TimeoutError:
                return

    drains = [asyncio.ensure_future(drain(i, c)) for i, c in enumerate(socks)]

    def beat(i: int, used: int) -> None:
        h = hives[i]
        hive_services.hive_heartbeat(
            hive_id=h.pk,
            channel_name=h.channel_name,
            beat={"devices": h100s(4, used, 50), "inflight": used % 3},
        )

    interval = 5.0 / len(hives)  # every hive once per 5 s
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        await database_sync_to_async(beat)(k % len(hives), 1000 + k)
        k += 1
        wait = start + k * interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
    elapsed = time.monotonic() - start
    await asyncio.sleep(1.0)
    renders = feed.renders - renders0
    for d in drains:
        d.cancel()
    for comm in socks:
        await comm.disconnect()
    per_socket = statistics.mean(received) / elapsed if received else 0.0
    return (
        f"{n:>3} socket(s), {k} heartbeats in {elapsed:.1f} s: {renders} renders "
        f"({renders / elapsed:.1f}/s for all sockets; last {feed.render_cost * 1e3:.0f} ms), "
        f"{per_socket / 1024:.0f} KiB/s per socket"
    )


if __name__ == "__main__":
    main()
