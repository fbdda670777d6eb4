"""`rbee billing`: usage and cost per tenant, and the Celery worker for Stripe and invoices."""

from __future__ import annotations

from decimal import Decimal

import click

from rbee.cli._common import day, fail, note, reported, table, uses_database, uses_django

# --by: billing.selectors.GROUPS (not imported here: it needs Django).
GROUP_BY = ("day", "model", "key", "modality")
QUANTITIES = (
    ("requests", "requests"),
    ("prompt_tokens", "prompt tokens"),
    ("completion_tokens", "completion tokens"),
    ("images", "images"),
    ("audio_seconds", "audio s"),
    ("characters", "characters"),
)


@click.group("billing")
def billing() -> None:
    """Metering, invoices and Stripe."""


@billing.command("worker")
@click.option("--concurrency", default=2, show_default=True, type=int)
@click.option(
    "--beat/--no-beat",
    default=True,
    show_default=True,
    help="Also run Celery beat (the schedule) in this process. A deployment needs exactly "
    "one beat: with several workers, start them with --no-beat and `rbee billing beat` once.",
)
@uses_django
def billing_worker(concurrency: int, beat: bool) -> None:
    """Run Celery (with its beat unless --no-beat) for background work: usage to Stripe,
    past-due suspensions, invoice drafts, the audit log's events and checkpoints, GDPR
    export and erasure jobs. Needed with RBEE_REDIS_URL; on the embedded default the
    queen does this work itself."""
    from rbee.celery import app

    argv = ["worker", f"--concurrency={concurrency}", "--loglevel=INFO"]
    app.worker_main(argv[:1] + (["--beat"] if beat else []) + argv[1:])


@billing.command("beat")
@uses_django
def billing_beat() -> None:
    """Run Celery beat alone: it sends the periodic tasks (usage to Stripe every minute,
    the audit log's events and checkpoints, past-due suspensions, invoice drafts) to the
    workers (`rbee billing worker --no-beat`). Run exactly one per deployment."""
    from rbee.celery import app

    app.start(["beat", "--loglevel=INFO"])


@billing.command("usage")
@click.argument("tenant_name", metavar="TENANT")
@click.option(
    "--by",
    "group_by",
    type=click.Choice(GROUP_BY),
    default="day",
    show_default=True,
    help="One row per UTC day, model, API key or modality.",
)
@click.option("--csv", "as_csv", is_flag=True, help="Every request as a CSV line instead.")
@click.option("--start", default=None, metavar="YYYY-MM-DD", help="First day (UTC).")
@click.option("--end", default=None, metavar="YYYY-MM-DD", help="Last day (UTC), included.")
@uses_database
def billing_usage(
    tenant_name: str, group_by: str, as_csv: bool, start: str | None, end: str | None
) -> None:
    """TENANT's usage and its cost at the tenant's plan prices (the price book in
    /admin), this month unless --start/--end say otherwise. --csv streams one line per
    request, with its cost, for a spreadsheet."""
    from billing import selectors as usage
    from tenants.selectors import tenant_get

    try:
        first, last = usage.usage_period(day(start, "--start"), day(end, "--end"))
    except ValueError as exc:
        fail(str(exc))
    since, until = usage.period_bounds(first, last)
    with reported():
        tenant = tenant_get(name=tenant_name)
    if as_csv:
        for line in usage.usage_csv(tenant_id=tenant.pk, start=since, end=until):
            click.echo(line, nl=False)
        return
    rows = usage.usage_summary(tenant_id=tenant.pk, start=since, end=until, group_by=group_by)
    note(f"{tenant.name}: usage {first} .. {last} (UTC) by {group_by}")
    if not rows:
        note("no usage in this period")
        return
    field = usage.GROUPS[group_by][1]  # "key" rows carry "api_key"
    currency = rows[0]["currency"]
    cells = [
        [row[field] or "-", *(_number(row[q]) for q, _ in QUANTITIES), row["cost"]] for row in rows
    ]
    totals = [
        "total",
        *(_number(sum(row[q] for row in rows)) for q, _ in QUANTITIES),
        str(sum((Decimal(row["cost"]) for row in rows), Decimal(0))),
    ]
    headers = [group_by, *(label for _, label in QUANTITIES), f"cost ({currency})"]
    table(headers, [*cells, totals])


@billing.command("rollup")
@click.option(
    "--rebuild",
    is_flag=True,
    required=True,
    help="Recompute the daily usage roll-up from the raw usage events.",
)
@click.option("--tenant", "tenant_name", default=None, metavar="TENANT", help="Only this tenant.")
@click.option("--start", default=None, metavar="YYYY-MM-DD", help="First day (UTC).")
@click.option("--end", default=None, metavar="YYYY-MM-DD", help="Last day (UTC), included.")
@uses_database
def billing_rollup(
    rebuild: bool, tenant_name: str | None, start: str | None, end: str | None
) -> None:
    """Rebuild the daily usage roll-up that the portal's usage pages read (every tenant
    and day unless --tenant/--start/--end narrow it). Usage writes keep it current by
    themselves; this is for usage recorded before it existed or edited by hand. Usage
    writes wait while it runs (seconds per million events)."""
    from billing.services import usage_rollup_rebuild
    from tenants.selectors import tenant_get

    first, last = day(start, "--start"), day(end, "--end")
    if first and last and last < first:
        fail(f"the period ends ({last}) before it starts ({first})")
    ids = None
    if tenant_name is not None:
        with reported():
            ids = [tenant_get(name=tenant_name).pk]
    written = usage_rollup_rebuild(tenant_ids=ids, start=first, end=last)
    click.echo(f"rebuilt the daily usage roll-up: {written} rows")


def _number(value: int | float) -> str:
    """Whole numbers as they are; audio seconds to the hundredth."""
    return f"{value:.2f}" if isinstance(value, float) else str(value)
