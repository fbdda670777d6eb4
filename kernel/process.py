"""This process's identity as a queen instance: "host:pid:boot", written on the usage rows
it serves, so that a later process can tell whether the one that wrote a row is gone."""

from __future__ import annotations

import os
import socket
import uuid

_BOOT = uuid.uuid4().hex[:12]


def instance_id() -> str:
    """This process: its host name, pid and a token of its own (a pid is reused, and in a
    container every start is pid 1). Recomputed after a fork."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{_BOOT}"


def instance_gone(instance: str) -> bool:
    """Whether the process named by `instance` has certainly ended: it ran on this host and
    either its pid no longer exists or this very process now holds that pid under another
    boot token. A process on another host, or one we cannot tell about, is not gone."""
    parts = instance.rsplit(":", 2)
    if len(parts) != 3 or instance == instance_id():
        return False
    host, pid_text, _boot = parts
    if host != socket.gethostname()[:80]:
        return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True  # our pid, another boot token: the earlier holder of this pid is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by someone else
    return False
