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
@click.option(
    "--data-region",
    default="",
    help="Serve it only on hives the operator placed in this region (e.g. eu); none: 503.",
)
@click.option(
    "--jurisdiction", default="", help="Country (ISO code, e.g. DE) whose retention law applies."
)
@uses_database
def tenant_create(
    name: str, tier: str, plan: str | None, data_region: str, jurisdiction: str
) -> None:
    """Create the tenant NAME."""
    from tenants import services

    with reported():
        t = services.tenant_create(
            name=name,
            tier=tier,
            plan=plan,
            data_region=data_region,
            jurisdiction=jurisdiction,
            actor=cli_actor(),
        )
    how = f"plan {t.plan.name}" if t.plan else f"tier {t.tier}, no plan: unlimited"
    where = f", data region {t.data_region}" if t.data_region else ""
    note(f"created tenant {t.name} ({how}{where})")


@tenant.command("set")
@click.argument("name")
@click.option(
    "--data-region",
    default=None,
    help="Serve it only on hives the operator placed in this region ('' = anywhere).",
)
@click.option("--jurisdiction", default=None, help="Country (ISO code) for retention.")
@click.option(
    "--prompt-retention",
    type=click.Choice(["off", "consent", "contract"]),
    default=None,
    help="Keep prompts and responses: off (default), for consenting end users, or all.",
)
@click.option("--prompt-retention-days", type=int, default=None, help="1-90 days.")
@uses_database
def tenant_set(
    name: str,
    data_region: str | None,
    jurisdiction: str | None,
    prompt_retention: str | None,
    prompt_retention_days: int | None,
) -> None:
    """Change NAME's data region, jurisdiction or prompt retention."""
    from django.db import transaction

    from tenants import selectors, services

    if all(v is None for v in (data_region, jurisdiction, prompt_retention, prompt_retention_days)):
        raise click.UsageError(
            "nothing to set: give --data-region, --jurisdiction or --prompt-retention[-days]"
        )
    with reported(), transaction.atomic():
        t = services.tenant_set_residency(
            tenant=selectors.tenant_get(name=name),
            data_region=data_region,
            jurisdiction=jurisdiction,
            actor=cli_actor(),
        )
        t = services.tenant_set_prompt_retention(
            tenant=t, mode=prompt_retention, days=prompt_retention_days, actor=cli_actor()
        )
    note(
        f"{t.name}: data region {t.data_region or 'anywhere'}, "
        f"jurisdiction {t.jurisdiction or 'default'}, prompt retention {t.prompt_retention}"
        + (f" ({t.prompt_retention_days} days)" if t.prompt_retention != "off" else "")
    )


@tenant.command("list")
@uses_database
def tenant_list() -> None:
    """Every tenant: tier, plan and status."""
    from tenants import selectors

    for t in selectors.tenant_list_with_plans():
        plan = t.plan.name if t.plan else "-"
        click.echo(f"{t.name:24} {t.tier:12} {plan:12} {t.status:10} {t.data_region or '-'}")


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
