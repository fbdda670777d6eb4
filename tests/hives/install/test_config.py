"""hives.conf: ssh_config syntax as the seed writes it, rbee's keys, patterns, Include."""

from __future__ import annotations

from pathlib import Path

import pytest

from hives.install.config import DEFAULT_HIVE_PORT, load_host, parse_extras
from hives.install.errors import InstallError, InstallErrorCode

SEED = """\
Host gaming-pc
  HostName 192.168.1.100
  User vince
  HivePort 7835

Host mac-studio
  HostName 192.168.1.101
  User vince
  HivePort 7835

Host old-server
  HostName 192.168.1.102
  User vince
  HivePort 7835
"""


def conf(tmp_path: Path, text: str, name: str = "hives.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_seeds_file_loads_as_written(tmp_path: Path) -> None:
    path = conf(tmp_path, SEED)
    for alias, address in [
        ("gaming-pc", "192.168.1.100"),
        ("mac-studio", "192.168.1.101"),
        ("old-server", "192.168.1.102"),
    ]:
        entry = load_host(alias, path)
        assert (entry.alias, entry.hostname, entry.user, entry.port) == (
            alias,
            address,
            "vince",
            22,
        )
        assert entry.hive_port == 7835
        assert entry.destination == f"vince@{address}:22"
        assert entry.extras == "auto" and entry.queen_url is None and entry.warnings == ()
        assert entry.known_hosts_files == (Path.home() / ".ssh" / "known_hosts",)
        assert entry.known_hosts_name == address


def test_rbee_keys_openssh_keys_and_first_value_wins(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        """\
Host gaming-pc
  HostName=10.0.0.5
  Port 2222
  User vince
  IdentityFile ~/.ssh/id_gaming
  UserKnownHostsFile /etc/rbee/known_hosts /tmp/other
  HostKeyAlias gaming
  ConnectTimeout 7
  region eu
  QUEENURL https://queen.lan:7833
  QueenCA ~/ca.pem
  Insecure no
  Extras hive,cuda
  PipIndexUrl https://pypi.lan/simple
  PipFindLinks /srv/wheels
  PipFindLinks https://wheels.lan/
  PipTrustedHost wheels.lan
  Python /opt/python3.12/bin/python3
  Models llama-3-8b sdxl
  Models whisper-small
  Device cuda:1
  TrustModels yes
  AllowRemoteCode yes

Host *
  User someone-else
  HivePort 9999
  Region us
""",
    )
    e = load_host("gaming-pc", path)
    assert (e.hostname, e.port, e.user) == ("10.0.0.5", 2222, "vince")
    assert e.identity_files == (str(Path.home() / ".ssh" / "id_gaming"),)
    assert e.known_hosts_files == (Path("/etc/rbee/known_hosts"), Path("/tmp/other"))
    assert e.known_hosts_name == "gaming"  # HostKeyAlias as written: OpenSSH adds no port
    assert e.connect_timeout == 7.0
    assert (e.region, e.hive_port) == ("eu", 9999)  # HivePort only under Host *
    assert e.queen_url == "https://queen.lan:7833"
    assert e.queen_ca == str(Path.home() / "ca.pem")
    assert e.insecure is False
    assert e.extras == "hive,cuda"
    assert (e.pip_index_url, e.pip_no_index) == ("https://pypi.lan/simple", False)
    assert e.pip_find_links == ("/srv/wheels", "https://wheels.lan/")
    assert e.pip_trusted_hosts == ("wheels.lan",)
    assert e.python == "/opt/python3.12/bin/python3"
    assert e.models == ("llama-3-8b", "sdxl", "whisper-small")
    assert e.device == "cuda:1"
    assert (e.trust_models, e.allow_remote_code) == (True, True)


def test_host_patterns_and_the_default_port(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        "Host gpu-node-* !gpu-node-99\n  User ops\n  PipIndexUrl none\n\nHost *\n  Extras none\n",
    )
    e = load_host("gpu-node-01", path)
    assert (e.hostname, e.user, e.hive_port) == ("gpu-node-01", "ops", DEFAULT_HIVE_PORT)
    assert (e.pip_no_index, e.pip_index_url) == (True, None)
    assert e.extras == "none"
    # A negated pattern and the catch-all alone do not name a host.
    for alias in ("gpu-node-99", "laptop"):
        with pytest.raises(InstallError) as err:
            load_host(alias, path)
        assert err.value.code is InstallErrorCode.CONFIG
        assert f"no `Host {alias}` in {path}" in err.value.message
        assert "it names: gpu-node-*" in err.value.message


def test_include_is_relative_to_hives_conf(tmp_path: Path) -> None:
    (tmp_path / "hives.d").mkdir()
    conf(tmp_path / "hives.d", "Host lab-box\n  HostName 10.9.9.9\n  Region lab\n", "lab.conf")
    path = conf(tmp_path, "Include hives.d/*.conf\nHost gaming-pc\n  HostName 10.0.0.1\n")
    e = load_host("lab-box", path)
    assert (e.hostname, e.region) == ("10.9.9.9", "lab")
    assert load_host("gaming-pc", path).hostname == "10.0.0.1"


def test_unknown_keys_warn_and_unsafe_ones_are_refused(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        "Host gaming-pc\n  HivPort 7835\n  ForwardAgent yes\n  StrictHostKeyChecking no\n"
        "  ServerAliveCountMax 3\n",
    )
    e = load_host("gaming-pc", path)
    assert e.hive_port == DEFAULT_HIVE_PORT
    assert len(e.warnings) == 3
    assert f"{path} line 2: unknown option 'HivPort' (ignored)" in e.warnings
    assert any("line 3: ForwardAgent is ignored: rbee never forwards" in w for w in e.warnings)
    assert any("line 4: StrictHostKeyChecking is ignored" in w for w in e.warnings)

    for text, words in [
        ("Host gaming-pc\n  ProxyJump bastion\n", "ProxyJump is not supported"),
        ("Host gaming-pc\n  UserKnownHostsFile none\n", "would skip host key checks"),
        ("Host gaming-pc\n  HivePort 70000\n", "HivePort 70000 is not a port number"),
        ("Host gaming-pc\n  HivePort many\n", "Invalid HivePort integer value"),
        ("Host gaming-pc\n  Extras gpu\n", "extras 'gpu': use auto, none"),
        ("Host gaming-pc\n  Insecure maybe\n", "Invalid Insecure boolean value"),
        ('Host gaming-pc\n  HostName "unterminated\n', "cannot read"),
    ]:
        bad = conf(tmp_path, text, "bad.conf")
        with pytest.raises(InstallError) as err:
            load_host("gaming-pc", bad)
        assert words in err.value.message, (text, err.value.message)


def test_a_missing_file_and_an_alias_that_cannot_name_a_hive(tmp_path: Path) -> None:
    with pytest.raises(InstallError) as err:
        load_host("gaming-pc", tmp_path / "nope.conf")
    assert f"no hives.conf at {tmp_path / 'nope.conf'}" in err.value.message
    path = conf(tmp_path, "Host Gaming-PC\n  HostName 10.0.0.1\n")
    with pytest.raises(InstallError) as err:
        load_host("Gaming-PC", path)
    assert "cannot name a hive" in err.value.message


def test_the_default_location_is_rbee_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_CONFIG_DIR", str(tmp_path))
    conf(tmp_path, SEED)
    assert load_host("old-server").hostname == "192.168.1.102"


def test_extras() -> None:
    assert parse_extras(" Auto ", where="x") == "auto"
    assert parse_extras("none", where="x") == "none"
    assert parse_extras("cuda, hive,cuda", where="x") == "cuda,hive"
    with pytest.raises(InstallError):
        parse_extras("hive,rocm", where="x")
    with pytest.raises(InstallError):
        parse_extras(",", where="x")
