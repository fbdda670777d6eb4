"""A database of its own for a benchmark: a fresh PostgreSQL database (dropped afterwards)
or, with `sqlite=True`, the embedded default in a temporary RBEE_HOME; Django set up on it
and migrated. Shared by the benchmarks under bench/ so each times its own work only."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/"


@contextmanager
def bench_database(name: str, *, sqlite: bool, server: str = DEFAULT_SERVER) -> Iterator[str]:
    """Set up Django on a new database for the benchmark `name`; yields "PostgreSQL" or
    "SQLite". The test client's host (testserver) is allowed."""
    home = Path(tempfile.mkdtemp(prefix=f"rbee-bench-{name}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RBEE_", "DJANGO_"))}
    env["RBEE_HOME"] = str(home)
    admin = server.rstrip("/") + "/postgres"
    db_name = ""
    if not sqlite:
        import psycopg

        db_name = f"rbee_bench_{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db_name}"')
        env["RBEE_DATABASE_URL"] = server.rstrip("/") + "/" + db_name
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "rbee.settings"
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
        yield "PostgreSQL" if db_name else "SQLite"
    finally:
        from django.db import connections

        connections.close_all()
        if db_name:
            import psycopg

            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        shutil.rmtree(home, ignore_errors=True)


def h100s(count: int, used_mb: int, utilization: int = 40) -> list[dict[str, Any]]:
    """A heartbeat's telemetry for `count` H100s (the benchmarks' busy fleet)."""
    return [
        {
            "index": i,
            "kind": "cuda",
            "name": "NVIDIA H100 80GB HBM3",
            "gpu_type": "H100",
            "memory_total_mb": 81559,
            "memory_used_mb": used_mb + 1000 * i,
            "utilization": utilization + i,
        }
        for i in range(count)
    ]
