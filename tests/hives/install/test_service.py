"""What keeps a hive running: the unit, the plist, the fallback's start script, and the
hive's command line (never the token)."""

from __future__ import annotations

import plistlib
import shlex
import shutil
import subprocess
from pathlib import Path

from hives.install.service import (
    HiveArgs,
    Kind,
    Layout,
    choose_kind,
    env_file_text,
    launchd_plist,
    start_script,
    start_script_for,
    stop_script,
    supervisor_argv,
    systemd_state_script,
    systemd_unit,
    undo_start_script,
)
from hives.install.supervise import parse_env_file

USER = Layout(
    home="/home/vince",
    data="/home/vince/.local/share/rbee",
    config_home="/home/vince/.config",
    is_root=False,
    darwin=False,
)
ROOT = Layout(
    home="/root",
    data="/root/.local/share/rbee",
    config_home="/root/.config",
    is_root=True,
    darwin=False,
)
MAC = Layout(
    home="/Users/vince",
    data="/Users/vince/.local/share/rbee",
    config_home="/Users/vince/.config",
    is_root=False,
    darwin=True,
)
ARGS = HiveArgs(queen_url="https://queen.lan:7833", name="gaming-pc", hive_port=7835)


def test_the_user_unit() -> None:
    assert USER.unit_file == "/home/vince/.config/systemd/user/rbee-hive.service"
    assert systemd_unit(USER, ARGS, system=False) == (
        "# Written by `rbee hive install`; `rbee hive upgrade` rewrites it, "
        "`rbee hive uninstall` removes it.\n"
        "[Unit]\n"
        "Description=rbee hive gaming-pc (queen https://queen.lan:7833)\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        "EnvironmentFile=/home/vince/.local/share/rbee/hive.env\n"
        "ExecStart=/home/vince/.local/share/rbee/venv/bin/rbee hive start "
        "--queen https://queen.lan:7833 --name gaming-pc --status-port 7835\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "TimeoutStopSec=30\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def test_the_system_unit_with_every_option_quoted_for_systemd() -> None:
    args = HiveArgs(
        queen_url="http://10.0.0.1:7833",
        name="old-server",
        hive_port=7900,
        region="eu",
        models=("echo=echo:", "llama?n_ctx=4096&slots=2", "odd name=echo:/a b/100%$HOME"),
        device="cuda:1",
        insecure=True,
        ca_file="/root/.local/share/rbee/queen-ca.pem",
        allow_remote_code=True,
    )
    assert ROOT.unit_file == "/etc/systemd/system/rbee-hive.service"
    unit = systemd_unit(ROOT, args, system=True)
    assert "WantedBy=multi-user.target\n" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (
        "ExecStart=/root/.local/share/rbee/venv/bin/rbee hive start --queen http://10.0.0.1:7833 "
        "--name old-server --status-port 7900 --region eu --model echo=echo: "
        '--model "llama?n_ctx=4096&slots=2" --model "odd name=echo:/a b/100%%$$HOME" '
        "--device cuda:1 --insecure --ca /root/.local/share/rbee/queen-ca.pem "
        "--allow-remote-code"
    )


def test_no_ca_no_insecure_unless_asked() -> None:
    argv = ARGS.argv("/x/rbee")
    assert "--ca" not in argv and "--insecure" not in argv and "--region" not in argv


def test_the_token_lives_in_the_env_file_only() -> None:
    text = env_file_text(token="rbee-hive-abc_DEF-123", rbee_home="/home/vince/.local/share/rbee")
    assert (
        text == "RBEE_HIVE_TOKEN=rbee-hive-abc_DEF-123\nRBEE_HOME=/home/vince/.local/share/rbee\n"
    )
    assert parse_env_file(text + "# note\n\nQUOTED='x y'\n") == {
        "RBEE_HIVE_TOKEN": "rbee-hive-abc_DEF-123",
        "RBEE_HOME": "/home/vince/.local/share/rbee",
        "QUOTED": "x y",
    }
    for argv in (
        ARGS.argv(USER.rbee()),
        supervisor_argv(USER, ARGS, daemon=True),
        supervisor_argv(MAC, ARGS, daemon=False),
    ):
        assert not any("rbee-hive-" in a for a in argv)


def test_the_fallback_start_script() -> None:
    script = start_script(USER, ARGS)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    command = shlex.split(lines[-1])
    assert command[0] == "exec"
    assert command[1:] == supervisor_argv(USER, ARGS, daemon=True)
    assert command[1:8] == [
        "/home/vince/.local/share/rbee/venv/bin/python",
        "-m",
        "hives.install.supervise",
        "--env-file",
        "/home/vince/.local/share/rbee/hive.env",
        "--daemon",
        "--pid-file",
    ]
    assert command[command.index("--") + 1 :] == ARGS.argv(USER.rbee())


def test_the_launchd_plist() -> None:
    assert MAC.plist_file == "/Users/vince/Library/LaunchAgents/dev.rbee.hive.plist"
    plist = plistlib.loads(launchd_plist(MAC, ARGS).encode())
    assert plist["Label"] == "dev.rbee.hive"
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"][:6] == [
        "/Users/vince/.local/share/rbee/venv/bin/python",
        "-m",
        "hives.install.supervise",
        "--env-file",
        "/Users/vince/.local/share/rbee/hive.env",
        "--exec",
    ]
    assert plist["StandardOutPath"] == "/Users/vince/.local/share/rbee/logs/hive.log"


def test_launchd_gets_the_log_directory_it_cannot_make() -> None:
    script = start_script_for(Kind.LAUNCHD, MAC)
    assert script.startswith("mkdir -p /Users/vince/.local/share/rbee/logs && ")
    assert script.index("mkdir") < script.index("launchctl bootstrap")


def test_a_rollback_takes_back_what_starting_the_hive_turned_on() -> None:
    """`systemctl enable` and `loginctl enable-linger` outlive a stopped unit and a
    removed unit file: a failed first install turns them off again; an upgrade of an
    enabled, lingering hive leaves them on (its old hive starts again)."""
    ctl = 'XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}" systemctl --user'
    assert undo_start_script(Kind.SYSTEMD_USER, USER, enabled=False, linger=False) == (
        f"{ctl} stop rbee-hive.service 2>/dev/null; "
        f"{ctl} disable rbee-hive.service 2>/dev/null; "
        "rmdir /home/vince/.config/systemd/user/default.target.wants 2>/dev/null; "
        'loginctl disable-linger "$(id -un)" 2>/dev/null; exit 0'
    )
    assert undo_start_script(Kind.SYSTEMD_USER, USER, enabled=True, linger=True) == (
        f"{ctl} stop rbee-hive.service 2>/dev/null; exit 0"
    )
    assert undo_start_script(Kind.SYSTEMD_USER, USER, enabled=True, linger=False).endswith(
        'loginctl disable-linger "$(id -un)" 2>/dev/null; exit 0'
    )
    assert undo_start_script(Kind.SYSTEMD_SYSTEM, ROOT, enabled=False, linger=False) == (
        "systemctl stop rbee-hive.service 2>/dev/null; "
        "systemctl disable rbee-hive.service 2>/dev/null; exit 0"
    )
    assert undo_start_script(Kind.FALLBACK, USER, enabled=False, linger=False) == (
        stop_script(Kind.FALLBACK, USER)
    )
    probe = systemd_state_script(Kind.SYSTEMD_USER)
    assert f"{ctl} is-enabled rbee-hive.service" in probe
    assert '[ -e "/var/lib/systemd/linger/$(id -un)" ]' in probe
    # What it prints where nothing is installed (no systemd here: is-enabled fails).
    out = subprocess.run(["sh", "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["enabled=no", "linger=no"]


def test_which_service() -> None:
    assert choose_kind(darwin=True, systemd=False, is_root=False) is Kind.LAUNCHD
    assert choose_kind(darwin=False, systemd=True, is_root=True) is Kind.SYSTEMD_SYSTEM
    assert choose_kind(darwin=False, systemd=True, is_root=False) is Kind.SYSTEMD_USER
    assert choose_kind(darwin=False, systemd=False, is_root=True) is Kind.FALLBACK


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """systemd's own parser (`systemd-analyze verify`, no running systemd needed) reads
    both units without a word: the quoting, the escapes, every setting."""
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: apt install systemd"
    for is_root in (False, True):
        layout = Layout(
            home=str(tmp_path),
            data=str(tmp_path / f"data-{is_root}"),
            config_home=str(tmp_path / "config"),
            is_root=is_root,
            darwin=False,
        )
        rbee = Path(layout.rbee())
        rbee.parent.mkdir(parents=True)
        rbee.write_text("#!/bin/sh\n")
        rbee.chmod(0o755)
        Path(layout.env_file).write_text(env_file_text(token="rbee-hive-x", rbee_home=layout.data))
        args = HiveArgs(
            queen_url="http://10.0.0.1:7833",
            name="old-server",
            hive_port=7835,
            region="eu",
            models=("odd name=echo:/a b/100%$HOME", 'quote"d=echo:', "llama?n_ctx=4096&slots=2"),
            insecure=True,
            ca_file=f"{layout.data}/queen-ca.pem",
        )
        unit = tmp_path / f"{is_root}" / "rbee-hive.service"
        unit.parent.mkdir()
        unit.write_text(systemd_unit(layout, args, system=is_root))
        proc = subprocess.run(
            [tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
        )
        assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), unit.read_text()
    # The check is real: a unit systemd cannot use fails it.
    unit.write_text(unit.read_text().replace("--insecure", '--insecure "open'))
    proc = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert proc.returncode != 0 and "Unbalanced quoting" in proc.stderr
