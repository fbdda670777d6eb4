"""One SSH connection to a host: verified, with commands and files over it.

Connects with the options of the host's hives.conf entry only (never ~/.ssh/config),
the user's agent or IdentityFile, agent forwarding off, and the host key checked
against known_hosts (hostkeys.py): unknown keys are refused with their fingerprint
unless accepted, changed keys always. Commands run through `sh -c` whatever the login
shell; files (the wheel, the token's env file) go over SFTP, so no secret is ever part
of a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from hives.install import hostkeys
from hives.install.config import HostEntry
from hives.install.errors import InstallError, InstallErrorCode

Note = Callable[[str], None]


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 25) -> str:
        text = "\n".join(t for t in (self.stdout.strip(), self.stderr.strip()) if t)
        return "\n".join(text.splitlines()[-lines:])


class RemoteError(Exception):
    """A command on the host failed: what it was for, and the end of its output."""

    def __init__(self, what: str, result: Result | None = None, detail: str = "") -> None:
        self.what = what
        self.result = result
        self.detail = detail or (result.tail() if result else "")
        status = f" (exit status {result.status})" if result is not None else ""
        super().__init__(f"{what} failed{status}" + (f":\n{self.detail}" if self.detail else ""))


def _connect_options(entry: HostEntry) -> dict[str, Any]:
    options: dict[str, Any] = {
        "username": entry.user,
        "agent_forwarding": False,
        "x11_forwarding": False,
        "config": None,  # hives.conf was read already; never ~/.ssh/config on top
        "connect_timeout": entry.connect_timeout,
    }
    if entry.identity_files:
        options["client_keys"] = list(entry.identity_files)
        if entry.identities_only:
            options["agent_identities"] = list(entry.identity_files)
    if entry.identity_agent:
        options["agent_path"] = None if entry.identity_agent == "none" else entry.identity_agent
    if entry.host_key_alias:
        options["host_key_alias"] = entry.host_key_alias
    return options


class Remote:
    """An open, verified connection to `entry`'s host."""

    def __init__(self, conn: asyncssh.SSHClientConnection, entry: HostEntry, fp: str) -> None:
        self.conn = conn
        self.entry = entry
        self.fingerprint = fp
        self._sftp: asyncssh.SFTPClient | None = None

    # --- connecting ------------------------------------------------------------------

    @classmethod
    async def connect(cls, entry: HostEntry, *, accept_new_host_key: bool, note: Note) -> Remote:
        known, skipped = hostkeys.read_known_hosts(
            entry.known_hosts_files + entry.global_known_hosts_files
        )
        for warning in skipped:
            note(f"warning: known_hosts {warning}")
        recorded = hostkeys.recorded_keys(known, entry.known_hosts_name)
        if not recorded.known:
            conn = await cls._new_host(entry, recorded, accept_new_host_key, note)
        else:
            conn = await cls._open(entry, recorded)
        key = conn.get_server_host_key()
        return cls(conn, entry, hostkeys.fingerprint(key) if key else "")

    @classmethod
    async def _open(
        cls, entry: HostEntry, recorded: hostkeys.Recorded
    ) -> asyncssh.SSHClientConnection:
        """Connect, trusting exactly the keys (and CAs) `recorded` holds."""
        try:
            return await asyncssh.connect(
                entry.hostname,
                entry.port,
                known_hosts=recorded.for_asyncssh(),
                **_connect_options(entry),
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise await cls._changed(entry, recorded) from exc
        except asyncssh.PermissionDenied as exc:
            keys = ", ".join(entry.identity_files) or "your ssh-agent and ~/.ssh/id_*"
            raise InstallError(
                InstallErrorCode.CONNECT,
                f"{entry.destination} refused to let {entry.user} in with {keys} "
                f"({exc.reason}); put your public key in {entry.user}'s "
                "~/.ssh/authorized_keys on the host (ssh-copy-id)",
            ) from exc
        except asyncssh.KeyImportError as exc:
            raise InstallError(
                InstallErrorCode.CONNECT,
                f"cannot use the IdentityFile of Host {entry.alias}: {exc}; an encrypted key "
                "must be in your ssh-agent (ssh-add FILE)",
            ) from exc
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise _unreachable(entry, exc) from exc

    @classmethod
    async def _changed(cls, entry: HostEntry, recorded: hostkeys.Recorded) -> InstallError:
        """The error for a host whose key is not the recorded one (or is revoked)."""
        files = ", ".join(str(p) for p in entry.known_hosts_files)
        algs = [a.decode() for k in recorded.host_keys for a in k.sig_algorithms]
        offered = await cls._server_key(entry, algs)
        now = (
            f"{hostkeys.key_type(offered)} {hostkeys.fingerprint(offered)}"
            if offered
            else "no key of the recorded type"
        )
        if offered is not None and recorded.is_revoked(offered):
            return InstallError(
                InstallErrorCode.HOST_KEY_CHANGED,
                f"the host key of {entry.known_hosts_name} ({now}) is REVOKED in known_hosts "
                f"({files}): rbee refuses it",
            )
        was = ", ".join(
            f"{hostkeys.key_type(k)} {hostkeys.fingerprint(k)}" for k in recorded.host_keys
        )
        if recorded.ca_keys:
            cas = ", ".join(hostkeys.fingerprint(k) for k in recorded.ca_keys)
            was = (was + "; " if was else "") + f"host certificates signed by the CA {cas}"
        return InstallError(
            InstallErrorCode.HOST_KEY_CHANGED,
            f"the host key of {entry.known_hosts_name} has CHANGED: known_hosts "
            f"({files}) has {was}, the host now offers {now}. This can "
            "be a machine-in-the-middle attack, or the host was reinstalled; rbee "
            "refuses it and changes nothing. If you know why it changed, remove the old "
            f"key (ssh-keygen -R '{entry.known_hosts_name}' -f FILE) and run again with "
            "--accept-new-host-key",
        )

    @classmethod
    async def _new_host(
        cls,
        entry: HostEntry,
        recorded: hostkeys.Recorded,
        accept_new_host_key: bool,
        note: Note,
    ) -> asyncssh.SSHClientConnection:
        """A host known_hosts has no key for: refused with its key's fingerprint, or,
        when accepted, that key recorded and the connection verified against it."""
        files = ", ".join(str(p) for p in entry.known_hosts_files)
        try:
            offered = await cls._fetch_key(entry, ())
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise _unreachable(entry, exc) from exc
        if offered is None:
            raise InstallError(InstallErrorCode.CONNECT, f"{entry.destination} offered no host key")
        described = f"{hostkeys.key_type(offered)} key fingerprint {hostkeys.fingerprint(offered)}"
        if recorded.is_revoked(offered):
            raise InstallError(
                InstallErrorCode.HOST_KEY_CHANGED,
                f"the host key of {entry.known_hosts_name} ({described}) is REVOKED in "
                f"known_hosts ({files}): rbee refuses it",
            )
        if not accept_new_host_key:
            raise InstallError(
                InstallErrorCode.HOST_KEY_UNKNOWN,
                f"{entry.known_hosts_name} is not in known_hosts ({files}); its {described}. "
                "Check it on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and "
                "run again with --accept-new-host-key to record it",
            )
        hostkeys.record_host_key(entry.known_hosts_files[0], entry.known_hosts_name, offered)
        note(f"recorded {entry.known_hosts_name}'s {described} in {entry.known_hosts_files[0]}")
        # Connect again, verifying against what was just recorded (and nothing else).
        try:
            return await cls._open(entry, hostkeys.Recorded([offered], [], recorded.revoked))
        except InstallError as exc:
            if exc.code != InstallErrorCode.HOST_KEY_CHANGED:
                raise
            raise InstallError(
                InstallErrorCode.HOST_KEY_CHANGED,
                f"{entry.known_hosts_name} offered another host key on the second "
                "connection than on the first; refused",
            ) from exc

    @staticmethod
    async def _fetch_key(entry: HostEntry, algs: Any) -> asyncssh.SSHKey | None:
        """The key the host offers (of one of `algs`, else any), verifying nothing."""
        return await asyncio.wait_for(
            asyncssh.get_server_host_key(
                entry.hostname, entry.port, server_host_key_algs=algs or (), config=None
            ),
            entry.connect_timeout,
        )

    @classmethod
    async def _server_key(cls, entry: HostEntry, algs: Any) -> asyncssh.SSHKey | None:
        try:
            return await cls._fetch_key(entry, algs)
        except (TimeoutError, OSError, asyncssh.Error):
            return None

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        self.conn.close()
        with contextlib.suppress(Exception):
            await self.conn.wait_closed()

    # --- commands --------------------------------------------------------------------

    async def run(
        self,
        script: str,
        *,
        what: str,
        check: bool = True,
        timeout: float | None = 120,
    ) -> Result:
        """Run `script` with `sh -c` on the host; RemoteError (with `what` and the end of
        its output) when it exits non-zero and `check`."""
        try:
            proc = await self.conn.run(
                f"sh -c {shlex.quote(script)}",
                check=False,
                timeout=timeout,
                encoding="utf-8",
                errors="replace",
                stdin=asyncssh.DEVNULL,
            )
        except asyncssh.TimeoutError as exc:
            raise RemoteError(what, detail=f"no answer within {timeout:.0f} s") from exc
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(what, detail=_reason(exc)) from exc
        result = Result(
            status=proc.exit_status if proc.exit_status is not None else -1,
            stdout=str(proc.stdout or ""),
            stderr=str(proc.stderr or ""),
        )
        if check and result.status != 0:
            raise RemoteError(what, result)
        return result

    # --- files -----------------------------------------------------------------------

    async def sftp(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            self._sftp = await self.conn.start_sftp_client()
        return self._sftp

    async def put(self, local: Path, remote: str) -> None:
        sftp = await self.sftp()
        try:
            await sftp.put(str(local), remote)
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(f"uploading {local.name}", detail=_reason(exc)) from exc

    async def write_file(self, path: str, data: bytes | str, *, mode: int) -> None:
        """Write `path` whole: a new file made with `mode` from its first byte (so a
        secret is never readable by others, not even for a moment), then renamed over
        the old one."""
        sftp = await self.sftp()
        raw = data.encode() if isinstance(data, str) else data
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            async with sftp.open(tmp, "wb", attrs=asyncssh.SFTPAttrs(permissions=mode)) as fh:
                await fh.write(raw)
            await sftp.chmod(tmp, mode)
            await sftp.posix_rename(tmp, path)
        except (OSError, asyncssh.Error) as exc:
            with contextlib.suppress(OSError, asyncssh.Error):
                await sftp.remove(tmp)
            raise RemoteError(f"writing {path}", detail=_reason(exc)) from exc

    async def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        sftp = await self.sftp()
        try:
            async with sftp.open(path, "rb") as fh:
                data = await fh.read()
        except asyncssh.SFTPNoSuchFile:
            return None
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(f"reading {path}", detail=_reason(exc)) from exc
        return data if isinstance(data, bytes) else str(data).encode()


def _unreachable(entry: HostEntry, exc: BaseException) -> InstallError:
    return InstallError(
        InstallErrorCode.CONNECT,
        f"cannot reach {entry.destination} (Host {entry.alias} in {entry.path}): {_reason(exc)}",
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
