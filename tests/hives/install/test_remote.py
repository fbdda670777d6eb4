"""Host keys as OpenSSH checks them, against a real SSH server (asyncssh's, in this
process, on a loopback port that is not 22): the `[host]:port` lookup with no fallback to
the port-22 entry or to the address, hashed names, @revoked and @cert-authority, stray
lines, HostKeyAlias, and a known_hosts file changed only by an accepted new key."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh
import pytest

from hives.install.config import HostEntry
from hives.install.errors import InstallError, InstallErrorCode
from hives.install.remote import Remote


@dataclass
class Server:
    port: int
    host_key: asyncssh.SSHKey
    entry: HostEntry
    known_hosts: Path

    def line(self, name: str, key: asyncssh.SSHKey | None = None, marker: str = "") -> str:
        public = (key or self.host_key).export_public_key("openssh").decode().strip()
        return f"{marker + ' ' if marker else ''}{name} {public}\n"

    @property
    def name(self) -> str:
        return f"[127.0.0.1]:{self.port}"


async def _answer(process: asyncssh.SSHServerProcess) -> None:  # type: ignore[type-arg]
    process.stdout.write("hello from the host\n")
    process.exit(0)


async def _serve(
    tmp_path: Path, host_keys: list[object]
) -> tuple[asyncssh.SSHAcceptor, HostEntry, Path]:
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_ed25519"
    client_key.write_private_key(str(key_file))
    key_file.chmod(0o600)
    server = await asyncssh.create_server(
        asyncssh.SSHServer,
        "127.0.0.1",
        0,
        server_host_keys=host_keys,
        authorized_client_keys=asyncssh.import_authorized_keys(
            client_key.export_public_key().decode()
        ),
        process_factory=_answer,
    )
    port = server.sockets[0].getsockname()[1]
    known = tmp_path / "known_hosts"
    entry = HostEntry(
        alias="gaming-pc",
        path=tmp_path / "hives.conf",
        hostname="127.0.0.1",
        port=port,
        user="vince",
        identity_files=(str(key_file),),
        identities_only=True,
        identity_agent="none",
        known_hosts_files=(known,),
        global_known_hosts_files=(tmp_path / "ssh_known_hosts",),
        connect_timeout=10,
    )
    return server, entry, known


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    acceptor, entry, known = await _serve(tmp_path, [host_key])
    try:
        yield Server(entry.port, host_key, entry, known)
    finally:
        acceptor.close()
        await acceptor.wait_closed()


async def connect(entry: HostEntry, accept: bool = False) -> tuple[str, list[str]]:
    """What the host answered and the notes; an InstallError as it is."""
    notes: list[str] = []
    remote = await Remote.connect(entry, accept_new_host_key=accept, note=notes.append)
    try:
        result = await remote.run("echo", what="saying hello")
    finally:
        await remote.close()
    return result.stdout, notes


async def refused(entry: HostEntry, accept: bool = False) -> InstallError:
    with pytest.raises(InstallError) as err:
        await connect(entry, accept)
    return err.value


def hash_names(path: Path) -> None:
    """Hash the names in a known_hosts file with OpenSSH's own tool."""
    subprocess.run(["ssh-keygen", "-H", "-f", str(path)], check=True, capture_output=True)


def other_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


async def test_another_port_is_looked_up_as_host_port_only(server: Server) -> None:
    # The port-22 entry of the same address, even with this very key, is another
    # host's: OpenSSH says "not known" (asyncssh alone would fall back to it).
    server.known_hosts.write_text(server.line("127.0.0.1"))
    err = await refused(server.entry)
    assert err.code == InstallErrorCode.HOST_KEY_UNKNOWN, err
    assert f"{server.name} is not in known_hosts" in err.message

    # A port-22 entry with another key: still new, not "changed" (whose advice,
    # ssh-keygen -R '[127.0.0.1]:PORT', would remove nothing).
    server.known_hosts.write_text(server.line("127.0.0.1", other_key()))
    before = server.known_hosts.read_text()
    err = await refused(server.entry)
    assert err.code == InstallErrorCode.HOST_KEY_UNKNOWN, err
    assert server.known_hosts.read_text() == before

    # Accepted: recorded as OpenSSH writes it, appended; the port-22 line untouched.
    answer, notes = await connect(server.entry, accept=True)
    assert answer == "hello from the host\n"
    assert server.known_hosts.read_text() == before + server.line(server.name)
    assert any(f"recorded {server.name}'s ssh-ed25519 key" in n for n in notes), notes
    answer, _ = await connect(server.entry)  # known now
    assert answer == "hello from the host\n"


async def test_an_entry_for_the_address_does_not_vouch_for_a_name(server: Server) -> None:
    by_name = replace(server.entry, hostname="localhost")
    server.known_hosts.write_text(server.line(server.name))
    err = await refused(by_name)
    assert err.code == InstallErrorCode.HOST_KEY_UNKNOWN, err
    assert f"[localhost]:{server.port} is not in known_hosts" in err.message
    server.known_hosts.write_text(server.line(f"[localhost]:{server.port}"))
    assert (await connect(by_name))[0] == "hello from the host\n"


async def test_hashed_names_as_ssh_keygen_writes_them(server: Server) -> None:
    server.known_hosts.write_text(server.line(server.name))
    hash_names(server.known_hosts)
    hashed = server.known_hosts.read_text()
    assert hashed.startswith("|1|") and "127.0.0.1" not in hashed
    assert (await connect(server.entry))[0] == "hello from the host\n"

    # A hashed entry with another key: changed, refused, the file as it was.
    server.known_hosts.write_text(server.line(server.name, other_key()))
    hash_names(server.known_hosts)
    before = server.known_hosts.read_bytes()
    for accept in (False, True):
        err = await refused(server.entry, accept)
        assert err.code == InstallErrorCode.HOST_KEY_CHANGED, err
        assert "has CHANGED" in err.message
        assert server.known_hosts.read_bytes() == before


async def test_a_revoked_key_is_refused_even_when_listed_or_accepted(server: Server) -> None:
    server.known_hosts.write_text(server.line(server.name) + server.line("*", marker="@revoked"))
    err = await refused(server.entry)
    assert err.code == InstallErrorCode.HOST_KEY_CHANGED and "is REVOKED" in err.message, err

    server.known_hosts.write_text(server.line("*", marker="@revoked"))
    before = server.known_hosts.read_bytes()
    err = await refused(server.entry, accept=True)
    assert err.code == InstallErrorCode.HOST_KEY_CHANGED and "is REVOKED" in err.message, err
    assert server.known_hosts.read_bytes() == before


async def test_a_stray_line_is_skipped_with_a_warning(server: Server) -> None:
    server.known_hosts.write_text(
        "oneword\n@bogus-marker host ssh-ed25519 AAAA\n" + server.line(server.name)
    )
    answer, notes = await connect(server.entry)
    assert answer == "hello from the host\n"
    assert any(f"{server.known_hosts} line 1:" in n and "skipped" in n for n in notes), notes
    assert any(f"{server.known_hosts} line 2:" in n for n in notes), notes


async def test_host_key_alias_is_the_name_as_written(server: Server) -> None:
    aliased = replace(server.entry, host_key_alias="gaming")
    await connect(aliased, accept=True)
    assert server.known_hosts.read_text() == server.line("gaming")  # no [..]:port
    server.known_hosts.write_text(server.line("gaming"))  # as `ssh -o HostKeyAlias` writes
    assert (await connect(aliased))[0] == "hello from the host\n"


async def test_host_certificates_signed_by_a_cert_authority(tmp_path: Path) -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_host_certificate(host_key, "127.0.0.1", principals=["127.0.0.1"])
    acceptor, entry, known = await _serve(tmp_path, [(host_key, cert)])
    try:
        ca_public = ca.export_public_key("openssh").decode().strip()
        known.write_text(f"@cert-authority [127.0.0.1]:* {ca_public}\n")
        answer, _ = await connect(entry)
        assert answer == "hello from the host\n"
        assert known.read_text() == f"@cert-authority [127.0.0.1]:* {ca_public}\n"

        # Another CA vouches for this name: refused as changed, nothing recorded.
        stranger = other_key().export_public_key("openssh").decode().strip()
        known.write_text(f"@cert-authority [127.0.0.1]:* {stranger}\n")
        err = await refused(entry, accept=True)
        assert err.code == InstallErrorCode.HOST_KEY_CHANGED, err
        assert "signed by the CA" in err.message
    finally:
        acceptor.close()
        await acceptor.wait_closed()
