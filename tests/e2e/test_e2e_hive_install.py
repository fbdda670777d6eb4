"""`rbee hive install HOST` for real: another "machine" (a network namespace with Debian's
sshd and a user of its own), a queen on this side of a veth pair, and the CLI as an
operator runs it.

The host has no package index: pip installs the queen's wheel with --no-index from a
wheelhouse served on the veth address (PipIndexUrl none, PipFindLinks URL), as a bare
hive (Extras none) serving the echo engine. The queen serves TLS with a certificate for
the veth address from a CA made at run time (QueenURL https://ADDR:PORT, QueenCA), so the
hive verifies it over wss:// (plain http:// to another machine without `Insecure yes` is
refused before anything is done: tests/hives/install/test_installer.py). No systemd runs
here, so the fallback supervisor keeps the hive running; the systemd unit is written all
the same and its text is checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from testkit.live import Deployment, Queen
from testkit.sshhost import SshHost
from testkit.tls import issue
from testkit.wheelhouse import WheelServer, wheelhouse

pytestmark = pytest.mark.e2e

ALIAS = "gaming-pc"
WHEELS_SECRET = "s3cret-wheel-password"


@pytest.fixture
def ssh_host() -> Iterator[SshHost]:
    host = SshHost()
    try:
        yield host
    finally:
        host.close()


class Operator:
    """The operator's side: hives.conf and known_hosts in the deployment's config dir,
    an ssh-agent holding nothing, and `rbee hive ...` run as a command."""

    def __init__(self, dep: Deployment, host: SshHost) -> None:
        self.dep = dep
        self.host = host
        self.config = Path(dep.env["RBEE_CONFIG_DIR"])
        self.config.mkdir(parents=True, exist_ok=True)
        self.conf = self.config / "hives.conf"
        self.known_hosts = self.config / "known_hosts"
        agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True)
        self.agent_sock = re.search(r"SSH_AUTH_SOCK=([^;]+);", agent.stdout)[1]  # type: ignore[index]
        self.agent_pid = int(re.search(r"SSH_AGENT_PID=(\d+);", agent.stdout)[1])  # type: ignore[index]

    def write_conf(self, **keys: str) -> None:
        self.conf.write_text(
            "# hives for the install test\n" + self.host.hives_conf(ALIAS, self.known_hosts, **keys)
        )

    def rbee(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.dep.rbee("hive", *args, check=False, env={"SSH_AUTH_SOCK": self.agent_sock})

    def close(self) -> None:
        try:
            os.kill(self.agent_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture
def operator(deployment: Deployment, ssh_host: SshHost) -> Iterator[Operator]:
    op = Operator(deployment, ssh_host)
    try:
        yield op
    finally:
        op.close()


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


# --- host keys ---------------------------------------------------------------------------


def test_host_keys_are_verified_unknown_refused_accepted_changed_refused(
    operator: Operator, ssh_host: SshHost
) -> None:
    op = operator
    op.write_conf(QueenURL="http://127.0.0.1:7833")
    fingerprint = ssh_host.host_key_fingerprint()
    assert fingerprint.startswith("SHA256:")

    # A host that hives.conf does not name: the error names the file.
    proc = op.rbee("status", "old-server")
    assert proc.returncode == 1
    assert f"no `Host old-server` in {op.conf}" in proc.stderr
    assert f"it names: {ALIAS}" in proc.stderr

    # Unknown: refused, with the key's fingerprint and the flag; nothing recorded.
    proc = op.rbee("install", ALIAS)
    assert proc.returncode == 1, output(proc)
    assert "is not in known_hosts" in proc.stderr
    assert fingerprint in proc.stderr
    assert "--accept-new-host-key" in proc.stderr
    assert not op.known_hosts.exists()
    assert "Accepted publickey" not in ssh_host.sshd_log.read_text()

    # Accepted with the flag: recorded as OpenSSH writes it, then verified against it.
    proc = op.rbee("status", ALIAS, "--accept-new-host-key")
    assert f"host key {fingerprint} verified" in proc.stdout, output(proc)
    assert "installed   nothing" in proc.stdout
    assert proc.returncode == 1  # nothing is installed
    host_pub = Path(str(ssh_host.host_key) + ".pub").read_text().split()
    assert op.known_hosts.read_text() == f"{ssh_host.ip} {host_pub[0]} {host_pub[1]}\n"
    assert stat.S_IMODE(op.known_hosts.stat().st_mode) == 0o600
    proc = op.rbee("status", ALIAS)  # known now: no flag needed
    assert f"host key {fingerprint} verified" in proc.stdout, output(proc)

    # A first install whose index cannot be reached fails at pip and leaves the host's
    # home as it was (no data directory, no parents of it); the queen issued no token.
    op.write_conf(
        QueenURL="http://127.0.0.1:7833",
        Extras="none",
        PipIndexUrl="none",
        PipFindLinks=f"http://{ssh_host.gateway}:9/",
        PipTrustedHost=ssh_host.gateway,
    )
    proc = op.rbee("install", ALIAS)
    assert proc.returncode == 1, output(proc)
    assert "step 5/9 (installing rbee 0.1.0 (bare)" in proc.stderr
    assert "pip install failed" in proc.stderr
    assert "the host was left as it was" in proc.stderr
    assert sorted(p.name for p in ssh_host.home.iterdir()) == [".ssh"]
    assert op.dep.sql("select count(*) from hives_hive") == [(0,)]

    # Changed (the host was "reinstalled"): always refused, the file is never touched.
    before = op.known_hosts.read_bytes()
    ssh_host.stop_sshd()
    new_fingerprint = ssh_host.new_host_key()
    ssh_host.start_sshd()
    for args in (["install", ALIAS], ["install", ALIAS, "--accept-new-host-key"]):
        proc = op.rbee(*args)
        assert proc.returncode == 1, output(proc)
        assert "has CHANGED" in proc.stderr
        assert new_fingerprint in proc.stderr and fingerprint in proc.stderr
        assert op.known_hosts.read_bytes() == before
    assert not ssh_host.data_dir().exists()


# --- install, serve, upgrade, failures, uninstall ----------------------------------------


def hive_row(dep: Deployment) -> tuple[str, object, str, bool, str]:
    """status, connected_at (a datetime on PostgreSQL, ISO text on SQLite: compared only
    with its own kind), version, token_revoked, region."""
    rows = dep.sql(
        "select status, connected_at, version, token_revoked, region "
        f"from hives_hive where name = '{ALIAS}'"
    )
    assert len(rows) == 1, rows
    status, connected, version, revoked, region = rows[0]
    return str(status), connected, str(version), bool(revoked), str(region)


def host_state(host: SshHost) -> dict[str, object]:
    """What a failed step must leave as it was."""
    data = host.data_dir()
    return {
        "venv": os.readlink(data / "venv"),
        "venvs": sorted(p.name for p in (data / "venvs").iterdir()),
        "env": (data / "hive.env").read_bytes(),
        "record": (data / "install.json").read_bytes(),
        "unit": (host.home / ".config/systemd/user/rbee-hive.service").read_bytes(),
        "start": (data / "start-hive").read_bytes(),
        "uploads": sorted(p.name for p in (data / "uploads").iterdir()),
        "pid": (data / "hive.pid").read_text(),
        "ca": (data / "queen-ca.pem").read_bytes(),
    }


def supervisor_alive(host: SshHost) -> bool:
    pid = int((host.data_dir() / "hive.pid").read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return b"hives.install.supervise" in Path(f"/proc/{pid}/cmdline").read_bytes()


def ask(queen: Queen, key: str, text: str) -> str:
    client = OpenAI(
        base_url=f"{queen.url}/v1",
        api_key=key,
        max_retries=0,
        timeout=30,
        http_client=httpx.Client(verify=queen.verify),
    )
    reply = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": text}]
    )
    return str(reply.choices[0].message.content)


# Seven installs into a fresh virtualenv each (about 3.5 minutes on two quiet cores): more
# than the suite's 300 s per test.
@pytest.mark.timeout(900)
def test_install_serves_upgrades_in_place_fails_cleanly_and_uninstalls(
    deployment: Deployment, operator: Operator, ssh_host: SshHost
) -> None:
    dep, op, host = deployment, operator, ssh_host
    wheels = WheelServer(wheelhouse(), host.gateway)
    try:
        # TLS with a certificate for the address the host reaches the queen at.
        tls = issue(dep.home / "tls", host.gateway)
        queen = Queen(dep, host=host.gateway, tls=tls, env={"RBEE_HIVE_HEARTBEAT": "1"})
        assert queen.url.startswith(f"https://{host.gateway}:")
        keys = {
            "HivePort": "7835",
            "Region": "eu",
            "QueenURL": queen.url,
            "QueenCA": str(tls.ca),
            "Extras": "none",
            "PipIndexUrl": "none",
            # With credentials, as a private wheel server has them: never on a command line.
            "PipFindLinks": wheels.url.replace("http://", f"http://rbee:{WHEELS_SECRET}@"),
            "PipTrustedHost": host.gateway,
            "Models": "echo=echo:",
            "TrustModels": "yes",
        }
        # A first install whose hive never connects (the queen is not where hives.conf
        # says) is undone whole: the supervisor stopped, every file and directory it made
        # removed, the token it was issued revoked.
        op.write_conf(**{**keys, "QueenURL": f"https://{host.gateway}:9"})
        proc = op.rbee("install", ALIAS, "--accept-new-host-key", "--wait", "6")
        assert proc.returncode == 1, output(proc)
        assert "step 9/9 (waiting for gaming-pc to connect" in proc.stderr
        assert "not connected within 6 s (the queen sees it offline)" in proc.stderr
        assert "unreachable" in proc.stderr  # the hive's log, shown
        assert "the host was left as it was" in proc.stderr
        assert sorted(p.name for p in host.home.iterdir()) == [".ssh"]
        assert host.user_pids() == []
        assert hive_row(dep)[3]  # revoked
        op.write_conf(**keys)

        # Install: every step shown, the hive connected with the queen's version.
        proc = op.rbee("install", ALIAS, "--accept-new-host-key")
        assert proc.returncode == 0, output(proc)
        steps = re.findall(r"^\[(\d)/9\] (.*)$", proc.stdout, re.M)
        assert [int(n) for n, _ in steps] == list(range(1, 10)), proc.stdout
        assert "installing rbee 0.1.0 (bare)" in proc.stdout
        assert "fallback supervisor (no systemd running)" in proc.stdout
        assert f"{ALIAS} is connected (rbee 0.1.0" in proc.stdout
        assert re.search(r"device cpu: .+, \d+\.\d GiB", proc.stdout), proc.stdout
        status, connected_1, version, revoked, region = hive_row(dep)
        assert (status, version, revoked, region) == ("online", "0.1.0", False, "eu")

        # It serves a real request through the queen (the official client).
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        assert ask(queen, key, "bees make honey") == "bees make honey"

        # The layout, the unit's text, the supervisor.
        data = host.data_dir()
        venv_1 = os.readlink(data / "venv")
        assert venv_1.startswith(str(data / "venvs" / "rbee-0.1.0-"))
        record = json.loads((data / "install.json").read_text())
        assert record["version"] == "0.1.0" and record["service"] == "fallback"
        assert record["extras"] == [] and record["venv"] == venv_1
        unit = (host.home / ".config/systemd/user/rbee-hive.service").read_text()
        rbee = data / "venv" / "bin" / "rbee"
        assert f"EnvironmentFile={data}/hive.env\n" in unit
        assert (
            f"ExecStart={rbee} hive start --queen {queen.url} --name {ALIAS} --status-port 7835 "
            f"--region eu --model echo=echo: --ca {data}/queen-ca.pem\n"
        ) in unit
        assert "--insecure" not in unit
        assert "Restart=always\n" in unit and "WantedBy=default.target\n" in unit
        assert supervisor_alive(host)
        assert (data / "logs" / "hive.log").stat().st_size > 0
        # The queen's CA went to the host, and the hive verified the queen with it.
        assert (data / "queen-ca.pem").read_bytes() == tls.ca.read_bytes()
        hive_log = (data / "logs" / "hive.log").read_text()
        assert f"connected to the queen at wss://{host.gateway}:{queen.port}" in hive_log

        # The token: only in hive.env (0600, the user's), in no command line, in no file
        # others can read, not in the CLI's output or the queen's log.
        env_file = data / "hive.env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert env_file.stat().st_uid == host.uid
        token = re.search(r"^RBEE_HIVE_TOKEN=(\S+)$", env_file.read_text(), re.M)[1]  # type: ignore[index]
        assert token.startswith("rbee-hive-")
        raw = token.encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    assert raw not in (entry / "cmdline").read_bytes(), entry
                except OSError:
                    pass
        for path in host.home.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o004:
                assert raw not in path.read_bytes(), path
        assert token not in output(proc)
        assert token not in queen.log.read_text()
        # sshd (LogLevel DEBUG3) logs every command it runs and every channel request:
        # none carried the token, and the operator's agent was never forwarded.
        sshd_log = host.sshd_log.read_text()
        commands = re.findall(r"mm_audit_run_command entering command (.*)", sshd_log)
        assert any("-m venv" in c for c in commands) and any("pip" in c for c in commands)
        assert not [c for c in commands if token in c]
        assert not [c for c in commands if WHEELS_SECRET in c]
        assert WHEELS_SECRET not in output(proc)
        assert token not in sshd_log
        assert "req exec" in sshd_log and "auth-agent-req" not in sshd_log

        # `status`: the service and the queen's view.
        proc = op.rbee("status", ALIAS)
        assert proc.returncode == 0, output(proc)
        assert re.search(
            r"service +fallback supervisor .*: running supervisor pid \d+", output(proc)
        )
        assert re.search(
            r"queen +connected \(online, heartbeat \d+ s ago\), rbee 0.1.0", proc.stdout
        )
        assert "worker      echo on cpu: ready" in proc.stdout

        # Re-running install upgrades in place: a new venv, the same token, a new session.
        proc = op.rbee("install", ALIAS)
        assert proc.returncode == 0, output(proc)
        assert "upgrading in place" in proc.stdout
        assert "kept the hive's token" in proc.stdout
        venv_2 = os.readlink(data / "venv")
        assert venv_2 != venv_1 and not Path(venv_1).exists()
        assert sorted(p.name for p in (data / "venvs").iterdir()) == [Path(venv_2).name]
        assert f"RBEE_HIVE_TOKEN={token}\n" in env_file.read_text()
        _, connected_2, _, _, _ = hive_row(dep)
        assert connected_2 > connected_1  # type: ignore[operator]
        assert ask(queen, key, "still here") == "still here"

        # A failed step leaves the host as it was: an index the host cannot reach...
        before = host_state(host)
        op.write_conf(**{**keys, "PipFindLinks": f"http://{host.gateway}:9/"})
        proc = op.rbee("upgrade", ALIAS)
        assert proc.returncode == 1, output(proc)
        assert "step 5/9 (installing rbee 0.1.0 (bare)" in proc.stderr
        assert "the host was left as it was" in proc.stderr
        assert host_state(host) == before
        assert supervisor_alive(host)
        assert hive_row(dep)[1] == connected_2  # the old hive never stopped
        assert ask(queen, key, "unharmed") == "unharmed"
        op.write_conf(**keys)

        # ... and a wheel that no longer matches the SHA-256 recorded when it was built.
        cached = list((Path(dep.env["RBEE_HOME"]) / "wheels").glob("src-*/rbee-*.whl"))
        assert len(cached) == 1, cached
        cached[0].write_bytes(cached[0].read_bytes() + b"tampered")
        proc = op.rbee("upgrade", ALIAS)
        assert proc.returncode == 1, output(proc)
        assert "step 4/9 (uploading" in proc.stderr
        assert "was recorded when it was made: refused" in proc.stderr
        assert "the host was left as it was" in proc.stderr
        assert host_state(host) == before
        assert hive_row(dep)[1] == connected_2
        shutil.rmtree(cached[0].parent)  # the next install builds it again

        # ... and an upgrade whose new hive never connects (hives.conf now names a queen
        # that is not there): the new hive is stopped, the old files and link put back,
        # and the old hive started again; it reconnects and serves.
        op.write_conf(**{**keys, "QueenURL": f"https://{host.gateway}:9"})
        proc = op.rbee("upgrade", ALIAS, "--wait", "6")
        assert proc.returncode == 1, output(proc)
        assert "built from the source tree" in proc.stdout  # the tampered wheel was dropped
        assert "step 9/9 (waiting for gaming-pc to connect" in proc.stderr
        assert "the host was left as it was" in proc.stderr
        after = host_state(host)
        assert after.pop("pid") != before["pid"]  # the old hive, started again
        assert after == {k: v for k, v in before.items() if k != "pid"}
        assert supervisor_alive(host)
        deadline = time.monotonic() + 60
        while not (hive_row(dep)[0] == "online" and hive_row(dep)[1] > connected_2):  # type: ignore[operator]
            assert time.monotonic() < deadline, "the old hive did not reconnect"
            time.sleep(0.2)
        connected_2 = hive_row(dep)[1]
        assert ask(queen, key, "back again") == "back again"
        op.write_conf(**keys)

        # `upgrade --new-token`: another token on the host, the old one refused.
        proc = op.rbee("upgrade", ALIAS, "--new-token")
        assert proc.returncode == 0, output(proc)
        assert "issued a new token for the hive gaming-pc on the queen (the old one" in proc.stdout
        new_token = re.search(r"^RBEE_HIVE_TOKEN=(\S+)$", env_file.read_text(), re.M)[1]  # type: ignore[index]
        assert new_token != token
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert hive_row(dep)[1] > connected_2  # type: ignore[operator]
        assert ask(queen, key, "new token") == "new token"

        # Uninstall: the service, the venvs and the token file go, models stay, and the
        # queen revokes the token.
        models = data / "models"
        models.mkdir(exist_ok=True)
        (models / "kept.bin").write_bytes(b"weights")
        proc = op.rbee("uninstall", ALIAS)
        assert proc.returncode == 0, output(proc)
        assert "revoked" in proc.stdout
        deadline = time.monotonic() + 30
        while host.user_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert host.user_pids() == []
        assert sorted(p.name for p in data.iterdir()) == ["models"]
        assert (models / "kept.bin").read_bytes() == b"weights"
        assert not (host.home / ".config/systemd/user/rbee-hive.service").exists()
        _, _, _, revoked, _ = hive_row(dep)
        assert revoked
        proc = op.rbee("status", ALIAS)
        assert proc.returncode == 1
        assert "installed   nothing" in proc.stdout
    finally:
        wheels.close()
