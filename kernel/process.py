"""This process's identity as a queen instance, written on the usage rows it serves, so
that a later process can tell whether the one that wrote a row is gone:
"HOST/PIDNS/MACHINE:PID:TOKEN" (the host name, the pid namespace, this boot of this
machine, the pid, a token of this start).

A pid means something only on the machine and boot that issued it, in the same pid
namespace. Host names repeat (a compose file's `hostname: queen` on every node) and so
do namespace inodes (the host's initial pid namespace is 4026531836 on every Linux host),
so MACHINE is what tells two nodes apart: the kernel's boot id
(/proc/sys/kernel/random/boot_id, new at every boot, shared by the containers of one
kernel), else /etc/machine-id, else a random token of this process that no other process
can match (then no row of another process is ever judged by its pid, only by its lease).
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid

_TOKEN = uuid.uuid4().hex[:12]

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
MACHINE_ID_PATH = "/etc/machine-id"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(200).strip()
    except OSError:
        return ""


def machine_token(boot_id_path: str = BOOT_ID_PATH, machine_id_path: str = MACHINE_ID_PATH) -> str:
    """16 hex digits naming this boot of this machine: a digest of the kernel's boot id,
    else of the machine id, else random (unique to this process, so it matches no row)."""
    boot = _read(boot_id_path)
    if boot:
        source = f"boot_id:{boot}"
    else:
        machine = _read(machine_id_path)
        if not machine:
            return "r" + uuid.uuid4().hex[:15]
        source = f"machine-id:{machine}"
    return hashlib.sha256(source.encode()).hexdigest()[:16]


_MACHINE = machine_token()


def _pid_namespace() -> str:
    """The pid namespace this process lives in (Linux; "" elsewhere): pids mean nothing
    across namespaces, e.g. between two containers sharing the host's network and name."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _where() -> str:
    # At most 60 + 1 + 10 + 1 + 16 characters: with ":PID:TOKEN" (at most 21 more) the
    # identity fits the 120 characters a usage row keeps, so it is never cut short.
    return f"{socket.gethostname()[:60]}/{_pid_namespace()}/{_MACHINE}"


def instance_id() -> str:
    """This process: where it runs (host, pid namespace, machine boot), its pid, and a
    token of its own (a pid is reused, and in a container every start is pid 1)."""
    return f"{_where()}:{os.getpid()}:{_TOKEN}"


def instance_gone(instance: str) -> bool:
    """Whether the process named by `instance` has certainly ended: it ran on this very
    boot of this machine, in this pid namespace, under this host name (all of it equal),
    and either its pid no longer exists or this very process now holds that pid under
    another token. A process anywhere else, one written in an older form, or one we cannot
    tell about, is not gone (its rows wait for their lease instead)."""
    parts = instance.rsplit(":", 2)
    if len(parts) != 3 or instance == instance_id():
        return False
    where, pid_text, _token = parts
    if where != _where():
        return False
    if not _pid_namespace() or _MACHINE.startswith("r"):
        return False  # no pid namespace, or no machine identity: pids say nothing
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True  # our pid, another token: the earlier holder of this pid is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, owned by someone else
    return False
