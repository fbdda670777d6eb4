"""gdpr's own stores as providers: the requests themselves, the audit log, and the log
files rbee writes (free text that may name anyone: searched for the subject's
identifiers, gdpr.providers.identifiers, as whole tokens).

The files store is deliberately narrow. It reads and rewrites only log files: `*.log`
and rotated `*.log.N` under RBEE_HOME, and the files in the operator's RBEE_LOG_DIRS.
Never keys (RBEE_HOME/secret_key, default-api-key), the audit checkpoints (rewriting
one breaks `rbee audit verify`), models, databases, export archives or receipts: the
subject's id is chosen by whoever asks (a tenant admin names any end-user id), so a
wider search would let them read or wipe anything on the deployment. For the same
reason an identifier matches only as a whole token (never inside a key, a hash or a
longer id), and an end user's line must also name their tenant."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from gdpr import providers
from gdpr.providers import Erased, Provider
from gdpr.subjects import END_USER, Subject
from kernel.paths import rbee_home

# What rbee writes as a log under RBEE_HOME: queen.log, hive-eu.log, queen.log.1.
LOG_NAME = re.compile(r"^[^/]+\.log(\.\d{1,4})?$")
# Never entered under RBEE_HOME, even for a file named *.log: gdpr's archives and
# receipts, the audit checkpoints, model caches.
_SKIP_DIRS = {
    "gdpr",
    "exports",
    "receipts",
    "audit-checkpoints",
    "checkpoints",
    "models",
    "static",
    "__pycache__",
}
MAX_FILE_BYTES = 4 * 1024 * 1024 * 1024  # read a line at a time
MAX_EXPORT_LINES = 10_000
_SNIFF = 8192  # a file with a NUL byte in its first bytes is not a text log

# Identifiers that name too many things to be searched for in free text (a `user`
# field "admin" or "12345" would match unrelated lines).
MIN_LENGTH = providers.MIN_IDENTIFIER
MIN_DIGITS = 8  # an all-digit id shorter than this is a count, a port, a duration
GENERIC = frozenset(
    {
        "user",
        "users",
        "admin",
        "root",
        "test",
        "guest",
        "default",
        "anonymous",
        "unknown",
        "none",
        "null",
        "true",
        "false",
        "system",
        "info",
        "debug",
        "error",
        "warning",
        "critical",
        "post",
        "delete",
        "patch",
        "head",
        "options",
        "http",
        "https",
        "chat",
        "model",
        "queen",
        "hive",
        "rbee",
    }
)

# Bytes that continue a token: letters, digits, _ - @ + and any non-ASCII byte. A "."
# continues it only when a token byte follows ("a@b.example." ends at the last dot).
_TOK = rb"\w@+\-\x80-\xff"
_BEFORE = rb"(?<![" + _TOK + rb".])"
_AFTER = rb"(?![" + _TOK + rb"]|\.[" + _TOK + rb"])"


def _token(text: str, *, fold: bool) -> bytes:
    body = re.escape(text.encode())
    return b"(?i:" + body + b")" if fold else body


def _alternation(ids: list[str]) -> re.Pattern[bytes]:
    parts = [_token(i, fold="@" in i) for i in sorted(ids, key=len, reverse=True)]
    return re.compile(_BEFORE + b"(?:" + b"|".join(parts) + b")" + _AFTER)


def too_generic(identifier: str) -> str | None:
    """Why an identifier is not searched for in free text (None: it is)."""
    if len(identifier) < MIN_LENGTH:
        return "too short"
    if identifier.lower() in GENERIC:
        return "too generic"
    if identifier.isdigit() and len(identifier) < MIN_DIGITS:
        return "too generic"
    if not any(c.isalnum() for c in identifier):
        return "too generic"
    return None


@dataclass
class Matcher:
    """What names the subject in a line: one of their identifiers as a whole token
    and, for an end user, their tenant's name too."""

    pattern: re.Pattern[bytes] | None
    tenant: re.Pattern[bytes] | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> how many ids

    def __call__(self, line: bytes) -> bool:
        if self.pattern is None or not self.pattern.search(line):
            return False
        return self.tenant is None or bool(self.tenant.search(line))

    def skip_note(self) -> str | None:
        if not self.skipped:
            return None
        what = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        searched = "the other identifiers were searched" if self.pattern else "nothing searched"
        return (
            f"identifiers not searched in log files ({what} to match safely in free "
            f"text): {searched}"
        )


def matcher(subject: Subject) -> Matcher:
    ids: list[str] = []
    skipped: dict[str, int] = {}
    raw = set(providers.identifiers(subject))
    if subject.end_user:
        raw.add(subject.end_user)
    if subject.email:
        raw.add(subject.email)
    for i in sorted(raw):
        why = too_generic(i)
        if why is None and subject.kind == END_USER and i == subject.tenant:
            why = "too generic"  # the tenant's own name: every line of the tenant
        if why is None:
            ids.append(i)
        else:
            skipped[why] = skipped.get(why, 0) + 1
    tenant = None
    if subject.kind == END_USER:
        tenant = re.compile(_BEFORE + _token(subject.tenant, fold=False) + _AFTER)
    return Matcher(_alternation(ids) if ids else None, tenant, skipped)


def roots() -> list[Path]:
    """RBEE_HOME and the log directories (RBEE_LOG_DIRS): where rbee writes logs."""
    out = [rbee_home()]
    for d in getattr(settings, "RBEE_LOG_DIRS", []) or []:
        p = Path(d).expanduser()
        if p.is_dir() and p not in out:
            out.append(p)
    return out


def _excluded() -> list[Path]:
    """Directories never read, wherever a log directory points: the checkpoints and
    gdpr's archives and receipts."""
    from gdpr import sinks

    home = rbee_home()
    return [
        p.resolve()
        for p in (sinks.default_dir(), home / "gdpr", home / "audit-checkpoints", home / "models")
    ]


def _is_text(path: Path) -> bool:
    with open(path, "rb") as fh:
        return b"\0" not in fh.read(_SNIFF)


def _files() -> Iterator[tuple[Path, Path]]:
    """(root, file) for every log file: `*.log` and `*.log.N` under RBEE_HOME, and the
    text files in RBEE_LOG_DIRS; never a symbolic link, a binary file or a file in an
    excluded directory."""
    home = rbee_home().resolve()
    excluded = _excluded()
    seen: set[Path] = set()
    for root in roots():
        is_home = root.resolve() == home
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath).resolve()
            if any(here == x or here.is_relative_to(x) for x in excluded):
                dirnames[:] = []
                continue
            dirnames[:] = [d for d in dirnames if not (is_home and d in _SKIP_DIRS)]
            for name in filenames:
                path = Path(dirpath) / name
                real = here / name
                in_home = real == home or real.is_relative_to(home)
                if (is_home or in_home) and not LOG_NAME.match(name):
                    continue
                if real in seen or path.is_symlink() or not path.is_file():
                    continue
                if path.stat().st_size > MAX_FILE_BYTES or not _is_text(path):
                    continue
                seen.add(real)
                yield root, path


def _lines(path: Path, match: Matcher) -> Iterator[tuple[int, int, bytes]]:
    """(line number, offset, line without its end) of every line naming the subject,
    read a line at a time (log files can be large)."""
    offset = 0
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            body = line.rstrip(b"\r\n")
            if match(body):
                yield n, offset, body
            offset += len(line)


def files_export(subject: Subject) -> list[dict[str, Any]]:
    """Every log line that names the subject: the file, the line number, the line."""
    match = matcher(subject)
    out: list[dict[str, Any]] = []
    if match.pattern is None:
        return out
    for root, path in _files():
        for n, _, body in _lines(path, match):
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
    """Overwrite, in place, every log line that names the subject (all of it: a line
    about them may hold more of their data, an IP, a name) with "[erased]" and spaces
    of the same length. A log file a running process appends to keeps its length, so
    nothing it writes meanwhile is lost or overwritten (the file is never truncated or
    replaced), and the lines around stay as they were."""
    out = Erased(store="gdpr.files")
    match = matcher(subject)
    note = match.skip_note()
    if note:
        out.notes.append(note)
    if match.pattern is None:
        return out
    touched = 0
    for _, path in _files():
        hits = list(_lines(path, match))
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
        out.notes.append(
            f"{touched} log file(s) rewritten in place: lines naming the subject erased"
        )
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
            title="Log files",
            categories=("anything a log line names: e-mail, username, end-user id",),
            purposes=("operating and troubleshooting the service (Art. 6(1)(f))",),
            retention="log files (*.log under RBEE_HOME, RBEE_LOG_DIRS): as the operator "
            "rotates them; lines naming the subject masked on erasure",
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
