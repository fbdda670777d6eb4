"""Processes that start together on a fresh database all come up: they take turns to
migrate it (rbee.cli._common.migrate), on PostgreSQL (an advisory lock) and on the
embedded default's SQLite (a lock file). Run at once without that, all but one failed on
tables the first had made ("duplicate key value violates unique constraint
pg_type_typname_nsp_index")."""

from __future__ import annotations

import subprocess
import sys

from testkit.live import ROOT, Deployment


def test_commands_started_together_on_a_fresh_database_all_migrate_it() -> None:
    dep = Deployment()  # a database of its own, not migrated yet
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "rbee.cli", "tenant", "list"],
                env=dep.env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
        assert [code for code, _ in results] == [0, 0, 0], [err[-2000:] for _, err in results]
        applied = dep.sql("select count(*) from django_migrations")[0][0]
        names = dep.sql(
            "select count(*) from (select distinct app, name from django_migrations) d"
        )[0][0]
        assert applied == names > 0  # every migration applied once
    finally:
        dep.close()
