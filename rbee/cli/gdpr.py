"""`rbee gdpr`: data-subject requests at the operator's console, and the record of
processing. A subject is a person's e-mail or TENANT:END_USER_ID.

    rbee gdpr export --subject EMAIL_OR_TENANT:USER --out FILE
    rbee gdpr erase --subject ... [--out RECEIPT]
    rbee gdpr requests [--overdue]
    rbee gdpr extend ID --months 1|2 --reason TEXT --notified-at ISO_TIME
    rbee gdpr processing
    rbee gdpr residency --tenant T --month YYYY-MM [--json]
    rbee gdpr retention show|set|run
    rbee gdpr hold place|release|list
    rbee gdpr consent grant|withdraw|show

Requests made here are recorded and tracked like those made over HTTP (requested by
"cli"), and run at once, in this process.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from rbee.cli._common import cli_actor, fail, note, reported, table, uses_database


@click.group()
def gdpr() -> None:
    """GDPR: data-subject requests, the record of processing, residency, retention, consent."""


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
    held = req.result.get("not_erased")
    if held:
        ids = ", ".join(str(h["hold"]) for h in held["holds"])
        note(f"NOT erased: {held['ground']}; holds: {ids}")
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
                r["status"] + (" (held)" if r.get("outcome") == "held" else ""),
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


@gdpr.command("residency")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--month", required=True, help="YYYY-MM (UTC).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
@uses_database
def residency(tenant_name: str, month: str, as_json: bool) -> None:
    """Where TENANT's requests of MONTH ran: counts per region and hive, and every request
    that ran outside its data region (there must be none). Exits 1 if there is one."""
    from billing import selectors as billing_selectors
    from tenants import selectors

    try:
        start, end = billing_selectors.month_bounds(month)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from exc
    with reported():
        report = billing_selectors.usage_residency(
            tenant=selectors.tenant_get(name=tenant_name), start=start, end=end
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "tenant": report.tenant,
                    "data_region": report.data_region,
                    "month": month,
                    "requests": report.total,
                    "not_run": report.not_run,
                    "by_hive": [
                        {
                            "region": r.region,
                            "hive": r.hive,
                            "requests": r.requests,
                            "within_data_region": r.within,
                        }
                        for r in report.rows
                    ],
                    "outside_data_region": [
                        {
                            "request_id": rid,
                            "created_at": at.isoformat(),
                            "region": region,
                            "worker": worker,
                        }
                        for rid, at, region, worker in report.outside
                    ],
                },
                indent=2,
            )
        )
    else:
        where = report.data_region or "anywhere (no data region)"
        click.echo(f"tenant {report.tenant}, data region {where}, {month}: {report.total} requests")
        click.echo(f"{'region':16} {'hive':24} {'requests':>9}  within")
        for r in report.rows:
            ok = "yes" if r.within else "NO"
            click.echo(f"{r.region or '(none)':16} {r.hive:24} {r.requests:>9}  {ok}")
        if report.not_run:
            click.echo(f"{'-':16} {'(not run on any hive)':24} {report.not_run:>9}")
        click.echo(f"outside the data region: {len(report.outside)}")
        for rid, at, region, worker in report.outside:
            click.echo(f"  {rid} {at.isoformat()} {region or '(none)'} {worker}")
    if report.outside:
        sys.exit(1)


# --- retention and legal hold ----------------------------------------------------------


@gdpr.group("retention")
def retention_group() -> None:
    """How long each record class is kept, per jurisdiction; the purge."""


@retention_group.command("show")
@uses_database
def retention_show() -> None:
    """Every record class with its period (days), per jurisdiction where it differs."""
    from gdpr import retention

    for row in retention.policy_table():
        per = ", ".join(f"{j} {d}" for j, d in row["by_jurisdiction"].items())
        click.echo(
            f"{row['class']:24} {row['default_days']:>6} days  {row['title']}"
            + (f"  ({per})" if per else "")
        )


@retention_group.command("set")
@click.argument("record_class")
@click.argument("days", type=click.IntRange(min=1))
@click.option("--jurisdiction", default="", help="Only for tenants of this country (ISO code).")
@uses_database
def retention_set(record_class: str, days: int, jurisdiction: str) -> None:
    """Keep RECORD_CLASS for DAYS (never shorter than the law's period); audited."""
    from gdpr import retention

    try:
        row = retention.retention_set(
            record_class=record_class, days=days, jurisdiction=jurisdiction, actor=cli_actor()
        )
    except retention.RetentionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{row.record_class} {row.jurisdiction or '(all)'}: {row.days} days")


@retention_group.command("run")
@uses_database
def retention_run() -> None:
    """Purge now what is past its period (legal holds kept); the run is audited."""
    from gdpr import retention

    run = retention.run(actor=cli_actor())
    for name, r in sorted(run.results.items()):
        click.echo(f"{name:24} deleted {r.deleted:>8}  held {r.held:>6}  kept {r.kept:>6}")
    for name, err in sorted(run.errors.items()):
        click.echo(f"{name:24} FAILED ({err})", err=True)
    if run.errors:
        sys.exit(1)


@gdpr.group("hold")
def hold_group() -> None:
    """Legal holds: records that no purge may touch until released."""


@hold_group.command("place")
@click.option("--tenant", "tenant_name", default=None, help="Hold every record of a tenant.")
@click.option("--subject", default=None, help="Hold one subject's: EMAIL or TENANT:END_USER.")
@click.option("--reason", required=True, help="The case or authority (kept in the audit log).")
@uses_database
def hold_place(tenant_name: str | None, subject: str | None, reason: str) -> None:
    """Place a legal hold on a tenant or a subject."""
    from gdpr import retention, subjects
    from tenants import selectors

    if (tenant_name is None) == (subject is None):
        raise click.UsageError("give --tenant or --subject (one of them)")
    with reported():
        tenant_id = selectors.tenant_get(name=tenant_name).pk if tenant_name else None
    try:
        who = subjects.parse(subject) if subject else None
        hold = retention.hold_place(
            reason=reason, actor=cli_actor(), tenant_id=tenant_id, subject=who
        )
    except (retention.RetentionError, subjects.SubjectError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(hold.pk)


@hold_group.command("release")
@click.argument("hold_id", type=int)
@uses_database
def hold_release(hold_id: int) -> None:
    """Release a legal hold: its records follow their retention period again."""
    from gdpr import retention

    try:
        retention.hold_release(hold_id=hold_id, actor=cli_actor())
    except retention.RetentionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"released hold {hold_id}")


@hold_group.command("list")
@click.option("--all", "everything", is_flag=True, help="Released holds too.")
@uses_database
def hold_list(everything: bool) -> None:
    """The legal holds in force (with --all, released ones too)."""
    from gdpr import retention

    for h in retention.hold_list(include_released=everything):
        target = h.subject or f"tenant #{h.tenant_id}"
        state = f"released {h.released_at:%Y-%m-%d}" if h.released_at else "in force"
        click.echo(f"{h.pk:>5} {target:40} {state:22} {h.reason}")


# --- consent ---------------------------------------------------------------------------


@gdpr.group("consent")
def consent_group() -> None:
    """The consent ledger: grant, withdraw, show (at a past moment)."""


@consent_group.command("grant")
@click.option("--subject", required=True, help="EMAIL or TENANT:END_USER.")
@click.option("--purpose", required=True)
@click.option(
    "--text-file", type=click.File("r", encoding="utf-8"), required=True,
    help="The exact text the subject agreed to (its SHA-256 is recorded).",
)  # fmt: skip
@uses_database
def consent_grant(subject: str, purpose: str, text_file: Any) -> None:
    """Record a consent given to the operator (e.g. on paper); mechanism "cli"."""
    _consent("grant", subject, purpose, text_file.read())


@consent_group.command("withdraw")
@click.option("--subject", required=True, help="EMAIL or TENANT:END_USER.")
@click.option("--purpose", required=True)
@uses_database
def consent_withdraw(subject: str, purpose: str) -> None:
    """Record a withdrawal; mechanism "cli"."""
    _consent("withdraw", subject, purpose, "")


def _consent(action: str, subject_text: str, purpose: str, text: str) -> None:
    from gdpr import consent

    who: Any = _subject(subject_text)
    try:
        if action == "grant":
            row = consent.consent_grant(
                subject=who, purpose=purpose, text=text, mechanism="cli", recorded_by=cli_actor()
            )
        else:
            row = consent.consent_withdraw(
                subject=who, purpose=purpose, mechanism="cli", recorded_by=cli_actor()
            )
    except consent.ConsentError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{row.action} {row.purpose} for {row.subject} at {row.at.isoformat()}")


@consent_group.command("show")
@click.option("--subject", required=True, help="EMAIL or TENANT:END_USER.")
@click.option("--at", "at_text", default="", help="The state at this ISO 8601 moment.")
@uses_database
def consent_show(subject: str, at_text: str) -> None:
    """The subject's consent per purpose, now or at --at."""
    from datetime import UTC, datetime

    from gdpr import consent

    at = None
    if at_text:
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--at") from exc
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    who: Any = _subject(subject)
    for purpose, s in consent.consent_state(subject=who, at=at).items():
        since = s.since.isoformat() if s.since else "never asked"
        state = "granted" if s.granted else "not granted"
        click.echo(f"{purpose:20} {state:12} {since} {s.mechanism} {s.text_sha256[:16]}")
