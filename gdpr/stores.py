"""gdpr's own stores as providers: the requests themselves, and the files under RBEE_HOME
and the log directories (free text that may name anyone: searched for the subject's
identifiers, gdpr.providers.identifiers)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from gdpr import providers
from gdpr.providers import Erased, Provider
from gdpr.subjects import Subject
from kernel.paths import rbee_home

# Never searched: the database (its own providers answer for it), keys, our archives
# (the requests provider deletes the subject's), receipts (they name no one).
_SKIP_NAMES = re.compile(
    r"^(rbee\.sqlite3(-wal|-shm|-journal)?|secret_key|audit_.*key.*|\..*\.\d+.*)$"
)
_SKIP_DIRS = {"exports", "receipts", "static", "models", "checkpoints", "__pycache__"}
MAX_FILE_BYTES = 4 * 1024 * 1024 * 1024  # read a line at a time
MAX_EXPORT_LINES = 10_000


def roots() -> list[Path]:
    """RBEE_HOME and the log directories (RBEE_LOG_DIRS): where rbee writes files."""
    out = [rbee_home()]
    for d in getattr(settings, "RBEE_LOG_DIRS", []) or []:
        p = Path(d).expanduser()
        if p.is_dir() and p not in out:
            out.append(p)
    return out


def _files() -> Iterator[tuple[Path, Path]]:
    for root in roots():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            for name in filenames:
                path = Path(dirpath) / name
                if _SKIP_NAMES.match(name) or path.is_symlink() or not path.is_file():
                    continue
                if path.stat().st_size > MAX_FILE_BYTES:
                    continue
                yield root, path


def _pattern(subject: Subject) -> re.Pattern[bytes] | None:
    ids = sorted(providers.identifiers(subject), key=len, reverse=True)
    if not ids:
        return None
    return re.compile(b"|".join(re.escape(i.encode()) for i in ids), re.IGNORECASE)


def _lines(path: Path, pattern: re.Pattern[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """(line number, offset, line without its end) of every line naming the subject,
    read a line at a time (log files can be large)."""
    offset = 0
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            body = line.rstrip(b"\r\n")
            if pattern.search(body):
                yield n, offset, body
            offset += len(line)


def files_export(subject: Subject) -> list[dict[str, Any]]:
    """Every line of a file that names the subject: the file, the line number, the line."""
    pattern = _pattern(subject)
    out: list[dict[str, Any]] = []
    if pattern is None:
        return out
    for root, path in _files():
        for n, _, body in _lines(path, pattern):
            if len(out) >= MAX_EXPORT_LINES:
                return out
            out.append(
                {
                    "file": str(path.relative_to(root)),
                    "line": n,
                    "text": body.decode("utf-8", "replace"),
                }
            )
    return out


def _masked(line: bytes) -> bytes:
    """A line's replacement of the same length: "[erased]" and spaces."""
    tag = b"[erased]"
    return (tag + b" " * len(line))[: len(line)] if len(line) >= len(tag) else b"*" * len(line)


def files_erase(subject: Subject) -> Erased:
    """Overwrite, in place, every line that names the subject (all of it: a line about
    them may hold more of their data, an IP, a name) with "[erased]" and spaces of the
    same length. A log file a running process appends to keeps its length, so nothing
    it writes meanwhile is lost or overwritten (the file is never truncated or
    replaced), and the lines around stay as they were."""
    out = Erased(store="gdpr.files")
    pattern = _pattern(subject)
    if pattern is None:
        return out
    touched = 0
    for _, path in _files():
        hits = list(_lines(path, pattern))
        if not hits:
            continue
        with open(path, "r+b") as fh:
            for _, offset, body in hits:
                fh.seek(offset)
                fh.write(_masked(body))
            fh.flush()
            os.fsync(fh.fileno())
        touched += 1
        out.pseudonymised += len(hits)
    if touched:
        out.notes.append(f"{touched} file(s) rewritten in place: lines naming the subject erased")
    return out


def requests_export(subject: Subject) -> list[dict[str, Any]]:
    from gdpr import selectors

    return [selectors.request_data(r) for r in selectors.requests_of(subject=subject)]


def requests_erase(subject: Subject) -> Erased:
    from gdpr import services

    rows, files = services.requests_pseudonymise(subject=subject)
    return Erased(
        store="gdpr.requests",
        pseudonymised=rows,
        files_removed=files,
        notes=["request rows kept as proof of compliance (Art. 5(2)), naming a pseudonym"],
    )


def audit_export(subject: Subject) -> list[dict[str, Any]]:
    from gdpr import audit

    return audit.events_for_subject(subject)


def audit_erase(subject: Subject) -> Erased:
    """Destroy the subject's audit key (crypto-shredding): the events stay, the Merkle
    tree still verifies, and their sealed fields (e-mail, names, end-user id, IP) no
    longer decrypt."""
    from gdpr import audit

    existed = audit.shred(subject)
    return Erased(
        store="gdpr.audit",
        deleted=1 if existed else 0,
        notes=[
            "the subject's audit key destroyed: their sealed fields no longer decrypt; the "
            "events stay (tamper-evident log, 7 years)"
        ]
        if existed
        else ["no audit key for this subject"],
    )


def database_files_export(subject: Subject) -> list[dict[str, Any]]:
    return []  # the tables are every other store's; this one only cleans up after them


def database_files_erase(subject: Subject) -> Erased:
    """After every other store: rows deleted or rewritten leave their old bytes in the
    database's files until something overwrites them. On SQLite (the embedded
    default) the write-ahead log is checkpointed and truncated and the file rebuilt
    (VACUUM), so the subject is gone from the bytes on disk too. On PostgreSQL old row
    versions stay in the table files until (auto)vacuum reuses their space, and in WAL
    archives and backups for as long as the operator keeps those: said in the receipt."""
    from django.db import OperationalError, connection

    out = Erased(store="gdpr.database_files")
    if connection.vendor != "sqlite":
        out.notes.append(
            "PostgreSQL: old row versions are reclaimed by autovacuum; WAL archives and "
            "backups keep them for as long as the operator's backup retention"
        )
        return out
    if connection.in_atomic_block:
        out.notes.append("not rebuilt: inside a transaction (the next erasure does it)")
        return out
    import time

    with connection.cursor() as cur:
        for attempt in range(20):
            try:
                cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cur.execute("VACUUM")
                cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                break
            except OperationalError:  # another process is writing: try again shortly
                if attempt == 19:
                    raise
                time.sleep(0.25)
    out.files_removed = 0
    out.notes.append("SQLite: write-ahead log truncated and database file rebuilt (VACUUM)")
    return out


def register_providers() -> None:
    providers.register(
        Provider(
            name="gdpr.files",
            title="Files and logs",
            categories=("anything a log line or a file names: e-mail, username, end-user id",),
            purposes=("operating and troubleshooting the service (Art. 6(1)(f))",),
            retention="log files: as the operator rotates them; identifiers masked on erasure",
            data_subjects=("account holders", "tenants' end users"),
            export=files_export,
            erase=files_erase,
            phase=60,
        )
    )
    providers.register(
        Provider(
            name="gdpr.requests",
            title="Your data-protection requests",
            categories=("requests for access or erasure, their dates and outcome",),
            purposes=("answering data-subject requests (legal obligation, Art. 6(1)(c))",),
            retention="kept as proof of compliance; after an erasure they name a pseudonym "
            "and their archives are deleted",
            data_subjects=("account holders", "tenants' end users"),
            export=requests_export,
            erase=requests_erase,
            phase=95,
        )
    )
    providers.register(
        Provider(
            name="gdpr.database_files",
            title="Database files",
            categories=("every store above, as bytes on disk",),
            purposes=("storage of the records above",),
            retention="old bytes of erased rows: rebuilt away on SQLite at erasure; "
            "PostgreSQL: until vacuum reuses the space, and in backups per their retention",
            data_subjects=("account holders", "tenants' end users"),
            export=database_files_export,
            erase=database_files_erase,
            phase=100,  # after the audit key is destroyed
        )
    )
    providers.register(
        Provider(
            name="gdpr.audit",
            title="Audit log",
            categories=(
                "security and money events about or by you: e-mail, names, IP, end-user id "
                "(sealed per person)",
            ),
            purposes=("security, accountability and fraud prevention (Art. 6(1)(c) and (f))",),
            retention="7 years; erasure destroys your key, so the events no longer name you",
            data_subjects=("account holders", "tenants' end users"),
            export=audit_export,
            erase=audit_erase,
            phase=99,
        )
    )
