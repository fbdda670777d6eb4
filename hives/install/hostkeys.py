"""Host keys: what known_hosts says about a host, and recording a new one.

rbee verifies every host key against known_hosts, as `ssh` does with
`StrictHostKeyChecking yes`: an unknown host is refused with its key's fingerprint until
the operator accepts it (`--accept-new-host-key`, recorded in the first known_hosts
file, like OpenSSH's `accept-new`); a host whose key differs from the recorded one is
always refused and the file is never changed (remove the old line yourself when you know
why it changed: `ssh-keygen -R HOST -f FILE`).

A host is looked up by the one name OpenSSH looks it up by (sshconnect.c,
get_hostfile_hostname_ipaddr): its `HostKeyAlias` as written, else its HostName in lower
case, as `[host]:port` when the port is not 22. Plain, hashed (`|1|salt|hash`) and
wildcard entries match that name; `@cert-authority` lines trust host certificates signed
by their key, `@revoked` lines refuse their key. Nothing else counts: not an entry for
the address the name resolves to (OpenSSH's CheckHostIP is off by default), and not the
port-22 entry of a host reached on another port (asyncssh would fall back to it; OpenSSH
does not). A line OpenSSH would skip (a bad marker, a single word) is skipped with a
warning, never fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh


@dataclass(frozen=True)
class Recorded:
    """What known_hosts says about one lookup name."""

    host_keys: list[asyncssh.SSHKey]
    ca_keys: list[asyncssh.SSHKey]  # @cert-authority
    revoked: list[asyncssh.SSHKey]  # @revoked

    @property
    def known(self) -> bool:
        """Whether a key (or a CA) is recorded for the name: a key it does not match has
        changed, rather than being new."""
        return bool(self.host_keys or self.ca_keys)

    def for_asyncssh(self) -> tuple[list[asyncssh.SSHKey], ...]:
        """The `known_hosts=` argument that trusts exactly these keys (asyncssh does no
        matching of its own with it)."""
        return (self.host_keys, self.ca_keys, self.revoked)

    def is_revoked(self, key: asyncssh.SSHKey) -> bool:
        return any(k.public_data == key.public_data for k in self.revoked)


def lookup_name(hostname: str, port: int, alias: str = "") -> str:
    """The name OpenSSH looks a host's key up by, and records it under."""
    if alias:
        return alias
    host = hostname.lower()
    return host if port == 22 else f"[{host}]:{port}"


def read_known_hosts(files: tuple[Path, ...]) -> tuple[asyncssh.SSHKnownHosts, list[str]]:
    """Every readable file's entries, as one list, and a warning for each line that is
    not an entry (skipped, as OpenSSH does). A missing file means no entries (never the
    ~/.ssh/known_hosts asyncssh would read for an empty list)."""
    known = asyncssh.SSHKnownHosts()
    skipped: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            try:
                known.load(line)
            except ValueError as exc:
                skipped.append(f"{path} line {number}: {exc} (skipped)")
    return known, skipped


def recorded_keys(known: asyncssh.SSHKnownHosts, name: str) -> Recorded:
    """What is recorded for the lookup name `name` (from lookup_name), and only for it."""
    # port=None: `name` is matched as it is, never again without its port; addr='':
    # entries for the address the name resolves to do not count.
    result = known.match(name, "", None)
    return Recorded(_unique(result[0]), _unique(result[1]), _unique(result[2]))


def _unique(keys: object) -> list[asyncssh.SSHKey]:
    """Each key once (several lines can match one name)."""
    seen: dict[bytes, asyncssh.SSHKey] = {}
    for key in keys:  # type: ignore[attr-defined]
        seen.setdefault(key.public_data, key)
    return list(seen.values())


def fingerprint(key: asyncssh.SSHKey) -> str:
    """OpenSSH's spelling: `SHA256:base64` (what `ssh-keygen -lf` prints)."""
    return str(key.get_fingerprint("sha256"))


def key_type(key: asyncssh.SSHKey) -> str:
    return key.get_algorithm()


def record_host_key(path: Path, name: str, key: asyncssh.SSHKey) -> None:
    """Append `name keytype base64` to the known_hosts file `path` (its directory made
    0700 and the file 0600 when new). Appends only: no existing line is touched."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    keytype, blob = key.export_public_key("openssh").decode().split()[:2]
    line = f"{name} {keytype} {blob}"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        if fh.tell() > 0 and not _ends_with_newline(path):
            fh.write("\n")
        fh.write(line + "\n")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
