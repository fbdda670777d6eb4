"""`rbee audit verify` (the real command, on a real deployment's database) catches a
superuser who edits a row, deletes the newest rows, swaps two rows, or restores an older
copy, and names the first bad index or the checkpoint the log no longer extends.

The attacker here is thorough: the triggers are got round as a superuser would
(session_replication_role on PostgreSQL, dropping them on SQLite), and the tree's stored
leaf hashes are rewritten to match the edit, so only the checkpoints outside the
database (their signed roots and the leaf hashes written beside them) give it away.
Runs on the configured database: SQLite without RBEE_DATABASE_URL, PostgreSQL with it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from testkit.auditdb import superuser_sql
from testkit.live import ROOT, Deployment

POPULATE = """
import os, sys, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")
django.setup()
from gdpr import audit, subjects, ledger
start, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(start, start + n):
    audit.record("key.create", actor=subjects.user(f"op{i % 3}@example.com"), tenant_id=1 + i % 2,
                 subject=subjects.end_user("acme", f"u{i}"), personal={"ip": f"10.0.0.{i}"},
                 data={"prefix": f"k{i:04d}"}, request_id=f"req-{i}")
ledger.sequence()
"""


class Db:
    """The deployment's database, written to as its superuser."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.vendor = "sqlite" if dep.embedded else "postgresql"

    def connect(self) -> Any:
        if self.vendor == "postgresql":
            import psycopg

            return psycopg.connect(self.dep.env["RBEE_DATABASE_URL"], autocommit=True)
        import sqlite3

        conn = sqlite3.connect(self.dep.home / "rbee.sqlite3", isolation_level=None)
        return conn

    def tamper(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        before, after = superuser_sql(self.vendor)
        ph = "%s" if self.vendor == "postgresql" else "?"
        conn = self.connect()
        try:
            for sql in before:
                conn.execute(sql)
            for sql, params in statements:
                conn.execute(sql.replace("%s", ph), params)
            for sql in after:
                conn.execute(sql)
        finally:
            conn.close()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.dep.sql(sql)


def populate(dep: Deployment, start: int, n: int) -> None:
    subprocess.run(
        [sys.executable, "-c", POPULATE, str(start), str(n)],
        env=dep.env,
        cwd=ROOT,
        check=True,
        timeout=120,
    )


def verify(dep: Deployment) -> subprocess.CompletedProcess[str]:
    return dep.rbee("audit", "verify", check=False)


@pytest.fixture
def dep() -> Iterator[Deployment]:
    d = Deployment()
    try:
        assert verify(d).returncode == 0  # migrates
        populate(d, 0, 20)
        d.rbee("audit", "checkpoint")
        yield d
    finally:
        d.close()


def rehash(db: Db, index: int) -> tuple[str, tuple[Any, ...]]:
    """The statement that rewrites index's stored leaf hash to match its (edited) row."""
    from gdpr import ledger, merkle

    cols = ", ".join("e." + c for c in ledger._COLUMN_NAMES)
    (row,) = db.rows(
        f"SELECT {cols} FROM gdpr_audit_event e JOIN gdpr_audit_leaf l ON l.event_id = e.id "
        f'WHERE l."index" = {index}'
    )
    lh = merkle.leaf_hash(ledger.leaf_data(row))
    return ('UPDATE gdpr_audit_leaf SET leaf_hash = %s WHERE "index" = %s', (lh, index))


def event_at(db: Db, index: int) -> int:
    ((eid,),) = db.rows(f'SELECT event_id FROM gdpr_audit_leaf WHERE "index" = {index}')
    return int(eid)


def assert_named(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(pattern, proc.stderr), proc.stderr
    assert "ok:" not in proc.stdout


def test_an_untouched_log_verifies(dep: Deployment) -> None:
    populate(dep, 20, 5)  # appended after the checkpoint: checked against the stored hashes
    proc = verify(dep)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"ok: 25 events, root [0-9a-f]{64}\n", proc.stdout)


def test_an_edited_row_is_named(dep: Deployment) -> None:
    db = Db(dep)
    eid = event_at(db, 7)
    db.tamper(("UPDATE gdpr_audit_event SET data = %s WHERE id = %s", ('{"prefix":"evil"}', eid)))
    db.tamper(rehash(db, 7))  # and the stored hash to match: the sink still knows
    assert_named(verify(dep), rf"index 7 \(event {eid}\)")


def test_an_edit_after_the_last_checkpoint_is_named_by_the_stored_hash(dep: Deployment) -> None:
    populate(dep, 20, 5)
    db = Db(dep)
    eid = event_at(db, 22)
    db.tamper(("UPDATE gdpr_audit_event SET outcome = %s WHERE id = %s", ("denied", eid)))
    assert_named(verify(dep), rf"index 22 \(event {eid}\)")


def test_deleting_the_newest_rows_is_named(dep: Deployment) -> None:
    db = Db(dep)
    db.tamper(
        (
            "DELETE FROM gdpr_audit_event WHERE id IN "
            '(SELECT event_id FROM gdpr_audit_leaf WHERE "index" >= %s)',
            (15,),
        ),
        ('DELETE FROM gdpr_audit_leaf WHERE "index" >= %s', (15,)),
    )
    assert_named(verify(dep), r"checkpoint #1 \(size 20, .*\) is no longer extended .* index 15")


def test_swapping_two_rows_is_named(dep: Deployment) -> None:
    db = Db(dep)
    a, b = event_at(db, 4), event_at(db, 5)
    # Reorder the tree (the leaf table's event ids, through a free id) ...
    db.tamper(
        ('UPDATE gdpr_audit_leaf SET event_id = %s WHERE "index" = %s', (-1, 4)),
        ('UPDATE gdpr_audit_leaf SET event_id = %s WHERE "index" = %s', (a, 5)),
        ('UPDATE gdpr_audit_leaf SET event_id = %s WHERE "index" = %s', (b, 4)),
    )
    # ... with the stored hashes made to match the new order.
    db.tamper(rehash(db, 4), rehash(db, 5))
    assert_named(verify(dep), rf"index 4 \(event {b}\)")


def test_restoring_an_older_copy_is_named(dep: Deployment) -> None:
    db = Db(dep)
    backup = dep.home / "backup"
    if db.vendor == "sqlite":
        shutil.copy(dep.home / "rbee.sqlite3", backup)
    else:
        subprocess.run(
            ["pg_dump", "-Fc", "-f", str(backup), dep.env["RBEE_DATABASE_URL"]], check=True
        )
    populate(dep, 20, 10)
    dep.rbee("audit", "checkpoint")  # checkpoint #2: 30 events
    assert verify(dep).returncode == 0
    if db.vendor == "sqlite":
        for suffix in ("-wal", "-shm"):
            (dep.home / f"rbee.sqlite3{suffix}").unlink(missing_ok=True)
        shutil.copy(backup, dep.home / "rbee.sqlite3")
    else:
        import psycopg

        from testkit.live import _admin_url

        admin = _admin_url(dep.env["RBEE_DATABASE_URL"], "postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{dep.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dep.db_name}"')
        subprocess.run(["pg_restore", "-d", dep.env["RBEE_DATABASE_URL"], str(backup)], check=True)
    assert_named(verify(dep), r"checkpoint #2 \(size 30, .*\) is no longer extended .* index 20")
    # New events after the restore take the old indexes with other content: still named.
    populate(dep, 100, 12)
    assert_named(verify(dep), r"index 20 \(event \d+\)")


def checkpoints(dep: Deployment) -> list[str]:
    return sorted(p.name for p in (dep.home / "audit-checkpoints").glob("*.json"))


def test_checkpoint_refuses_to_sign_an_edited_log(dep: Deployment) -> None:
    """The review's attack: a row and its stored leaf hash edited under checkpoint #1,
    then the log grows: `rbee audit checkpoint` exits 1 and signs nothing."""
    db = Db(dep)
    eid = event_at(db, 7)
    db.tamper(("UPDATE gdpr_audit_event SET data = %s WHERE id = %s", ('{"prefix":"evil"}', eid)))
    db.tamper(rehash(db, 7))
    populate(dep, 20, 5)
    before = checkpoints(dep)
    assert before  # the sink is where we look
    res = dep.rbee("audit", "checkpoint", check=False)
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"checkpoint #1: the root of the first 20 stored events differs", res.stderr)
    assert "checkpoint #2" not in res.stdout
    assert checkpoints(dep) == before


def test_checkpoint_refuses_a_restored_backup_grown_past_it(dep: Deployment) -> None:
    db = Db(dep)
    backup = dep.home / "backup"
    if db.vendor == "sqlite":
        shutil.copy(dep.home / "rbee.sqlite3", backup)
    else:
        subprocess.run(
            ["pg_dump", "-Fc", "-f", str(backup), dep.env["RBEE_DATABASE_URL"]], check=True
        )
    populate(dep, 20, 10)
    dep.rbee("audit", "checkpoint")  # checkpoint #2: 30 events
    if db.vendor == "sqlite":
        for suffix in ("-wal", "-shm"):
            (dep.home / f"rbee.sqlite3{suffix}").unlink(missing_ok=True)
        shutil.copy(backup, dep.home / "rbee.sqlite3")
    else:
        import psycopg

        from testkit.live import _admin_url

        admin = _admin_url(dep.env["RBEE_DATABASE_URL"], "postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{dep.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dep.db_name}"')
        subprocess.run(["pg_restore", "-d", dep.env["RBEE_DATABASE_URL"], str(backup)], check=True)
    populate(dep, 100, 15)  # 35 events now, past checkpoint #2's 30, other content at 20..
    before = checkpoints(dep)
    assert before  # the sink is where we look
    res = dep.rbee("audit", "checkpoint", check=False)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "checkpoint #2: the root of the first 30 stored events differs" in res.stderr
    assert checkpoints(dep) == before
