"""`rbee gdpr residency`: where a tenant's requests ran, for its data-protection officer.

This module holds the residency command of the `gdpr` command group; the subject-rights
commands (export, erase, requests) join the same group (rbee/cli/gdpr.py).
"""

from __future__ import annotations

import json
import sys

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
