"""`rbee plan`: allowed models, daily quotas, rates and concurrency, by plan."""

from __future__ import annotations

import click

from rbee.cli._common import cli_actor, comma_list, limit_args, note, reported, uses_database


@click.group()
def plan() -> None:
    """Plans: allowed models, daily quotas, rates and concurrency."""


@plan.command("list")
@uses_database
def plan_list() -> None:
    """Every plan: its models and the limits it sets."""
    from tenants import selectors

    for p in selectors.plan_list():
        limits = ", ".join(
            f"{field}={value}"
            for field, value in selectors.plan_limits(p).items()
            if value is not None
        )
        models = ",".join(p.allowed_models) if p.allowed_models else "all models"
        click.echo(f"{p.name:12} {models:24} {limits or 'unlimited'}")


@plan.command("defaults")
@uses_database
def plan_defaults() -> None:
    """Create the free, pro and enterprise plans (existing ones are left as they are)."""
    from billing.services import plan_get_or_create_defaults

    for name in plan_get_or_create_defaults(actor=cli_actor()):
        click.echo(name)


@plan.command("set")
@click.argument("name")
@click.argument("limits", nargs=-1)
@click.option("--models", default=None, help="Allowed models, comma-separated ('' for all).")
@click.option("--queue-weight", type=int, default=None, help="Share of a busy model's queue.")
@click.option(
    "--max-priority",
    type=click.Choice(["interactive", "batch"]),
    default=None,
    help="The highest priority its requests get.",
)
@uses_database
def plan_set(
    name: str,
    limits: tuple[str, ...],
    models: str | None,
    queue_weight: int | None,
    max_priority: str | None,
) -> None:
    """Create or change the plan NAME: FIELD=N or FIELD=none for each limit
    (requests_per_day, tokens_per_day, images_per_day, audio_seconds_per_day,
    characters_per_day, requests_per_minute, tokens_per_minute, max_concurrent)."""
    from tenants import services

    values = limit_args(limits)
    with reported():
        p, created = services.plan_set(
            name=name,
            limits=values,
            allowed_models=comma_list(models) if models is not None else None,
            queue_weight=queue_weight,
            max_priority=max_priority,
            actor=cli_actor(),
        )
    note(f"{'created' if created else 'updated'} plan {p.name}")
