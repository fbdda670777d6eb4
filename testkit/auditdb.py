"""Getting round the audit log's append-only triggers, as a database superuser would.

Tests only. `allow_flush()` lets Django's test flush (TRUNCATE on PostgreSQL, DELETE on
SQLite, after every transactional test) empty the audit tables; `superuser()` opens a
window in which a test may edit, delete or restore rows, to prove that `rbee audit
verify` catches it. The application itself has no such path.
"""

from __future__ import annotations

import importlib
from typing import Any

_AUDIT_TABLES = ("gdpr_audit_event", "gdpr_audit_leaf")


def _migration() -> Any:
    return importlib.import_module("gdpr.migrations.0001_audit")


def _wrap(connection: Any, sql: list[str]) -> list[str]:
    if connection.vendor == "postgresql":
        return [
            "SET session_replication_role = replica",
            *sql,
            "SET session_replication_role = DEFAULT",
        ]
    if connection.vendor == "sqlite":
        m = _migration()
        return [*m.SQLITE_BACKWARD, *sql, *m.SQLITE_FORWARD]
    return sql


def allow_flush() -> None:
    """Patch the database operations' flush so it passes the audit triggers."""
    from django.db import connections

    for conn in connections.all():
        ops_cls = type(conn.ops)
        if getattr(ops_cls, "_rbee_audit_flush", False):
            continue
        original = ops_cls.sql_flush

        def sql_flush(
            self: Any, style: Any, tables: Any, *a: Any, _o: Any = original, **kw: Any
        ) -> list[str]:
            sql = list(_o(self, style, tables, *a, **kw))
            if sql and any(t in tables for t in _AUDIT_TABLES):
                return _wrap(self.connection, sql)
            return sql

        ops_cls.sql_flush = sql_flush  # type: ignore[method-assign]
        ops_cls._rbee_audit_flush = True  # type: ignore[attr-defined]


def superuser_sql(vendor: str) -> tuple[list[str], list[str]]:
    """SQL that turns the audit triggers off for this connection, and back on, as a
    database superuser would ("postgresql" or "sqlite")."""
    if vendor == "postgresql":
        return (
            ["SET session_replication_role = replica"],
            ["SET session_replication_role = DEFAULT"],
        )
    m = _migration()
    return list(m.SQLITE_BACKWARD), list(m.SQLITE_FORWARD)
