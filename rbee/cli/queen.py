"""`rbee queen`: the control plane (the OpenAI API, the hive endpoint, the admin)."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys

import click

from kernel.tls import ServerCert, TLSFilesError, check_server_files
from rbee.cli._common import DEFAULT_PORT, fail, log_to_console, setup_django
from rbee.cli._common import migrate as apply_migrations

log = logging.getLogger("rbee")

EXPIRY_WARNING_DAYS = 14


@click.group()
def queen() -> None:
    """The control plane: the OpenAI API, the hive endpoint, the admin."""


@queen.command("start")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option("--no-migrate", is_flag=True, help="Do not apply database migrations first.")
@click.option(
    "--tls-cert",
    envvar="RBEE_TLS_CERT",
    default=None,
    metavar="FILE",
    help="Serve https:// and wss:// with this certificate (PEM: the queen's own certificate "
    "first, then any intermediates), or RBEE_TLS_CERT.",
)
@click.option(
    "--tls-key",
    envvar="RBEE_TLS_KEY",
    default=None,
    metavar="FILE",
    help="The certificate's private key (PEM, no passphrase, not readable by other users), "
    "or RBEE_TLS_KEY.",
)
def queen_start(
    host: str, port: int, no_migrate: bool, tls_cert: str | None, tls_key: str | None
) -> None:
    """Start the queen (Daphne) on PORT."""
    log_to_console()
    serve_queen(host, port, migrate=not no_migrate, tls=server_tls(tls_cert, tls_key))


def server_tls(cert: str | None, key: str | None) -> ServerCert | None:
    """The certificate and key to serve TLS with, checked (None: plain http); fails with
    the reason. The settings (rbee/profile.py) turn on secure cookies and HSTS for a
    queen serving TLS: they see it in RBEE_TLS_CERT."""
    if not cert and not key:
        return None
    if not cert or not key:
        fail("--tls-cert and --tls-key go together: the certificate and its private key")
    try:
        tls = check_server_files(cert, key)
    except TLSFilesError as exc:
        fail(str(exc))
    os.environ["RBEE_TLS_CERT"] = str(tls.cert.resolve())
    os.environ["RBEE_TLS_KEY"] = str(tls.key.resolve())
    if not tls.names:
        log.warning(
            "%s has no subjectAltName: hives and browsers check the host name there only, "
            "and will refuse it",
            tls.cert,
        )
    elif tls.days_left() < EXPIRY_WARNING_DAYS:
        log.warning(
            "the certificate in %s expires in %.0f day(s) (%s): renew it and restart the queen",
            tls.cert,
            tls.days_left(),
            f"{tls.not_after:%Y-%m-%d %H:%M} UTC",
        )
    return tls


def loopback_bind(host: str) -> bool:
    """Whether `host` (an address to listen on) is this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_queen(
    host: str, port: int, *, migrate: bool = True, tls: ServerCert | None = None
) -> None:
    # The request path hands database work to executor threads and back; with
    # CPython's default 5 ms switch interval each handoff can wait that long for
    # the GIL while the event loop thread is busy.
    sys.setswitchinterval(float(os.environ.get("RBEE_GIL_SWITCH_INTERVAL", "0.0005")))
    setup_django()
    from django.conf import settings

    if settings.RBEE_ANONYMOUS_TENANT and not loopback_bind(host):
        # Keyless access is for one machine's own clients; on any other address every
        # network neighbour (and a rebinding web page) would be the default tenant.
        fail(
            f"RBEE_ANONYMOUS_TENANT serves requests without a key, so the queen binds only to "
            f"loopback (127.0.0.1, ::1, localhost), not {host}"
        )
    if migrate:
        apply_migrations()
    # The server and the app import models: only now that Django is set up. Daphne
    # installs Twisted's asyncio reactor when imported: first.
    import daphne.server  # noqa: F401
    from channels.layers import get_channel_layer
    from daphne.endpoints import build_endpoint_description_strings

    from billing.periodic import start_in_process, start_usage_settler
    from gdpr.periodic import start_in_process as start_gdpr_in_process
    from hives.services import hives_forget_connections
    from inference.stats import start_flusher, stop_flusher
    from rbee.asgi import application
    from rbee.server import install_from_settings, queen_server

    # Body ceilings, keys and bytes in flight, checked before a body is read (rbee/server.py).
    edge = install_from_settings()
    # A job carries its upload base64-encoded to the hive over the websocket (a third more
    # than the body), and results come back the same way: Daphne's default of 1 MiB per
    # message dropped the hive's connection on any upload over ~750 kB. The hive's own
    # ceiling (hives/agent/agent.py) is 64 MiB.
    ws_max = max(64 * 2**20, edge.body_limit * 4 // 3 + 2**20)
    # Proxy headers only from RBEE_TRUSTED_PROXIES (rbee/server.py drops them otherwise).
    proxied = (
        {
            "proxy_forwarded_address_header": "X-Forwarded-For",
            "proxy_forwarded_port_header": "X-Forwarded-Port",
            "proxy_forwarded_proto_header": "X-Forwarded-Proto",
        }
        if settings.RBEE_TRUSTED_PROXIES
        else {}
    )

    if not settings.REDIS_URL:
        # One process owns every hive socket on the embedded default, so any
        # connection recorded now belongs to a previous run.
        hives_forget_connections()
        # No Celery beat here: billing's and gdpr's periodic tasks (usage to Stripe and to
        # the audit log, the audit tree and its signed checkpoints) run on threads.
        start_in_process()
        start_gdpr_in_process()
    # Usage left provisional by a queen that died is settled as interrupted (every mode).
    start_usage_settler()
    # The charts' per-minute request sums, kept in memory, reach the database every
    # RBEE_METRICS_FLUSH_SECONDS (and once more when the queen stops).
    metrics = start_flusher()
    # What this process listens on, for the dashboard's Settings page (web/ui/settings.py).
    os.environ["RBEE_QUEEN_LISTEN"] = f"{host}:{port}" + (" (TLS)" if tls else "")
    if tls is None:
        log.info("queen listening on http://%s:%s", host, port)
    else:
        log.info(
            "queen listening on https://%s:%s (certificate for %s, valid until %s)",
            host,
            port,
            ", ".join(tls.names) or "no subjectAltName",
            f"{tls.not_after:%Y-%m-%d} UTC",
        )
    # With `tls`, the port speaks TLS with the certificate and key as checked, read
    # once (rbee/server.py).
    queen_server(
        tls=tls,
        application=application,
        endpoints=build_endpoint_description_strings(host=host, port=port),
        websocket_timeout=-1,  # hives stay connected for as long as they run
        application_close_timeout=10,
        verbosity=0,
        websocket_max_message_size=ws_max,
        websocket_max_frame_size=ws_max,
        **proxied,
    ).run()
    stop_flusher(metrics)
    # Stopped (SIGTERM/SIGINT): the sockets this process held are gone, so other
    # replicas must stop routing to them now, not when their heartbeats go stale.
    marker = getattr(get_channel_layer(), "client_prefix", None)
    released = hives_forget_connections(channel_marker=marker) if marker else 0
    log.info("queen stopped; released %d hive connection(s)", released)
