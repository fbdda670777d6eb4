"""`rbee gdpr residency`: where a tenant's requests ran, for its data-protection officer.

This module holds the residency command of the `gdpr` command group; the subject-rights
commands (export, erase, requests) join the same group (rbee/cli/gdpr.py).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from rbee.cli._common import reported, uses_database


@click.group()
def gdpr() -> None:
    """GDPR: residency, data-subject requests, retention and consent."""


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
            record_class=record_class, days=days, jurisdiction=jurisdiction, actor="cli"
        )
    except retention.RetentionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{row.record_class} {row.jurisdiction or '(all)'}: {row.days} days")


@retention_group.command("run")
@uses_database
def retention_run() -> None:
    """Purge now what is past its period (legal holds kept); the run is audited."""
    from gdpr import retention

    run = retention.run(actor="cli")
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
        hold = retention.hold_place(reason=reason, actor="cli", tenant_id=tenant_id, subject=who)
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
        retention.hold_release(hold_id=hold_id, actor="cli")
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


def _subject(text: str) -> object:
    from gdpr import subjects

    try:
        return subjects.parse(text)
    except subjects.SubjectError as exc:
        raise click.BadParameter(str(exc), param_hint="--subject") from exc


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
                subject=who, purpose=purpose, text=text, mechanism="cli", recorded_by="cli"
            )
        else:
            row = consent.consent_withdraw(
                subject=who, purpose=purpose, mechanism="cli", recorded_by="cli"
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
