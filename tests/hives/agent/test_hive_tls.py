"""A hive and an https:// queen: the certificate is verified against `--ca FILE` or this
machine's CAs, and a CA option that cannot be used fails at start (the connection itself,
refusals included, is tested against a real queen in tests/e2e/test_e2e_tls.py)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from hives.agent.agent import HiveAgent
from kernel.tls import TLSFilesError
from testkit.live import ROOT
from testkit.tls import TLSFiles, issue


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return issue(tmp_path / "tls", "queen.example")


def agent(queen: str, **kw: object) -> HiveAgent:
    return HiveAgent(queen=queen, token="t", name="h", models=[], status_port=None, **kw)  # type: ignore[arg-type]


def test_an_https_queen_is_verified_against_the_ca_given(files: TLSFiles) -> None:
    a = agent("https://queen.example:7833", ca=files.ca)
    assert a.url == "wss://queen.example:7833/hive/ws"
    assert a.ssl is not None
    assert a.ssl.verify_mode == ssl.CERT_REQUIRED and a.ssl.check_hostname
    # Only that CA: nothing else is trusted.
    assert a.ssl.get_ca_certs(binary_form=True) == [ssl.PEM_cert_to_DER_cert(files.ca.read_text())]
    assert a.ssl.minimum_version == ssl.TLSVersion.TLSv1_2


def test_without_a_ca_the_machines_cas_verify_it() -> None:
    a = agent("https://queen.example:7833")
    assert a.ssl is not None and a.ssl.verify_mode == ssl.CERT_REQUIRED and a.ssl.check_hostname
    assert agent("http://127.0.0.1:7833").ssl is None  # no TLS, nothing to verify


def test_a_ca_file_that_cannot_be_used_stops_the_agent(files: TLSFiles, tmp_path: Path) -> None:
    with pytest.raises(TLSFilesError, match="cannot read it"):
        agent("https://queen.example:7833", ca=tmp_path / "none.pem")
    with pytest.raises(TLSFilesError, match="no PEM certificate"):
        agent("https://queen.example:7833", ca=files.key)


def hive_start(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "rbee.cli", "hive", "start", "--token", "rbee-hive-x"),
            *("--status-port", "-1", "--model", "x=echo:", *args),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_the_cli_names_a_ca_problem_before_it_connects(files: TLSFiles, tmp_path: Path) -> None:
    missing = hive_start("--queen", "https://queen.example:7833", "--ca", str(tmp_path / "x.pem"))
    assert missing.returncode == 1
    assert f"error: --ca {tmp_path / 'x.pem'}: cannot read it" in missing.stderr
    clear = hive_start("--queen", "http://127.0.0.1:7833", "--ca", str(files.ca))
    assert clear.returncode == 1
    assert "--ca is for a queen that serves TLS: its URL is https://" in clear.stderr
    named = hive_start("--queen", "http://127.0.0.1:7833", "--server-name", "queen.example")
    assert named.returncode == 1 and "--server-name is for a queen that serves TLS" in named.stderr
