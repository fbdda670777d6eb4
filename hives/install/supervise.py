"""rbee's fallback supervisor: keeps a hive running where no systemd does.

    python -m hives.install.supervise --env-file F --daemon --pid-file P --log L -- CMD...
    python -m hives.install.supervise --env-file F --exec -- CMD...

`--daemon` detaches (a new session, stdin from /dev/null), writes its pid to the pid
file and holds a lock on it (flock) for as long as it runs, and runs CMD with the env
file's variables added to its environment (the hive token reaches the hive that way,
never through a command line); when CMD exits it is started again after 1 s, doubling to
30 s while it keeps failing (back to 1 s after a run of a minute). CMD's output comes
through a pipe and is appended to the log with the supervisor's own lines; the log is
rotated (to LOG.1) whenever it passes 10 MiB (`--max-log-bytes`), while CMD runs.
SIGTERM, SIGINT or SIGHUP stop it: CMD gets SIGTERM, 25 s, then SIGKILL, and the pid
file is removed. The first process returns once the pid file is written (exit 0), or with
exit 1 when a supervisor holds that pid file already. Stop it with `kill -TERM -PID` (its
process group).

`--exec` only adds the env file's variables and replaces itself with CMD (for launchd,
which supervises by itself).

Standard library only: it runs on hives, from the hive's virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MAX_LOG_BYTES = 10 * 1024 * 1024
BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
HEALTHY_RUN = 60.0
STOP_GRACE = 25.0


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads ours (comments, quotes)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def read_env_file(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as fh:
        return parse_env_file(fh.read())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _looks_like_us(pid: int) -> bool:
    """Whether `pid` is a supervisor (where /proc says; elsewhere, any live process)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return _alive(pid)
    try:
        return b"hives.install.supervise" in cmdline.read_bytes()
    except OSError:
        return False


def running_pid(pid_file: str) -> int | None:
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _alive(pid) and _looks_like_us(pid) else None


def _say(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} rbee-supervise[{os.getpid()}]: {message}", flush=True)


def _open_log(log: str, max_bytes: int = MAX_LOG_BYTES) -> None:
    """Point stdout and stderr at the log (rotated to LOG.1 past `max_bytes` first)."""
    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > max_bytes:
            path.replace(path.with_name(path.name + ".1"))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class Busy(Exception):
    """Another supervisor holds the pid file."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(pid)
        self.pid = pid


def _hold_pid_file(pid_file: str) -> int:
    """Lock the pid file (made if missing) and write our pid into it; the lock is held
    by the returned descriptor for as long as this process lives. Busy when another
    supervisor holds it."""
    while True:
        fd = os.open(pid_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            try:
                pid: int | None = int(Path(pid_file).read_text().strip())
            except (OSError, ValueError):
                pid = None
            raise Busy(pid) from None
        try:
            same = os.stat(pid_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its last holder removed it while we waited: take the new one
    data = f"{os.getpid()}\n".encode()
    os.pwrite(fd, data, 0)  # never empty for a reader: the old pid, then ours
    os.ftruncate(fd, len(data))
    return fd


class Supervisor:
    def __init__(
        self,
        cmd: list[str],
        env: dict[str, str],
        log: str,
        pid_file: str,
        max_log_bytes: int = MAX_LOG_BYTES,
    ) -> None:
        self.cmd = cmd
        self.env = env
        self.log = log
        self.pid_file = pid_file
        self.max_log_bytes = max_log_bytes
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def _stop(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            _say(f"signal {signum}: stopping the hive")
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.terminate()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, deadline - time.monotonic()))

    def _log(self, data: bytes) -> None:
        """Append the child's output to the log, rotating it when it grows too big."""
        view = memoryview(data)
        while view:
            written = os.write(1, view)
            view = view[written:]
        with contextlib.suppress(OSError):
            if os.fstat(1).st_size > self.max_log_bytes:
                _open_log(self.log, self.max_log_bytes)

    def _pump(self, out: int, child: subprocess.Popen[bytes]) -> int:
        """Copy the child's output to the log until it exits; its exit status."""
        while True:
            if select.select([out], [], [], 0.5)[0]:
                self._log(os.read(out, 65536))
            code = child.poll()
            if code is not None:
                self._drain(out)  # its last words, before the supervisor's own
                return code

    def _drain(self, out: int) -> None:
        """Log what the pipe holds now (bounded: processes the child left behind may
        keep writing; that is read on the next run)."""
        for _ in range(64):
            if not select.select([out], [], [], 0)[0]:
                return
            data = os.read(out, 65536)
            if not data:
                return
            self._log(data)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._stop)
        delay = BACKOFF_START
        # One pipe for the supervisor's life: each run of the command writes into it,
        # and so do processes it leaves behind; the supervisor logs all of it.
        out, into = os.pipe()
        try:
            while not self.stopping:
                _open_log(self.log, self.max_log_bytes)
                started = time.monotonic()
                try:
                    self.child = subprocess.Popen(
                        self.cmd,
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=into,
                        stderr=into,
                        close_fds=True,
                    )
                except OSError as exc:
                    _say(f"cannot start {self.cmd[0]}: {exc}")
                else:
                    if self.stopping:  # a signal came while it was being started
                        self.child.terminate()
                    _say(f"started the hive (pid {self.child.pid})")
                    code = self._pump(out, self.child)
                    _say(f"the hive exited with status {code}")
                if self.stopping:
                    break
                if time.monotonic() - started >= HEALTHY_RUN:
                    delay = BACKOFF_START
                _say(f"restarting in {delay:.0f} s")
                self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        finally:
            self._reap()
            with contextlib.suppress(OSError):
                self._drain(out)
            os.close(out)
            os.close(into)
            with contextlib.suppress(OSError, ValueError):
                if int(Path(self.pid_file).read_text().strip()) == os.getpid():
                    os.unlink(self.pid_file)
            _say("stopped")
        return 0

    def _reap(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            child.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            child.wait()


def daemonize(args: argparse.Namespace, env: dict[str, str]) -> int:
    other = running_pid(args.pid_file)
    if other is not None:
        print(f"a supervisor already runs with {args.pid_file} (pid {other})", file=sys.stderr)
        return 1
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:  # the caller's process: wait until the daemon says it runs
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            said = pipe.read().decode(errors="replace").strip()
        if said.startswith("ok"):
            print(f"supervisor running (pid {said.split()[1]})")
            return 0
        if said.startswith("busy"):
            print(
                f"a supervisor already runs with {args.pid_file} (pid {said[5:] or '?'})",
                file=sys.stderr,
            )
            return 1
        print(f"the supervisor did not start: {said or 'no word from it'}", file=sys.stderr)
        return 1
    os.close(read_fd)
    try:
        os.setsid()  # its own session and process group: `kill -TERM -PID` reaches all
        os.umask(0o077)
        with contextlib.suppress(OSError):
            os.chdir(str(Path(args.pid_file).parent))
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        _hold_pid_file(args.pid_file)  # held (locked) until this process ends
        _open_log(args.log, args.max_log_bytes)
    except Busy as busy:
        os.write(write_fd, f"busy {busy.pid or ''}".encode())
        os._exit(1)
    except OSError as exc:
        os.write(write_fd, f"error {exc}".encode())
        os._exit(1)
    os.write(write_fd, f"ok {os.getpid()}".encode())
    os.close(write_fd)
    _say(f"supervising: {' '.join(args.cmd)}")
    code = Supervisor(args.cmd, env, args.log, args.pid_file, args.max_log_bytes).run()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hives.install.supervise")
    parser.add_argument("--env-file", required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--daemon", action="store_true")
    mode.add_argument("--exec", dest="exec_", action="store_true")
    parser.add_argument("--pid-file")
    parser.add_argument("--log")
    parser.add_argument("--max-log-bytes", type=int, default=MAX_LOG_BYTES)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    if not args.cmd:
        parser.error("give the command to run after --")
    try:
        env = {**os.environ, **read_env_file(args.env_file)}
    except OSError as exc:
        print(f"cannot read {args.env_file}: {exc}", file=sys.stderr)
        return 1
    if args.exec_:
        os.execve(args.cmd[0], args.cmd, env)  # noqa: S606 (argv from our own plist)
    if not args.pid_file or not args.log:
        parser.error("--daemon needs --pid-file and --log")
    return daemonize(args, env)


if __name__ == "__main__":
    sys.exit(main())
