"""`rbee operator`: the people who run the queen, and what each may do there.

Permissions per area (`--perm`, repeatable): fleet (hives, models, workers, downloads,
aliases), scheduler (the Rhai script), tenants (tenants, keys, plans, usage, invoices,
acting as a tenant), audit (reading audit and usage logs). `--superuser` holds them all."""

from __future__ import annotations

import sys

import click

from rbee.cli._common import cli_actor, fail, note, reported, table, uses_database

AREAS = ("fleet", "scheduler", "tenants", "audit")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@click.group()
def operator() -> None:
    """Operators and their permissions."""


_perm = click.option(
    "--perm",
    "perms",
    multiple=True,
    type=click.Choice(AREAS),
    help="An area this operator may manage (repeatable).",
)


@operator.command("create")
@click.argument("name")
@_perm
@click.option("--email", default="")
@click.option("--superuser", is_flag=True, help="Every permission, and the whole admin.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (for scripts).")
@uses_database
def operator_create(
    name: str, perms: tuple[str, ...], email: str, superuser: bool, password_stdin: bool
) -> None:
    """Create an operator (a staff user) with the given permissions."""
    from tenants import services

    if not perms and not superuser:
        fail("say what the operator may do: --perm fleet|scheduler|tenants|audit, or --superuser")
    password = _password(password_stdin)
    with reported():
        services.operator_create(
            username=name,
            password=password,
            areas=list(perms),
            email=email,
            superuser=superuser,
            actor=cli_actor(),
        )
    note(f"operator {name}: {'superuser' if superuser else ', '.join(perms)}")


@operator.command("grant")
@click.argument("name")
@_perm
@uses_database
def operator_grant(name: str, perms: tuple[str, ...]) -> None:
    """Give a user operators' permissions (and staff status)."""
    from tenants import selectors, services

    if not perms:
        fail("say which: --perm fleet|scheduler|tenants|audit")
    with reported():
        user = services.operator_grant(username=name, areas=list(perms), actor=cli_actor())
    note(f"{name} may now manage: {', '.join(selectors.operator_areas(user=user)) or 'nothing'}")


@operator.command("revoke")
@click.argument("name")
@_perm
@uses_database
def operator_revoke(name: str, perms: tuple[str, ...]) -> None:
    """Take operators' permissions away from a user."""
    from tenants import selectors, services

    if not perms:
        fail("say which: --perm fleet|scheduler|tenants|audit")
    with reported():
        user = services.operator_revoke(username=name, areas=list(perms), actor=cli_actor())
    left = selectors.operator_areas(user=user)
    note(f"{name} may now manage: {', '.join(left) or 'nothing'}")
    if user.is_superuser:
        note(f"{name} is a superuser and keeps every permission")


@operator.command("list")
@uses_database
def operator_list() -> None:
    """Staff users and superusers, with what each may manage."""
    from tenants import selectors

    rows = [
        (name, "yes" if sup else "", ", ".join(areas) or "-")
        for name, sup, areas in selectors.operator_list()
    ]
    table(("NAME", "SUPERUSER", "PERMISSIONS"), rows, left=3)
