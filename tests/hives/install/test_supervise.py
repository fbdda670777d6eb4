"""The fallback supervisor as the host runs it: detached, restarting its command when it
exits, the env file's variables in the command's environment and never in a command
line, one supervisor per pid file, stopped with its process group."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hives.install.service import Kind, Layout, running_script, stop_script
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


def group_members(pgid: int) -> list[int]:
    """Live processes (zombies apart) of the process group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def daemon_args(place: Path, *cmd: str, max_log: int | None = None) -> list[str]:
    args = ["--env-file", str(place / "hive.env"), "--daemon"]
    args += ["--pid-file", str(place / "hive.pid"), "--log", str(place / "logs" / "hive.log")]
    if max_log is not None:
        args += ["--max-log-bytes", str(max_log)]
    return [*args, "--", *cmd]


def layout(place: Path) -> Layout:
    return Layout(home=str(place), data=str(place), config_home="", is_root=False, darwin=False)


def host_sh(script: str) -> str:
    """A script of service.py run as the installer runs it on a host."""
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_log_rotates_while_the_hive_runs(place: Path) -> None:
    # 4000 lines of 100 bytes, then it keeps running: the log passes 100 kB four times
    # over without a restart.
    writer = (
        'i=0; while [ $i -lt 4000 ]; do printf "line %05d %s\\n" $i '
        f'{"x" * 88}; i=$((i+1)); done; printf "finished %s\\n" writing; exec sleep 60'
    )
    proc = supervise(*daemon_args(place, "/bin/sh", "-c", writer, max_log=100_000))
    assert proc.returncode == 0, proc.stderr
    pid = int((place / "hive.pid").read_text())
    log, old = place / "logs" / "hive.log", place / "logs" / "hive.log.1"

    def logged() -> str:  # (hive.log is missing for an instant while it is rotated)
        return "".join(p.read_text() for p in (old, log) if p.exists())

    wait_for("the writer is done", lambda: "finished writing" in logged())
    assert old.exists()
    assert log.stat().st_size <= 100_000 + 65_536 and old.stat().st_size <= 100_000 + 65_536
    assert "line 03999 " in logged() and "started the hive" not in logged()  # no restart
    assert alive(pid)
    os.killpg(pid, signal.SIGTERM)
    wait_for("the supervisor stops", lambda: not alive(pid))


def test_one_supervisor_per_pid_file_even_when_two_start_at_once(place: Path) -> None:
    # Whoever holds the pid file's lock runs; here this test holds it, with a pid file
    # that names no supervisor, so only the lock can refuse the second one.
    pid_file = place / "hive.pid"
    fd = os.open(pid_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = supervise(*daemon_args(place, "/bin/sleep", "30"))
        assert proc.returncode == 1, proc.stdout
        assert f"a supervisor already runs with {pid_file} (pid {os.getpid()})" in proc.stderr
        assert pid_file.read_text() == f"{os.getpid()}\n"
    finally:
        os.close(fd)
    os.unlink(pid_file)


def test_stop_and_status_leave_a_program_that_reused_the_pid_alone(place: Path) -> None:
    # The supervisor died long ago; its pid now belongs to another program, which
    # leads a process group of its own (as a session leader does).
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (place / "hive.pid").write_text(f"{stranger.pid}\n")
        lay = layout(place)
        state = host_sh(running_script(Kind.FALLBACK, lay))
        assert state.startswith("stopped supervisor pid"), state
        assert "another program has its pid" in state
        host_sh(stop_script(Kind.FALLBACK, lay))
        assert stranger.poll() is None  # not ours to stop
        assert not (place / "hive.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_a_killed_supervisor_shows_and_its_hive_is_still_stopped(place: Path) -> None:
    proc = supervise(*daemon_args(place, "/bin/sleep", "300"))
    assert proc.returncode == 0, proc.stderr
    pid = int((place / "hive.pid").read_text())
    lay = layout(place)
    assert host_sh(running_script(Kind.FALLBACK, lay)) == f"running supervisor pid {pid}\n"
    wait_for("the hive runs", lambda: "started the hive" in (place / "logs/hive.log").read_text())
    os.kill(pid, signal.SIGKILL)  # the supervisor alone: its hive (sleep) runs on
    wait_for("the supervisor is gone", lambda: not alive(pid))
    state = host_sh(running_script(Kind.FALLBACK, lay))
    assert state.startswith(f"stopped supervisor pid {pid} is gone, but what it started"), state
    host_sh(stop_script(Kind.FALLBACK, lay))
    assert group_members(pid) == []  # nothing of its group runs (zombies apart)
    assert not (place / "hive.pid").exists()
