"""`rbee tenant`: the customers of this rbee, their status, plan and limits."""

from __future__ import annotations

import click

from rbee.cli._common import cli_actor, limit_args, note, reported, uses_database


@click.group()
def tenant() -> None:
    """Customers of this rbee."""


@tenant.command("create")
@click.argument("name")
@click.option("--tier", default="free", show_default=True)
@click.option("--plan", default=None, help="The plan (default: the plan named like the tier).")
@uses_database
def tenant_create(name: str, tier: str, plan: str | None) -> None:
    """Create the tenant NAME."""
    from tenants import services

    with reported():
        t = services.tenant_create(name=name, tier=tier, plan=plan, actor=cli_actor())
    how = f"plan {t.plan.name}" if t.plan else f"tier {t.tier}, no plan: unlimited"
    note(f"created tenant {t.name} ({how})")


@tenant.command("list")
@uses_database
def tenant_list() -> None:
    """Every tenant: tier, plan and status."""
    from tenants import selectors

    for t in selectors.tenant_list_with_plans():
        plan = t.plan.name if t.plan else "-"
        click.echo(f"{t.name:24} {t.tier:12} {plan:12} {t.status}")


@tenant.command("suspend")
@click.argument("name")
@uses_database
def tenant_suspend(name: str) -> None:
    """Suspend NAME: its keys stop working at once (401 account_deactivated)."""
    _set_status(name, "suspended")


@tenant.command("resume")
@click.argument("name")
@uses_database
def tenant_resume(name: str) -> None:
    """Make NAME active again."""
    _set_status(name, "active")


def _set_status(name: str, status: str) -> None:
    from tenants import selectors, services

    with reported():
        t = services.tenant_set_status(
            tenant=selectors.tenant_get(name=name), status=status, actor=cli_actor()
        )
    note(f"{t.name}: {t.status}")


@tenant.command("plan")
@click.argument("name")
@click.argument("plan")
@uses_database
def tenant_plan(name: str, plan: str) -> None:
    """Move NAME to PLAN."""
    from tenants import selectors, services

    with reported():
        t = services.tenant_set_plan(
            tenant=selectors.tenant_get(name=name), plan_name=plan, actor=cli_actor()
        )
    note(f"{t.name}: plan {plan}")


@tenant.command("billing-email")
@click.argument("name")
@click.argument("email", default="")
@uses_database
def tenant_billing_email(name: str, email: str) -> None:
    """Send NAME's invoices to EMAIL (none: clear it). A person's address makes that
    person the invoices' customer (GDPR export and erasure)."""
    from tenants import selectors, services

    with reported():
        t = services.tenant_set_billing_email(
            tenant=selectors.tenant_get(name=name), email=email, actor=cli_actor()
        )
    note(f"{t.name}: invoices to {t.billing_email or 'nobody'}")


@tenant.command("limit")
@click.argument("name")
@click.argument("limits", nargs=-1, required=True)
@uses_database
def tenant_limit(name: str, limits: tuple[str, ...]) -> None:
    """Override single limits of NAME's plan: FIELD=N, FIELD=none (unlimited).
    E.g. `rbee tenant limit acme tokens_per_day=5000000 max_concurrent=8`."""
    from tenants import selectors, services

    overrides = limit_args(limits)
    with reported():
        t = services.tenant_set_overrides(
            tenant=selectors.tenant_get(name=name), overrides=overrides, actor=cli_actor()
        )
    note(f"{t.name}: {t.overrides}")
