"""Where a hive lives on its host, and what keeps it running.

Layout, under the remote user's data directory (`${XDG_DATA_HOME:-~/.local/share}/rbee`,
also the hive's RBEE_HOME, so its models are there too)::

    venv -> venvs/rbee-0.1.0-1a2b3c4d5e6f   the running install (switched last, atomically)
    venvs/                                   one virtualenv per install; the old one is
                                             removed once the new hive has connected
    hive.env          (0600)  RBEE_HIVE_TOKEN and RBEE_HOME, read by the service only
    install.json              what is installed: version, wheel SHA-256, extras, service
    queen-ca.pem              the queen's CA (hives.conf QueenCA), passed as --ca
    hive.pid, logs/hive.log   the fallback supervisor's pid file and the hive's log
    uploads/                  the wheel while it is checked and installed

What keeps the hive running, by host:

* systemd (it is PID 1: /run/systemd/system exists): a system unit
  /etc/systemd/system/rbee-hive.service when the SSH user is root, else a user unit
  ~/.config/systemd/user/rbee-hive.service with `loginctl enable-linger`, so it runs
  without a login and starts at boot.
* macOS: a launchd plist, ~/Library/LaunchAgents/dev.rbee.hive.plist (or
  /Library/LaunchDaemons for root), KeepAlive.
* anything else (containers, WSL without systemd, CI): the fallback supervisor
  (supervise.py), a small process started in its own session that restarts the hive when
  it exits (backoff 1 s to 30 s), writes hive.pid and appends to logs/hive.log. Nothing
  starts it at boot: `~/.local/share/rbee/start-hive` does, e.g. from `@reboot` in
  crontab. The systemd unit is written all the same (not enabled), so it is there when
  the host moves to systemd, and shows what the hive runs.
"""

from __future__ import annotations

import plistlib
import shlex
from dataclasses import dataclass
from enum import StrEnum

UNIT_NAME = "rbee-hive.service"
LAUNCHD_LABEL = "dev.rbee.hive"


class Kind(StrEnum):
    SYSTEMD_SYSTEM = "systemd-system"
    SYSTEMD_USER = "systemd-user"
    LAUNCHD = "launchd"
    FALLBACK = "fallback"

    @property
    def description(self) -> str:
        return {
            Kind.SYSTEMD_SYSTEM: "systemd system unit",
            Kind.SYSTEMD_USER: "systemd user unit (lingering)",
            Kind.LAUNCHD: "launchd",
            Kind.FALLBACK: "fallback supervisor (no systemd running)",
        }[self]


@dataclass(frozen=True)
class Layout:
    """The paths of one host's install (all absolute, on the host)."""

    home: str
    data: str  # .../.local/share/rbee
    config_home: str  # ~/.config (for the user unit)
    is_root: bool
    darwin: bool

    @property
    def venv(self) -> str:
        return f"{self.data}/venv"

    @property
    def venvs(self) -> str:
        return f"{self.data}/venvs"

    @property
    def uploads(self) -> str:
        return f"{self.data}/uploads"

    @property
    def env_file(self) -> str:
        return f"{self.data}/hive.env"

    @property
    def record(self) -> str:
        return f"{self.data}/install.json"

    @property
    def ca_file(self) -> str:
        return f"{self.data}/queen-ca.pem"

    @property
    def pid_file(self) -> str:
        return f"{self.data}/hive.pid"

    @property
    def logs(self) -> str:
        return f"{self.data}/logs"

    @property
    def log_file(self) -> str:
        return f"{self.logs}/hive.log"

    @property
    def start_script(self) -> str:
        return f"{self.data}/start-hive"

    @property
    def unit_file(self) -> str:
        if self.is_root:
            return f"/etc/systemd/system/{UNIT_NAME}"
        return f"{self.config_home}/systemd/user/{UNIT_NAME}"

    @property
    def plist_file(self) -> str:
        if self.is_root:
            return f"/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist"
        return f"{self.home}/Library/LaunchAgents/{LAUNCHD_LABEL}.plist"

    @property
    def service_file(self) -> str:
        """The file the service manager of this host reads (the unit on Linux)."""
        return self.plist_file if self.darwin else self.unit_file

    def rbee(self, venv: str | None = None) -> str:
        return f"{venv or self.venv}/bin/rbee"

    def python(self, venv: str | None = None) -> str:
        return f"{venv or self.venv}/bin/python"


@dataclass(frozen=True)
class HiveArgs:
    """`rbee hive start`'s arguments for this host (never the token: that is in the env
    file)."""

    queen_url: str
    name: str
    hive_port: int
    region: str | None = None
    models: tuple[str, ...] = ()
    device: str | None = None
    insecure: bool = False
    ca_file: str | None = None
    allow_remote_code: bool = False

    def argv(self, rbee: str) -> list[str]:
        args = [rbee, "hive", "start", "--queen", self.queen_url, "--name", self.name]
        args += ["--status-port", str(self.hive_port)]
        if self.region:
            args += ["--region", self.region]
        for model in self.models:
            args += ["--model", model]
        if self.device:
            args += ["--device", self.device]
        if self.insecure:
            args.append("--insecure")
        if self.ca_file:
            args += ["--ca", self.ca_file]
        if self.allow_remote_code:
            args.append("--allow-remote-code")
        return args


def env_file_text(*, token: str, rbee_home: str) -> str:
    """The env file: KEY=VALUE lines as systemd's EnvironmentFile and the supervisor read
    them (the token is URL-safe base64: no quoting needed, none is used)."""
    return f"RBEE_HIVE_TOKEN={token}\nRBEE_HOME={rbee_home}\n"


def _systemd_word(word: str) -> str:
    """One argument for ExecStart: quoted when it needs it, `%` and `$` escaped (systemd
    expands both)."""
    escaped = word.replace("%", "%%").replace("$", "$$")
    if escaped and all(c.isalnum() or c in "/._-:=+,@" for c in escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(layout: Layout, args: HiveArgs, *, system: bool) -> str:
    exec_start = " ".join(_systemd_word(w) for w in args.argv(layout.rbee()))
    wanted_by = "multi-user.target" if system else "default.target"
    return (
        "# Written by `rbee hive install`; `rbee hive upgrade` rewrites it, "
        "`rbee hive uninstall` removes it.\n"
        "[Unit]\n"
        f"Description=rbee hive {args.name} (queen {args.queen_url})\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"EnvironmentFile={layout.env_file}\n"
        f"ExecStart={exec_start}\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "TimeoutStopSec=30\n"
        "\n"
        "[Install]\n"
        f"WantedBy={wanted_by}\n"
    )


def supervisor_argv(layout: Layout, args: HiveArgs, *, daemon: bool) -> list[str]:
    """The fallback supervisor's command line (with --daemon: detach and return once it
    runs; without: stay in the foreground, as launchd wants it, and exec the hive)."""
    head = [layout.python(), "-m", "hives.install.supervise"]
    head += ["--env-file", layout.env_file]
    if daemon:
        head += ["--daemon", "--pid-file", layout.pid_file, "--log", layout.log_file]
    else:
        head += ["--exec"]
    return [*head, "--", *args.argv(layout.rbee())]


def start_script(layout: Layout, args: HiveArgs) -> str:
    """`start-hive`: starts the fallback supervisor (what install runs, and what a
    `@reboot` crontab line can run)."""
    command = " ".join(shlex.quote(w) for w in supervisor_argv(layout, args, daemon=True))
    return (
        "#!/bin/sh\n"
        "# Written by `rbee hive install`: starts this host's hive under rbee's fallback\n"
        "# supervisor (no systemd here). Run it at boot, e.g. `@reboot` in crontab.\n"
        f"exec {command}\n"
    )


def launchd_plist(layout: Layout, args: HiveArgs) -> str:
    body = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": supervisor_argv(layout, args, daemon=False),
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": 5,
        "StandardOutPath": layout.log_file,
        "StandardErrorPath": layout.log_file,
        "WorkingDirectory": layout.data,
    }
    return plistlib.dumps(body).decode()


def choose_kind(*, darwin: bool, systemd: bool, is_root: bool) -> Kind:
    if darwin:
        return Kind.LAUNCHD
    if systemd:
        return Kind.SYSTEMD_SYSTEM if is_root else Kind.SYSTEMD_USER
    return Kind.FALLBACK


# --- shell snippets run on the host ------------------------------------------------------


def _systemctl(kind: Kind) -> str:
    if kind is Kind.SYSTEMD_SYSTEM:
        return "systemctl"
    return 'XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}" systemctl --user'


def _launchd_domain(layout: Layout) -> str:
    return "system" if layout.is_root else "gui/$(id -u)"


def stop_script(kind: Kind, layout: Layout) -> str:
    """Stop the hive (whatever of it runs), leaving its files; exit 0 when nothing ran."""
    q = shlex.quote
    if kind in (Kind.SYSTEMD_SYSTEM, Kind.SYSTEMD_USER):
        return f"{_systemctl(kind)} stop {UNIT_NAME} 2>/dev/null; exit 0"
    if kind is Kind.LAUNCHD:
        return (
            f"launchctl bootout {_launchd_domain(layout)}/{LAUNCHD_LABEL} 2>/dev/null || "
            f"launchctl unload {q(layout.plist_file)} 2>/dev/null; exit 0"
        )
    # The fallback: TERM the supervisor's process group (it stops the hive, which stops
    # its workers), wait up to 30 s, then KILL what is left. A pid file whose pid now
    # belongs to another program (the supervisor died long ago and the number was
    # reused) is only removed: that program is not ours to stop, and no process of the
    # supervisor's group is left (Linux does not reuse the id of a live group).
    return f"""
{_SHELL_FUNCTIONS}
pidf={q(layout.pid_file)}
[ -f "$pidf" ] || exit 0
pid=$(cat "$pidf" 2>/dev/null)
case "$pid" in ''|*[!0-9]*) rm -f "$pidf"; exit 0;; esac
if other_process "$pid"; then rm -f "$pidf"; exit 0; fi
kill -TERM -"$pid" 2>/dev/null
i=0
while {{ live "$pid" || group_runs "$pid"; }} && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done
kill -KILL -"$pid" 2>/dev/null
rm -f "$pidf"
exit 0
"""


# Shell functions for the fallback's scripts. `other_process PID`: PID runs a program
# that is not rbee's supervisor (its command line, from /proc or ps, lacks the
# supervisor's module); false when it is the supervisor, a zombie, or gone. `live PID`:
# PID runs and is not a zombie (a container's init may leave one unreaped). `group_runs
# PGID`: a process of that group runs, zombies apart (from /proc/*/stat where there is one).
_SHELL_FUNCTIONS = r"""
other_process() {
  if [ -d "/proc/$1" ]; then c=$(tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null)
  else c=$(ps -p "$1" -o args= 2>/dev/null); fi
  case "$c" in ''|*hives.install.supervise*) return 1;; esac
  return 0
}
live() {
  kill -0 "$1" 2>/dev/null || return 1
  { read -r line < "/proc/$1/stat"; } 2>/dev/null || return 0
  set -- ${line##*") "}
  [ "$1" != Z ]
}
group_runs() {
  kill -0 -"$1" 2>/dev/null || return 1
  [ -d /proc/self ] || return 0
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue
    set -- "$1" ${line##*") "}
    [ "$4" = "$1" ] && [ "$2" != Z ] && return 0
  done
  return 1
}
"""


def start_script_for(kind: Kind, layout: Layout) -> str:
    """(Re)start the hive with what is on disk now."""
    q = shlex.quote
    if kind is Kind.SYSTEMD_SYSTEM:
        return (
            f"systemctl daemon-reload && systemctl enable {UNIT_NAME} && "
            f"systemctl restart {UNIT_NAME}"
        )
    if kind is Kind.SYSTEMD_USER:
        ctl = _systemctl(kind)
        return (
            f'loginctl enable-linger "$(id -un)" && {ctl} daemon-reload && '
            f"{ctl} enable {UNIT_NAME} && {ctl} restart {UNIT_NAME}"
        )
    if kind is Kind.LAUNCHD:
        domain = _launchd_domain(layout)
        # launchd opens StandardOutPath itself and does not make its directory: without
        # logs/ the job never starts (exit 78).
        return (
            f"mkdir -p {q(layout.logs)} && "
            f"launchctl bootout {domain}/{LAUNCHD_LABEL} 2>/dev/null; "
            f"launchctl bootstrap {domain} {q(layout.plist_file)} || "
            f"launchctl load -w {q(layout.plist_file)}"
        )
    return f"mkdir -p {q(layout.logs)} && sh {q(layout.start_script)}"


def systemd_state_script(kind: Kind) -> str:
    """Prints `enabled=yes|no` (the unit) and `linger=yes|no` (the user's lingering, as
    logind records it): what starting a hive turns on, to turn off again on a rollback."""
    ctl = _systemctl(kind)
    return (
        f"if {ctl} is-enabled {UNIT_NAME} >/dev/null 2>&1; then echo enabled=yes; "
        "else echo enabled=no; fi; "
        'if [ -e "/var/lib/systemd/linger/$(id -un)" ]; then echo linger=yes; '
        "else echo linger=no; fi"
    )


def undo_start_script(kind: Kind, layout: Layout, *, enabled: bool, linger: bool) -> str:
    """Stop the hive this install started and, under systemd, take back what starting it
    turned on that was off before: the unit's enablement (with the `.wants` link and its
    directory when empty) and the user's lingering."""
    if kind not in (Kind.SYSTEMD_SYSTEM, Kind.SYSTEMD_USER):
        return stop_script(kind, layout)
    ctl = _systemctl(kind)
    steps = [f"{ctl} stop {UNIT_NAME} 2>/dev/null"]
    if not enabled:
        steps.append(f"{ctl} disable {UNIT_NAME} 2>/dev/null")
        if kind is Kind.SYSTEMD_USER:
            wants = f"{layout.config_home}/systemd/user/default.target.wants"
            steps.append(f"rmdir {shlex.quote(wants)} 2>/dev/null")
    if kind is Kind.SYSTEMD_USER and not linger:
        steps.append('loginctl disable-linger "$(id -un)" 2>/dev/null')
    return "; ".join(steps) + "; exit 0"


def running_script(kind: Kind, layout: Layout) -> str:
    """Prints `running DETAIL` or `stopped DETAIL`."""
    q = shlex.quote
    if kind in (Kind.SYSTEMD_SYSTEM, Kind.SYSTEMD_USER):
        ctl = _systemctl(kind)
        return (
            f"state=$({ctl} is-active {UNIT_NAME} 2>/dev/null); "
            f'if [ "$state" = active ]; then echo "running systemd: active"; '
            f'else echo "stopped systemd: ${{state:-unknown}}"; fi'
        )
    if kind is Kind.LAUNCHD:
        return (
            f"if launchctl print {_launchd_domain(layout)}/{LAUNCHD_LABEL} 2>/dev/null "
            "| grep -q 'state = running'; then echo 'running launchd'; "
            "else echo 'stopped launchd'; fi"
        )
    return f"""
{_SHELL_FUNCTIONS}
pidf={q(layout.pid_file)}
pid=$(cat "$pidf" 2>/dev/null)
case "$pid" in ''|*[!0-9]*) echo "stopped no supervisor (no pid file)"; exit 0;; esac
if other_process "$pid"; then
  echo "stopped supervisor pid $pid is gone (another program has its pid)"
elif live "$pid"; then echo "running supervisor pid $pid"
elif group_runs "$pid"; then
  echo "stopped supervisor pid $pid is gone, but what it started still runs" \
    "(install, upgrade or uninstall stops it)"
else echo "stopped supervisor pid $pid is gone"; fi
"""


def log_tail_script(kind: Kind, layout: Layout, lines: int = 30) -> str:
    q = shlex.quote
    if kind in (Kind.SYSTEMD_SYSTEM, Kind.SYSTEMD_USER):
        user = "" if kind is Kind.SYSTEMD_SYSTEM else "--user "
        return f"journalctl {user}-u {UNIT_NAME} -n {lines} --no-pager 2>&1; exit 0"
    return f"tail -n {lines} {q(layout.log_file)} 2>&1; exit 0"


def reload_script(kind: Kind) -> str:
    return f"{_systemctl(kind)} daemon-reload 2>/dev/null; exit 0"


def disable_script(kind: Kind, layout: Layout) -> str:
    """Stop the service and make sure nothing starts it again (before its files go)."""
    if kind in (Kind.SYSTEMD_SYSTEM, Kind.SYSTEMD_USER):
        ctl = _systemctl(kind)
        return f"{ctl} disable --now {UNIT_NAME} 2>/dev/null; exit 0"
    return stop_script(kind, layout)
