"""This process's identity as a queen instance, written on the usage rows it serves, so
that a later process can tell whether the one that wrote a row is gone:
"HOST/PIDNS:PID:BOOT" (the host name, the pid namespace, the pid, a token of this start)."""

from __future__ import annotations

import os
import socket
import uuid

_BOOT = uuid.uuid4().hex[:12]


def _pid_namespace() -> str:
    """The pid namespace this process lives in (Linux; "" elsewhere): pids mean nothing
    across namespaces, e.g. between two containers sharing the host's network and name."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _where() -> str:
    return f"{socket.gethostname()[:60]}/{_pid_namespace()}"


def instance_id() -> str:
    """This process: where it runs (host and pid namespace), its pid, and a token of its
    own (a pid is reused, and in a container every start is pid 1)."""
    return f"{_where()}:{os.getpid()}:{_BOOT}"


def instance_gone(instance: str) -> bool:
    """Whether the process named by `instance` has certainly ended: it ran on this host in
    this pid namespace, and either its pid no longer exists or this very process now holds
    that pid under another boot token. A process elsewhere, or one we cannot tell about, is
    not gone (its rows wait for their lease instead)."""
    parts = instance.rsplit(":", 2)
    if len(parts) != 3 or instance == instance_id():
        return False
    where, pid_text, _boot = parts
    if where != _where() or not where.rpartition("/")[2]:
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
        return False  # it exists, owned by someone else
    return False
