"""Another machine for tests: a network namespace reached over a veth pair, running
Debian's sshd with its own host key, and a user of its own that logs in with a key only.

    host = SshHost()              # ip netns add rbiXXXXXX; sshd on 10.231.N.2:22
    host.hives_conf("gaming-pc")  # the Host block that reaches it
    ...
    host.close()                  # processes, sshd, namespace, veth, user: all gone

The namespace shares this machine's file system (the user's home is a temporary
directory), but not its network: what runs in it (sshd, the sessions, the hive they
start) reaches the root namespace only at `host.gateway` (10.231.N.1), where tests
bind the queen and the wheelhouse. Needs root, `ip` and /usr/sbin/sshd (Debian's
openssh-server); a missing one fails the test with the reason, never skips it.

RBEE_TEST_NETNS_PREFIX (default `rbi`) and RBEE_TEST_NETNS_SUBNET (default `10.231`)
move the names (namespace, veth, user) and the /16 block, for runs that share a
machine with other namespace tests.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PREFIX = os.environ.get("RBEE_TEST_NETNS_PREFIX", "rbi")
SUBNET = os.environ.get("RBEE_TEST_NETNS_SUBNET", "10.231")  # 10.231.N.0/24 per host


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def _run_locked(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """useradd/usermod/userdel, again while another process holds /etc/passwd's lock
    (parallel test workers make users at the same time)."""
    for _ in range(40):
        proc = _run(*args, check=False)
        if proc.returncode == 0 or "lock" not in proc.stderr.lower():
            break
        time.sleep(0.25)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def require_tools() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("the SSH host tests need root (network namespaces, useradd)")
    for tool in ("ip", "useradd", "userdel", "ssh-keygen"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing")
    if not os.access(SSHD, os.X_OK):
        problems.append(f"{SSHD} is missing: apt install openssh-server")
    if problems:
        raise AssertionError("; ".join(problems))


def _used_subnets() -> set[int]:
    out = _run("ip", "-o", "-4", "addr", "show").stdout
    used = set()
    for word in out.split():
        if word.startswith(f"{SUBNET}."):
            with contextlib.suppress(ValueError, IndexError):
                used.add(int(word.split(".")[2]))
    return used


class SshHost:
    def __init__(self) -> None:
        require_tools()
        tag = uuid.uuid4().hex[:6]
        self.ns = f"{PREFIX}{tag}"
        self.user = f"{PREFIX}{tag}"
        self.veth_root, self.veth_host = f"{PREFIX}{tag}a", f"{PREFIX}{tag}b"
        free = sorted(set(range(1, 255)) - _used_subnets())
        n = random.choice(free)
        self.gateway = f"{SUBNET}.{n}.1"  # the root namespace's side (queen, wheelhouse)
        self.ip = f"{SUBNET}.{n}.2"  # the host's address
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-ssh-"))  # keys, sshd config, logs
        self.home_root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-home-"))
        self.home = self.home_root / self.user
        self.sshd: subprocess.Popen[bytes] | None = None
        self.sshd_log = self.dir / "sshd.log"
        self._log_fh = open(self.sshd_log, "ab")
        self._user_made = False
        self._netns_made = False
        try:
            self._network()
            self._account()
            self.client_key = self.dir / "id_ed25519"
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key))
            auth = self.home / ".ssh" / "authorized_keys"
            auth.parent.mkdir(mode=0o700)
            auth.write_text(self.client_key.with_suffix(".pub").read_text())
            auth.chmod(0o600)
            for path in (auth.parent, auth):
                os.chown(path, self.uid, self.gid)
            self.host_key = self.dir / "ssh_host_ed25519_key"
            self.new_host_key()
            self.start_sshd()
        except BaseException:
            self.close()
            raise

    # --- setup ----------------------------------------------------------------------

    def _network(self) -> None:
        _run("ip", "netns", "add", self.ns)
        self._netns_made = True
        _run("ip", "link", "add", self.veth_root, "type", "veth", "peer", "name", self.veth_host)
        _run("ip", "link", "set", self.veth_host, "netns", self.ns)
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.veth_root)
        _run("ip", "link", "set", self.veth_root, "up")
        inside = ("ip", "netns", "exec", self.ns)
        _run(*inside, "ip", "addr", "add", f"{self.ip}/24", "dev", self.veth_host)
        _run(*inside, "ip", "link", "set", self.veth_host, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")

    def _account(self) -> None:
        self.home_root.chmod(0o755)
        _run_locked("useradd", "-M", "-d", str(self.home), "-s", "/bin/sh", self.user)
        self._user_made = True
        _run_locked("usermod", "-p", "*", self.user)  # no password, but not locked (UsePAM no)
        import pwd

        entry = pwd.getpwnam(self.user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.home.mkdir(mode=0o755)
        os.chown(self.home, self.uid, self.gid)

    def new_host_key(self) -> str:
        """A fresh host key (replacing the old); returns its SHA256 fingerprint."""
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key))
        return self.host_key_fingerprint()

    def host_key_fingerprint(self) -> str:
        out = _run("ssh-keygen", "-l", "-E", "sha256", "-f", str(self.host_key) + ".pub").stdout
        return out.split()[1]

    def start_sshd(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation dir
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "Port 22",
                    f"ListenAddress {self.ip}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "AuthorizedKeysFile .ssh/authorized_keys",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin no",
                    f"AllowUsers {self.user}",
                    "UsePAM no",
                    "StrictModes yes",
                    "Subsystem sftp internal-sftp",
                    # Every command it runs and every channel request is logged (the
                    # tests read what crossed the connection).
                    "LogLevel DEBUG3",
                    "",
                ]
            )
        )
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, SSHD, "-D", "-e", "-f", str(config)],
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.sshd.poll() is not None:
                raise AssertionError(f"sshd exited:\n{self.sshd_log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection((self.ip, 22), 1):
                return
            time.sleep(0.1)
        raise AssertionError(f"sshd did not listen on {self.ip}:22:\n{self.sshd_log.read_text()}")

    def stop_sshd(self) -> None:
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
        self.sshd = None

    # --- what tests look at ---------------------------------------------------------

    def hives_conf(self, alias: str, known_hosts: Path, **rbee_keys: str) -> str:
        """A hives.conf Host block reaching this host with its key, recording host keys
        in `known_hosts`; extra keys (QueenURL=..., Extras=...) as given."""
        lines = [
            f"Host {alias}",
            f"  HostName {self.ip}",
            f"  User {self.user}",
            f"  IdentityFile {self.client_key}",
            f"  UserKnownHostsFile {known_hosts}",
        ]
        lines += [f"  {key} {value}" for key, value in rbee_keys.items()]
        return "\n".join(lines) + "\n"

    def netns_pids(self) -> list[int]:
        out = _run("ip", "netns", "pids", self.ns, check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    def user_pids(self) -> list[int]:
        """Live processes of the test user (anywhere; zombies, which this machine's init
        may leave unreaped a while, do not count)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == self.uid and _alive(int(entry.name)):
                        pids.append(int(entry.name))
        return pids

    def data_dir(self) -> Path:
        return self.home / ".local" / "share" / "rbee"

    # --- teardown -------------------------------------------------------------------

    def _kill_all(self) -> None:
        """Every process in the namespace or of the user, by pid: TERM, then KILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = set(self.netns_pids()) | (set(self.user_pids()) if self._user_made else set())
            pids.discard(os.getpid())
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._kill_all()
        with contextlib.suppress(Exception):
            self.stop_sshd()
        if self._netns_made:
            _run("ip", "netns", "del", self.ns, check=False)
        _run("ip", "link", "del", self.veth_root, check=False)
        if self._user_made:
            _run_locked("userdel", self.user, check=False)
        with contextlib.suppress(Exception):
            self._log_fh.close()
        shutil.rmtree(self.home_root, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); count it as gone.
    with contextlib.suppress(OSError):
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    return False
