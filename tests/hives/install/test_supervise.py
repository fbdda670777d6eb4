"""The fallback supervisor as the host runs it: detached, restarting its command when it
exits, the env file's variables in the command's environment and never in a command
line, one supervisor per pid file, stopped with its process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.live import ROOT

SECRET = "rbee-hive-s3cr3t-value"


def supervise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hives.install.supervise", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def wait_for(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    return False


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Path]:
    env = tmp_path / "hive.env"
    env.write_text(f"RBEE_HIVE_TOKEN={SECRET}\n# a comment\n\nRBEE_HOME={tmp_path}\n")
    env.chmod(0o600)
    yield tmp_path
    pid_file = tmp_path / "hive.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text())
        os.killpg(pid, signal.SIGKILL)


def test_it_detaches_restarts_and_stops(place: Path) -> None:
    runs = place / "runs"
    child = f'echo "$RBEE_HIVE_TOKEN $RBEE_HOME" >> {runs}; echo "run $$ output"; sleep 0.3; exit 3'
    args = [
        "--env-file",
        str(place / "hive.env"),
        "--daemon",
        "--pid-file",
        str(place / "hive.pid"),
        "--log",
        str(place / "logs" / "hive.log"),
        "--",
        "/bin/sh",
        "-c",
        child,
    ]
    first = supervise(*args)
    assert first.returncode == 0, first.stderr
    pid = int((place / "hive.pid").read_text())
    assert first.stdout.strip() == f"supervisor running (pid {pid})"
    assert alive(pid) and os.getpgid(pid) == pid and os.getsid(pid) == pid

    # The command exits; the supervisor starts it again (after 1 s, then 2 s).
    wait_for("two runs", lambda: runs.exists() and len(runs.read_text().splitlines()) >= 2)
    assert set(runs.read_text().splitlines()) == {f"{SECRET} {place}"}
    log = (place / "logs" / "hive.log").read_text()
    assert "the hive exited with status 3" in log and "restarting in 1 s" in log
    assert "output" in log  # the command's own output goes to the log

    # The secret is in no command line, the supervisor's included.
    assert SECRET.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert SECRET not in log

    # One supervisor per pid file.
    again = supervise(*args)
    assert again.returncode == 1
    assert f"a supervisor already runs with {place / 'hive.pid'} (pid {pid})" in again.stderr

    # Stopped as `rbee hive uninstall` stops it: TERM to its process group.
    os.killpg(pid, signal.SIGTERM)
    wait_for("the supervisor stops", lambda: not alive(pid))
    assert not (place / "hive.pid").exists()
    assert "stopped" in (place / "logs" / "hive.log").read_text().splitlines()[-1]


def test_a_stale_pid_file_does_not_block_a_start(place: Path) -> None:
    (place / "hive.pid").write_text("999999\n")
    proc = supervise(
        "--env-file",
        str(place / "hive.env"),
        "--daemon",
        "--pid-file",
        str(place / "hive.pid"),
        "--log",
        str(place / "hive.log"),
        "--",
        "/bin/sleep",
        "30",
    )
    assert proc.returncode == 0, proc.stderr
    pid = int((place / "hive.pid").read_text())
    assert pid != 999999 and alive(pid)
    os.killpg(pid, signal.SIGTERM)
    wait_for("the supervisor stops", lambda: not alive(pid))


def test_exec_mode_only_adds_the_environment(place: Path) -> None:
    proc = supervise(
        "--env-file",
        str(place / "hive.env"),
        "--exec",
        "--",
        "/bin/sh",
        "-c",
        "echo $RBEE_HIVE_TOKEN",
    )
    assert proc.returncode == 0 and proc.stdout.strip() == SECRET
    missing = supervise("--env-file", str(place / "nope.env"), "--exec", "--", "/bin/true")
    assert missing.returncode == 1 and "cannot read" in missing.stderr
