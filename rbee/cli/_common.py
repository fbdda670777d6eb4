"""What the command groups share: Django on demand, errors, parsing, output.

Nothing here imports Django or an app at import time, so `rbee --help` and
`rbee hive start` (on GPU machines with no database) stay fast. Commands that need
the database are decorated with `uses_database`; they import the apps' services and
selectors inside their bodies, after Django is set up.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from typing import NoReturn, ParamSpec, TypeVar

import click

from kernel.errors import DomainError
from kernel.logs import configure as configure_logging

DEFAULT_PORT = 7833
DEFAULT_HIVE_PORT = 7835

P = ParamSpec("P")
R = TypeVar("R")


# Django ------------------------------------------------------------------------------


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")
    import django
    from django.apps import apps

    if not apps.ready:  # once per process (commands also run in-process in the tests)
        django.setup()


# The PostgreSQL advisory lock that rbee processes take to migrate ("rbeemigr").
MIGRATION_LOCK = 0x7262_6565_6D69_6772


def migrate() -> None:
    """Bring the database's schema up to date. Processes that start together (several
    queens behind a balancer, a queen and a CLI command on a fresh install) take turns:
    one migrates, the others then find nothing left to do. Run at once, each found the
    same migrations missing and all but one failed on tables the first had made."""
    from django.core.management import call_command

    with _one_migration_at_a_time():
        call_command("migrate", interactive=False, verbosity=0)


@contextmanager
def _one_migration_at_a_time() -> Iterator[None]:
    """PostgreSQL: a session advisory lock (waited for with try-lock, so that a statement
    timeout never cuts the wait short); SQLite: an exclusive lock on a file beside the
    database."""
    import time

    from django.db import connection

    if connection.vendor == "postgresql":
        waited = False
        while True:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK])
                row = cur.fetchone()
            if row and row[0]:
                break
            if not waited:
                note("waiting for another rbee process to finish migrating the database")
                waited = True
            time.sleep(0.5)
        try:
            yield
        finally:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])
        return
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or not os.path.isabs(name):
        yield  # an in-memory database (tests) is this process's alone
        return
    import fcntl

    with open(f"{name}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def uses_django(func: Callable[P, R]) -> Callable[P, R]:
    """Set Django up before the command runs (settings and apps; no migrations)."""

    @functools.wraps(func)
    def command(*args: P.args, **kwargs: P.kwargs) -> R:
        setup_django()
        return func(*args, **kwargs)

    return command


def uses_database(func: Callable[P, R]) -> Callable[P, R]:
    """Set Django up and bring the database's schema up to date before the command runs."""

    @functools.wraps(func)
    def command(*args: P.args, **kwargs: P.kwargs) -> R:
        setup_django()
        migrate()
        return func(*args, **kwargs)

    return command


def log_to_console() -> None:
    """Logging for the long-running commands (RBEE_LOG_LEVEL, secrets redacted)."""
    configure_logging(os.environ.get("RBEE_LOG_LEVEL", "INFO"))


def cli_actor() -> str:
    """Who ran this command, as the audit log names them: "cli:<OS user>" (the account
    on the queen's machine; a command run there is that account's doing)."""
    import getpass

    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (a bare container)
        name = ""
    return f"cli:{name}" if name else "cli"


# Errors ------------------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    """`error: MESSAGE` on stderr and exit status 1."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@contextmanager
def reported(*errors: type[Exception]) -> Iterator[None]:
    """Turn a domain error (or one of `errors`) raised inside into `fail(message)`."""
    try:
        yield
    except DomainError as exc:
        fail(exc.message)
    except errors as exc:
        fail(str(exc))


# Parsing -----------------------------------------------------------------------------


def duration(text: str) -> timedelta:
    """90d, 12h, 30m or 45s as a timedelta; fails on anything else."""
    m = re.fullmatch(r"(\d+)([dhms])", text.strip())
    if m is None:
        fail(f"bad duration {text!r}: use e.g. 90d, 12h, 30m, 45s")
    unit = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


def limit_args(items: Sequence[str]) -> dict[str, int | None]:
    """FIELD=N and FIELD=none (unlimited) arguments as {field: N or None}."""
    out: dict[str, int | None] = {}
    for item in items:
        field, sep, raw = item.partition("=")
        if not sep:
            fail(f"bad limit {item!r}: expected FIELD=N or FIELD=none")
        if raw.lower() in ("none", "unlimited", ""):
            out[field] = None
        elif raw.isdigit():
            out[field] = int(raw)
        else:
            fail(f"bad limit {item!r}: N must be a whole number")
    return out


def comma_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [part.strip() for part in text.split(",") if part.strip()]


def day(text: str | None, option: str) -> date | None:
    """A YYYY-MM-DD option's value as a date (None when not given); fails clearly."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        fail(f"bad date for {option}: {text!r}: use YYYY-MM-DD")


# Output ------------------------------------------------------------------------------


def note(message: str) -> None:
    """A message for the person at the terminal (stderr), not for a pipe reading stdout."""
    click.echo(message, err=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, left: int = 1) -> None:
    """Rows under headers in aligned columns on stdout: the first `left` columns
    left-aligned (names), the others right-aligned (numbers)."""
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        line = "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        click.echo(line.rstrip())
