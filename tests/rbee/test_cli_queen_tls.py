"""`rbee queen start --tls-cert FILE --tls-key FILE`: the files are checked before the
queen does anything else, and a mistake is an error naming the option, the file and the
fix (the checks themselves: tests/kernel/test_tls.py; serving: tests/e2e/test_e2e_tls.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rbee.cli.queen import server_tls
from testkit.live import ROOT
from testkit.tls import TLSFiles, issue


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return issue(tmp_path / "tls", "queen.example")


@pytest.fixture(autouse=True)
def _tls_env_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """server_tls sets RBEE_TLS_CERT/KEY for the settings: gone again after each test."""
    for name in ("RBEE_TLS_CERT", "RBEE_TLS_KEY"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def queen_start(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RBEE_")}
    return subprocess.run(
        [sys.executable, "-m", "rbee.cli", "queen", "start", "--port", "1", *args],
        env={**base, "RBEE_HOME": str(home), "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_a_world_readable_key_stops_the_queen_before_it_starts(
    files: TLSFiles, tmp_path: Path
) -> None:
    files.key.chmod(0o644)
    out = queen_start(tmp_path / "home", "--tls-cert", str(files.cert), "--tls-key", str(files.key))
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: --tls-key {files.key} holds a private key and every user")
    assert f"chmod 600 {files.key}" in out.stderr
    assert not (tmp_path / "home" / "rbee.sqlite3").exists()  # nothing was done before it


def test_the_environment_names_the_files_too(files: TLSFiles, tmp_path: Path) -> None:
    other = issue(tmp_path / "other", "queen.example")
    out = queen_start(
        tmp_path / "home", env={"RBEE_TLS_CERT": str(files.cert), "RBEE_TLS_KEY": str(other.key)}
    )
    assert out.returncode == 1
    assert (
        f"error: --tls-key {other.key} is not the key of the certificate in {files.cert}"
        in out.stderr
    )


def test_one_without_the_other_is_refused(files: TLSFiles, tmp_path: Path) -> None:
    out = queen_start(tmp_path / "home", "--tls-cert", str(files.cert))
    assert out.returncode == 1 and "--tls-cert and --tls-key go together" in out.stderr


def test_an_expired_certificate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    old = issue(
        tmp_path / "old",
        "q.example",
        not_before=now - timedelta(days=90),
        not_after=now - timedelta(days=1),
    )
    with pytest.raises(SystemExit) as exited:
        server_tls(str(old.cert), str(old.key))
    assert exited.value.code == 1
    assert f"error: --tls-cert {old.cert}: the certificate expired on" in capsys.readouterr().err


def test_checked_files_reach_the_settings(files: TLSFiles) -> None:
    assert server_tls(None, None) is None and "RBEE_TLS_CERT" not in os.environ
    checked = server_tls(str(files.cert), str(files.key))
    assert checked is not None and checked.names == ("queen.example",)
    # rbee/profile.py turns on secure cookies and HSTS from it.
    assert os.environ["RBEE_TLS_CERT"] == str(files.cert.resolve())
    assert os.environ["RBEE_TLS_KEY"] == str(files.key.resolve())
