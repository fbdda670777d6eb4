"""`rbee key`: tenants' API keys. Only a key's hash is stored, so `create` and `rotate`
print the new key once, alone on stdout, for scripts to capture."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from rbee.cli._common import cli_actor, comma_list, duration, note, reported, uses_database


@click.group()
def key() -> None:
    """API keys."""


@key.command("create")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--name", default="", help="A label for the key.")
@click.option(
    "--endpoints",
    default="",
    help="Only these endpoints (comma-separated: chat,completions,embeddings,images,audio).",
)
@click.option("--models", default="", help="Only these models (comma-separated).")
@click.option("--expires-in", default="", help="Expire after this long: 90d, 12h, 30m.")
@click.option(
    "--operator",
    is_flag=True,
    help="An operator's key: its answers name the hive that served them (X-Rbee-Worker).",
)
@click.option(
    "--data-region",
    default="",
    help="Serve it only in this region (may narrow the tenant's, never widen it).",
)
@uses_database
def key_create(
    tenant_name: str,
    name: str,
    endpoints: str,
    models: str,
    expires_in: str,
    operator: bool,
    data_region: str,
) -> None:
    """Create an API key; prints only the key, so scripts can capture it."""
    from tenants import selectors, services

    scopes: dict[str, object] = {"endpoints": comma_list(endpoints), "models": comma_list(models)}
    if operator:
        scopes["operator"] = True
    expires = datetime.now(UTC) + duration(expires_in) if expires_in else None
    with reported():
        _, plaintext = services.api_key_create(
            tenant=selectors.tenant_get(name=tenant_name),
            name=name,
            scopes=scopes,
            expires_at=expires,
            data_region=data_region,
            actor=cli_actor(),
        )
    click.echo(plaintext)


@key.command("rotate")
@click.argument("key_or_prefix")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--grace", default="24h", show_default=True, help="How long the old key works.")
@uses_database
def key_rotate(key_or_prefix: str, tenant_name: str, grace: str) -> None:
    """Replace a key: prints the new one; the old one keeps working for --grace."""
    from tenants import selectors, services

    keep = duration(grace)
    with reported():
        tenant = selectors.tenant_get(name=tenant_name)
        old = selectors.api_key_find(tenant=tenant, key_or_prefix=key_or_prefix)
        _, plaintext = services.api_key_rotate(api_key=old, grace=keep, actor=cli_actor())
    click.echo(plaintext)
    note(f"{old.display} keeps working until {old.expires_at:%Y-%m-%d %H:%M} UTC")


@key.command("list")
@click.option("--tenant", "tenant_name", required=True)
@uses_database
def key_list(tenant_name: str) -> None:
    """The tenant's keys by prefix: active or revoked, label, creation day."""
    from tenants import selectors

    with reported():
        tenant = selectors.tenant_get(name=tenant_name)
    for k in selectors.api_key_list(tenant=tenant):
        state = "revoked" if k.revoked_at else "active"
        click.echo(f"{k.prefix}  {state:8} {k.name or '-':20} created {k.created_at:%Y-%m-%d}")


@key.command("revoke")
@click.argument("key_or_prefix")
@click.option("--tenant", "tenant_name", required=True)
@uses_database
def key_revoke(key_or_prefix: str, tenant_name: str) -> None:
    """Revoke a key, given the key itself or its prefix (from `rbee key list`)."""
    from tenants import selectors, services

    with reported():
        tenant = selectors.tenant_get(name=tenant_name)
        k = selectors.api_key_find(tenant=tenant, key_or_prefix=key_or_prefix)
    services.api_key_revoke(api_key=k, actor=cli_actor())
    note(f"revoked {k.display}")
