"""`rbee gdpr`: data-subject requests at the operator's console, and the record of
processing. A subject is a person's e-mail or TENANT:END_USER_ID.

    rbee gdpr export --subject EMAIL_OR_TENANT:USER --out FILE
    rbee gdpr erase --subject ... [--out RECEIPT]
    rbee gdpr requests [--overdue]
    rbee gdpr extend ID --months 1|2 --reason TEXT --notified-at ISO_TIME
    rbee gdpr processing

Requests made here are recorded and tracked like those made over HTTP (requested by
"cli"), and run at once, in this process.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import click

from rbee.cli._common import fail, note, reported, table, uses_database


@click.group()
def gdpr() -> None:
    """Data-subject requests (export, erasure) and the record of processing."""


def _subject(text: str):  # type: ignore[no-untyped-def]
    from gdpr import subjects

    try:
        return subjects.parse(text)
    except subjects.SubjectError as exc:
        fail(str(exc))


def _run(kind: str, subject_text: str):  # type: ignore[no-untyped-def]
    from gdpr import services

    subject = _subject(subject_text)
    with reported():
        req = services.request_create(kind=kind, subject=subject, requested_by="cli")
    try:
        return services.request_run(request_id=req.pk)
    except Exception as exc:
        req.refresh_from_db()
        fail(f"request {req.pk} failed: {req.error or type(exc).__name__}")


@gdpr.command("export")
@click.option("--subject", "subject_text", required=True, metavar="EMAIL_OR_TENANT:USER")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The zip."
)
@uses_database
def gdpr_export(subject_text: str, out: Path) -> None:
    """Write everything rbee holds about the subject to a zip: JSON and CSV per store,
    a JSON Schema, the Art. 15 information and a signed manifest."""
    from gdpr import services

    req = _run("export", subject_text)
    with reported():
        src = services.archive_path(req)
    shutil.copyfile(src, out)
    out.chmod(0o600)
    records = sum(req.result.get("records", {}).values())
    note(f"request {req.pk}: {records} records from {len(req.result.get('records', {}))} stores")
    click.echo(str(out))


@gdpr.command("erase")
@click.option("--subject", "subject_text", required=True, metavar="EMAIL_OR_TENANT:USER")
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the signed receipt here.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@uses_database
def gdpr_erase(subject_text: str, out: Path | None, yes: bool) -> None:
    """Erase the subject from every store; prints the signed receipt (JSON)."""
    _subject(subject_text)
    if not yes:
        click.confirm(f"Erase {subject_text} from every store? This cannot be undone", abort=True)
    req = _run("erase", subject_text)
    text = json.dumps(req.result, indent=2, ensure_ascii=False)
    if out is not None:
        out.write_text(text + "\n")
    click.echo(text)
    for store in req.result.get("stores", []):
        for k in store.get("kept", []):
            note(f"kept: {store['store']}: {k['count']} until {k['until']} ({k['ground']})")


@gdpr.command("requests")
@click.option("--overdue", is_flag=True, help="Only open requests past their deadline.")
@uses_database
def gdpr_requests(overdue: bool) -> None:
    """Every request with its deadline; OVERDUE marks open ones past it."""
    from gdpr import selectors

    rows = [
        selectors.request_data(r, with_subject=True)
        for r in selectors.request_list(overdue_only=overdue)
    ]
    if not rows:
        note("no requests")
        return
    table(
        ["id", "kind", "status", "subject", "received", "deadline", "overdue"],
        [
            [
                r["id"],
                r["kind"],
                r["status"],
                r["subject"],
                r["received_at"][:19],
                r["deadline"][:19] + (" (extended)" if r["extended_until"] else ""),
                "OVERDUE" if r["overdue"] else "",
            ]
            for r in rows
        ],
        left=7,
    )


@gdpr.command("extend")
@click.argument("request_id", type=int)
@click.option("--months", type=click.IntRange(1, 2), required=True)
@click.option("--reason", required=True, help="Why (Art. 12(3)): told to the subject.")
@click.option(
    "--notified-at",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    help="When the subject was told of the extension and its reason.",
)
@uses_database
def gdpr_extend(request_id: int, months: int, reason: str, notified_at: datetime) -> None:
    """Extend a request's deadline by one or two months, with the reason given to the
    subject."""
    from datetime import UTC

    from gdpr import selectors, services

    req = selectors.request_get(request_id=request_id)
    if req is None:
        fail(f"no request {request_id}")
    if notified_at.tzinfo is None:
        notified_at = notified_at.replace(tzinfo=UTC)
    with reported():
        req = services.request_extend(
            request=req, months=months, reason=reason, notified_at=notified_at
        )
    note(f"request {req.pk}: deadline now {req.deadline.isoformat()}")


@gdpr.command("processing")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of markdown.")
@uses_database
def gdpr_processing(as_json: bool) -> None:
    """The record of processing activities (Art. 30), from the registered stores."""
    from gdpr import information

    if as_json:
        click.echo(json.dumps(information.art30(), indent=2, ensure_ascii=False))
    else:
        click.echo(information.art30_markdown(), nl=False)
