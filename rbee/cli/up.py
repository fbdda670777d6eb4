"""`rbee up`: the queen and a local hive on this machine, on the embedded default."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click

from kernel.paths import rbee_home
from kernel.tls import ServerCert, TLSFilesError, check_server_files, client_context
from rbee.cli._common import DEFAULT_PORT, cli_actor, fail, note, uses_database

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option(
    "--model", "models", multiple=True, help="Models for the local hive (see hive start)."
)
@click.option(
    "--open",
    "open_",
    is_flag=True,
    help="Accept requests without an API key (as the default tenant); loopback only.",
)
@click.option(
    "--tls-cert",
    envvar="RBEE_TLS_CERT",
    default=None,
    metavar="FILE",
    help="Serve https:// with this certificate (see `rbee queen start`), or RBEE_TLS_CERT.",
)
@click.option(
    "--tls-key", envvar="RBEE_TLS_KEY", default=None, metavar="FILE", help="Its private key."
)
@click.option(
    "--ca",
    default=None,
    metavar="FILE",
    help="The CA that issued --tls-cert when this machine does not trust it already (a "
    "private or self-signed CA): the local hive checks the queen against it.",
)
def up(
    host: str,
    port: int,
    models: tuple[str, ...],
    open_: bool,
    tls_cert: str | None,
    tls_key: str | None,
    ca: str | None,
) -> None:
    """Run rbee on this machine: the queen plus a local hive. Ctrl-C stops both."""
    if open_ and host not in LOOPBACK:
        fail("--open serves requests without a key, so it only binds to loopback")
    tls = _tls(tls_cert, tls_key, ca)
    api_key, hive_token, models = _prepare(models)
    exe = [sys.executable, "-m", "rbee.cli"]
    env = {**os.environ, "RBEE_HIVE_TOKEN": hive_token}  # not on argv, where `ps` shows it
    env.pop("RBEE_HIVE_CA", None)  # the local hive's CA is --ca's, given below
    if open_:
        env["RBEE_ANONYMOUS_TENANT"] = "default"
    queen_args = [*exe, "queen", "start", "--host", host, "--port", str(port), "--no-migrate"]
    hive_args = [*exe, "hive", "start", "--name", "local"]
    if tls is None:
        hive_args += ["--queen", f"http://127.0.0.1:{port}"]
    else:
        queen_args += ["--tls-cert", str(tls.cert.cert), "--tls-key", str(tls.cert.key)]
        # The local hive reaches the queen on loopback and checks its certificate for
        # a name the certificate has.
        hive_args += ["--queen", f"https://127.0.0.1:{port}", "--server-name", tls.name]
        if ca:
            hive_args += ["--ca", ca]
    queen_p = subprocess.Popen(queen_args, env=env)
    for m in models:
        hive_args += ["--model", m]
    hive_p = subprocess.Popen(hive_args, env=env)
    procs = [queen_p, hive_p]
    first_model = models[0].split("=")[0].split("@")[0]

    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    code = 0
    if _wait_ready(port, procs, first_model, timeout=180, tls=tls):
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
        scheme = "http"
        if tls is not None:
            scheme, shown = "https", tls.name
        base = f"{scheme}://{shown}:{port}"
        link = _login_link()
        click.echo(
            f"\nrbee is up: {base}/v1  (model: {first_model})\n"
            f"API key: {api_key}\n\n"
            f"  curl {base}/v1/chat/completions \\\n"
            f"    -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"model": "{first_model}", "messages": '
            f'[{{"role": "user", "content": "Hello!"}}]}}\'\n\n'
            f"Models (loading in the background): {', '.join(models)}\n\n"
            f"Dashboard: {base}/ui\n"
            f"  sign in as this machine's owner (one-time link, valid 15 minutes):\n"
            f"  {base}/ui/link/{link}\n"
            "Press Ctrl-C to stop.\n",
        )
    elif not stopping:
        note("error: rbee did not become ready; see the messages above")
        stopping, code = True, 1
    while not stopping:
        if any(p.poll() is not None for p in procs):
            note("error: a part of rbee stopped unexpectedly; shutting down")
            code = 1
            break
        time.sleep(0.2)
    for p in (hive_p, queen_p):  # the hive first, so it leaves the queen cleanly
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    sys.exit(code)


@uses_database
def _prepare(models: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
    """The default tenant's key, the local hive's token, and the models to serve: every
    modality when none are named, with OpenAI's model names pointing at them (unless the
    owner already pointed a name elsewhere)."""
    from hives import services
    from hives.agent.catalog import BUNDLED, DEFAULT_MODELS, OPENAI_ALIASES

    api_key = _ensure_default_key()
    if not models:
        models = tuple(DEFAULT_MODELS)
        for alias, target in OPENAI_ALIASES.items():
            try:
                services.model_alias_set(
                    alias=alias,
                    target=target,
                    capability=BUNDLED[target]["capability"],
                    engine=BUNDLED[target]["engine"],
                    keep=True,
                    actor=cli_actor(),
                )
            except services.HiveError:
                pass
    # The operator's own machine: the models it is started with need no approval.
    _, hive_token = services.hive_token_create(name="local", trust_models=True, actor=cli_actor())
    return api_key, hive_token, models


def _login_link() -> str:
    """A one-time sign-in link token for the owner's operator account (made on the first
    run); the queen keeps only its hash. Django is set up by _prepare already."""
    from web import services

    owner = services.owner_operator_ensure(actor=cli_actor())
    return services.login_link_create(user=owner)


def _default_key_file() -> Path:
    return rbee_home() / "default-api-key"


def _ensure_default_key() -> str:
    """The `default` tenant's key for this machine, kept (mode 0600) in RBEE_HOME.

    The queen stores only its hash; this file is the owner's copy, like an ssh key.
    """
    from tenants import selectors, services

    t, _ = services.tenant_get_or_create(name="default", actor=cli_actor())
    path = _default_key_file()
    if path.exists():
        existing = path.read_text().strip()
        try:
            selectors.caller_from_key(existing)
            return existing
        except selectors.KeyRejected:
            pass
    # The machine's owner is this queen's operator: its answers name the serving hive.
    _, plaintext = services.api_key_create(
        tenant=t, name="rbee up", scopes={"operator": True}, actor=cli_actor()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(plaintext + "\n")
    return plaintext


@dataclass(frozen=True)
class LocalTLS:
    cert: ServerCert
    name: str  # the name the local hive and the readiness check verify the queen for
    context: ssl.SSLContext


def _tls(cert: str | None, key: str | None, ca: str | None) -> LocalTLS | None:
    """The queen's certificate and key, checked before anything starts (None: plain
    http); fails with the reason."""
    if not cert and not key:
        if ca:
            fail("--ca goes with --tls-cert and --tls-key")
        return None
    if not cert or not key:
        fail("--tls-cert and --tls-key go together: the certificate and its private key")
    try:
        checked = check_server_files(cert, key)
        context = client_context(ca)
    except TLSFilesError as exc:
        fail(str(exc))
    name = loopback_name(checked.names)
    if not name:
        fail(f"--tls-cert {cert}: the certificate has no subjectAltName (no name to check)")
    return LocalTLS(cert=checked, name=name, context=context)


def loopback_name(names: tuple[str, ...]) -> str:
    """A name in the certificate to check it for when connecting on loopback: a loopback
    one if it has one, else its first name (for a wildcard, one name it covers)."""
    for name in names:
        if name in LOOPBACK:
            return name
    for name in names:
        if not name.startswith("*."):
            return name
    return f"rbee.{names[0][2:]}" if names else ""


def _wait_ready(
    port: int,
    procs: list[subprocess.Popen[bytes]],
    model: str,
    timeout: float,
    tls: LocalTLS | None = None,
) -> bool:
    """True once the queen is healthy and a hive serves `model`, loaded (/healthz lists
    ready models only: the hive connects and shows it `starting` well before); False when
    a process exits or the time runs out."""
    import httpx  # ~0.1 s to import: only when rbee starts, not for every command

    url, verify, extensions = f"http://127.0.0.1:{port}/healthz", None, {}
    if tls is not None:
        # On loopback, checked for the certificate's name (what the local hive does too).
        url = f"https://127.0.0.1:{port}/healthz"
        verify, extensions = tls.context, {"sni_hostname": tls.name}
    client = httpx.Client(verify=verify or True, timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            r = client.get(url, extensions=extensions)
            body: dict[str, Any] = r.json()
            if r.status_code == 200 and any(model in h.get("models", []) for h in body["hives"]):
                return True
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    return False
