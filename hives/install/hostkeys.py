"""Host keys: what known_hosts says about a host, and recording a new one.

rbee verifies every host key against known_hosts, as `ssh` does with
`StrictHostKeyChecking yes`: an unknown host is refused with its key's fingerprint until
the operator accepts it (`--accept-new-host-key`, recorded in the first known_hosts
file, like OpenSSH's `accept-new`); a host whose key differs from the recorded one is
always refused and the file is never changed (remove the old line yourself when you know
why it changed: `ssh-keygen -R HOST -f FILE`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import asyncssh


def read_known_hosts(files: tuple[Path, ...]) -> asyncssh.SSHKnownHosts:
    """Every readable file's entries, as one list. Never the empty list asyncssh would
    replace with ~/.ssh/known_hosts: a missing file means no entries."""
    text = []
    for path in files:
        try:
            text.append(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return asyncssh.import_known_hosts("\n".join(text))


def peer_address(host: str, port: int) -> str:
    """The first address `host` resolves to ('' when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return ""
    return str(infos[0][4][0]) if infos else ""


def recorded_keys(
    known: asyncssh.SSHKnownHosts, host: str, addr: str, port: int
) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
    """(trusted keys and CA keys, revoked keys) recorded for host/addr:port."""
    result = known.match(host, addr, None if port == 22 else port)
    trusted, cas, revoked = result[0], result[1], result[2]
    return _unique([*trusted, *cas]), _unique(list(revoked))


def _unique(keys: list[asyncssh.SSHKey]) -> list[asyncssh.SSHKey]:
    """Each key once (a line can match both the host's name and its address)."""
    seen: dict[bytes, asyncssh.SSHKey] = {}
    for key in keys:
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
