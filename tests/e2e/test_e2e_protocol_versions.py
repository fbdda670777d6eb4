"""Queen and hives of different protocol versions (version 2 added batch frames and
tools in chat jobs), as real processes: a newer queen refuses a hive of the version
before, and an older queen refuses a newer hive, each saying what to upgrade, and the
hive exits rather than retry. The "other" version is this very code with its protocol
constants set as the other release has them (hives/protocol.py), in the process itself."""

from __future__ import annotations

import sys
import time

import pytest

from hives.protocol import PROTOCOL_VERSION
from testkit.live import Deployment, Hive, Queen, free_port, wait_for_model, wait_healthy

pytestmark = pytest.mark.e2e

# `python -c AS_VERSION N OLDEST rbee ARGS...`: rbee, speaking protocol versions OLDEST..N.
AS_VERSION = (
    "import sys\n"
    "import hives.protocol as p\n"
    "p.PROTOCOL_VERSION = int(sys.argv.pop(1))\n"
    "p.OLDEST_COMPATIBLE = int(sys.argv.pop(1))\n"
    "from rbee.cli import main\n"
    "main()\n"
)


def test_a_hive_of_the_version_before_is_refused_with_what_to_do(
    deployment: Deployment,
) -> None:
    """Version 2 added tools to chat jobs: a version-1 hive would answer as if none were
    sent (a silent drop), so this queen refuses it at hello, says to upgrade the hive,
    and the hive exits rather than retry."""
    dep = deployment
    queen = Queen(dep)
    token = dep.rbee("hive", "token", "--name", "old", "--trust-models").stdout.strip()
    hive, log = dep.spawn_program(
        [
            *(sys.executable, "-c", AS_VERSION, "1", "1"),
            *"hive start --name old --status-port -1 --model old-echo=echo:".split(),
            *("--queen", queen.url),
        ],
        "hive-old",
        {"RBEE_HIVE_TOKEN": token},
    )
    deadline = time.monotonic() + 60
    while hive.poll() is None:
        assert time.monotonic() < deadline, f"the hive did not exit:\n{log.read_text()}"
        time.sleep(0.1)
    assert hive.returncode == 2  # refused: retrying cannot help
    said = log.read_text()
    assert "the queen refused this hive" in said
    assert "speaks protocol version 1 " in said
    assert f"speaks protocol version {PROTOCOL_VERSION};" in said
    assert "upgrade the hive" in said
    assert dep.sql("select status from hives_hive where name = 'old'") == [("offline",)]


def test_an_older_queen_refuses_a_newer_hive_clearly_and_the_hive_exits(
    deployment: Deployment,
) -> None:
    dep = deployment
    port = free_port()
    queen, queen_log = dep.spawn_program(
        [
            *(sys.executable, "-c", AS_VERSION, "1", "1"),
            *f"queen start --host 127.0.0.1 --port {port}".split(),
        ],
        "queen-v1",
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, queen, queen_log, "queen")
    token = dep.rbee("hive", "token", "--name", "new", "--trust-models").stdout.strip()
    # This code's hive, which speaks PROTOCOL_VERSION (> 1).
    hive, log = dep.spawn_program(
        [
            *(sys.executable, "-m", "rbee.cli"),
            *"hive start --name new --status-port -1 --model new-echo=echo:".split(),
            *("--queen", url),
        ],
        "hive-new",
        {"RBEE_HIVE_TOKEN": token},
    )
    deadline = time.monotonic() + 60
    while hive.poll() is None:
        assert time.monotonic() < deadline, f"the hive did not exit:\n{log.read_text()}"
        time.sleep(0.1)
    assert hive.returncode == 2  # refused: retrying cannot help
    said = log.read_text()
    assert "the queen refused this hive" in said
    assert f"speaks protocol version {PROTOCOL_VERSION}" in said
    assert "the queen (rbee" in said and "speaks protocol version 1;" in said
    assert "upgrade the queen" in said
    # The queen says why too, and never put the hive online.
    assert "refused hive new: incompatible hive" in queen_log.read_text()
    with pytest.raises(AssertionError):
        wait_for_model(lambda: wait_healthy(url, queen, queen_log, "queen"), "new", "new-echo", 1)
    assert dep.sql("select status from hives_hive where name = 'new'") == [("offline",)]


def test_this_hive_and_queen_speak_the_newest_version(deployment: Deployment) -> None:
    dep = deployment
    queen = Queen(dep)
    hive = Hive(dep, queen, "now", ["now-echo=echo:"])
    assert f"as now (protocol {PROTOCOL_VERSION})" in hive.log.read_text()
