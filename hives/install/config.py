"""hives.conf: the machines `rbee hive install` knows, in ssh_config syntax.

    Host gaming-pc
      HostName 192.168.1.100
      User vince
      HivePort 7835
      Region eu

asyncssh's own OpenSSH config parser reads it (Host patterns with `*` and `!`, Match,
Include, `%` tokens, first value wins), extended with rbee's keys (`KEYS` below). An
option neither OpenSSH nor rbee knows is a warning, never an error, so a typo shows and
a file shared with ~/.ssh/config still loads. A relative `Include` is relative to the
directory of hives.conf (ssh reads its own relative to ~/.ssh).

The hive's name is the Host alias: `rbee hive install gaming-pc` installs the hive
`gaming-pc`. An alias that matches no `Host` line of the file (a bare `Host *` does not
count) is refused, naming the file.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncssh.config import ConfigParseError, SSHClientConfig, SSHConfig

from hives.install import hostkeys
from hives.install.errors import InstallError, InstallErrorCode
from kernel.paths import config_dir

DEFAULT_HIVE_PORT = 7835
EXTRAS = ("hive", "cuda", "s3")  # the extras of the rbee package a hive may want

# rbee's keys: (name as documented, how asyncssh's parser stores it, what it means).
KEYS: tuple[tuple[str, Callable[..., None], str], ...] = (
    ("HivePort", SSHConfig._set_int, "the hive's local status port (default 7835)"),
    ("Region", SSHConfig._set_string, "the hive's region, the operator's record"),
    ("QueenURL", SSHConfig._set_string, "the queen the hive connects to"),
    ("QueenCA", SSHConfig._set_string, "a CA file that signs the queen's TLS certificate"),
    ("Insecure", SSHConfig._set_bool, "allow http:// to a queen beyond loopback"),
    ("Extras", SSHConfig._set_string, "auto, none, or extras such as hive,cuda"),
    ("PipIndexUrl", SSHConfig._set_string, "pip's index on the host (none: no index)"),
    ("PipFindLinks", SSHConfig._append_string, "a wheel directory or page for pip"),
    ("PipTrustedHost", SSHConfig._append_string, "a host pip may reach over plain http"),
    ("Python", SSHConfig._set_string, "the host's Python 3.11+ (default: found on PATH)"),
    ("Models", SSHConfig._append_string_list, "the hive's start models (--model)"),
    ("Device", SSHConfig._set_string, "the device for the start models (--device)"),
    ("TrustModels", SSHConfig._set_bool, "its start models need no approval"),
    ("AllowRemoteCode", SSHConfig._set_bool, "let models with trust_remote_code load"),
)

# OpenSSH options that would change what rbee promises: refused rather than ignored.
_REFUSED = {
    "proxyjump": "ProxyJump is not supported by rbee hive install; reach the host directly",
    "proxycommand": "ProxyCommand is not supported by rbee hive install; reach the host directly",
}
# OpenSSH options rbee reads and overrides, with why (a warning when set).
_OVERRIDDEN = {
    "forwardagent": "rbee never forwards your SSH agent to a hive",
    "stricthostkeychecking": "rbee always checks host keys (accept a new one with "
    "--accept-new-host-key)",
}
_OPENSSH_ONLY = {  # valid OpenSSH options asyncssh does not act on: accepted quietly
    "addkeystoagent",
    "batchmode",
    "checkhostip",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "hashknownhosts",
    "loglevel",
    "serveralivecountmax",
    "updatehostkeys",
    "visualhostkey",
    "forwardx11",
    "localforward",
    "remoteforward",
    "dynamicforward",
    "exitonforwardfailure",
    "numberofpasswordprompts",
    "verifyhostkeydns",
}


class HivesConfig(SSHClientConfig):
    """asyncssh's client config parser with rbee's keys, relative Includes from the
    directory of hives.conf, and a record of which `Host` lines matched."""

    _handlers = {
        **SSHClientConfig._handlers,
        **{name.lower(): (name, handler) for name, handler, _ in KEYS},
    }

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.matched_hosts: list[str] = []
        self.warnings: list[str] = []
        self.refusals: list[str] = []

    def _match_host(self, option: str, args: list[str]) -> None:
        patterns = ",".join(args)
        super()._match_host(option, args)
        if self._matching and patterns.strip() != "*":
            self.matched_hosts.append(patterns)

    def parse(self, path: Path) -> None:
        outer = self._default_path
        self._default_path = path.parent  # relative Includes: beside the including file
        self._scan(path)
        try:
            super().parse(path)
        finally:
            self._default_path = outer

    def _scan(self, path: Path) -> None:
        """Warn about options no one knows; refuse the ones rbee cannot honour."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return  # parse() says what is wrong with the file
        for number, line in enumerate(lines, 1):
            words = line.strip()
            if not words or words.startswith("#"):
                continue
            name = re.split(r"[\s=]", words, maxsplit=1)[0]
            key = name.lower()
            where = f"{path} line {number}"
            if key in _REFUSED:
                self.refusals.append(f"{where}: {_REFUSED[key]}")
            elif key in _OVERRIDDEN:
                self.warnings.append(f"{where}: {name} is ignored: {_OVERRIDDEN[key]}")
            elif key not in self._handlers and key not in _OPENSSH_ONLY:
                self.warnings.append(f"{where}: unknown option {name!r} (ignored)")


# The parser calls handlers from this table, not methods: `Host` goes to ours.
HivesConfig._handlers["host"] = ("Host", HivesConfig._match_host)


@dataclass(frozen=True)
class HostEntry:
    """One host of hives.conf, resolved: how to reach it and what its hive runs."""

    alias: str
    path: Path
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    identity_agent: str | None = None
    known_hosts_files: tuple[Path, ...] = ()  # the first one records new host keys
    global_known_hosts_files: tuple[Path, ...] = ()
    host_key_alias: str = ""
    connect_timeout: float = 15.0
    hive_port: int = DEFAULT_HIVE_PORT
    region: str | None = None
    queen_url: str | None = None
    queen_ca: str | None = None
    insecure: bool = False
    extras: str = "auto"
    pip_index_url: str | None = None
    pip_no_index: bool = False
    pip_find_links: tuple[str, ...] = ()
    pip_trusted_hosts: tuple[str, ...] = ()
    python: str | None = None
    models: tuple[str, ...] = ()
    device: str | None = None
    trust_models: bool | None = None
    allow_remote_code: bool = False
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name this host's key is looked up and recorded under in known_hosts, as
        OpenSSH does: HostKeyAlias as written, else `host` or `[host]:port`."""
        return hostkeys.lookup_name(self.hostname, self.port, self.host_key_alias)


def hives_conf_path() -> Path:
    return config_dir() / "hives.conf"


def _fail(message: str) -> InstallError:
    return InstallError(InstallErrorCode.CONFIG, message)


def _paths(values: object) -> tuple[Path, ...]:
    return tuple(Path(os.path.expanduser(str(v))) for v in _list(values))


def parse_extras(text: str, *, where: str) -> str:
    """'auto', 'none', or a comma-separated list of rbee's extras, normalised."""
    value = text.strip().lower()
    if value in ("auto", "none"):
        return value
    parts = [p.strip() for p in value.split(",") if p.strip()]
    unknown = [p for p in parts if p not in EXTRAS]
    if not parts or unknown:
        raise _fail(
            f"{where}: extras {text!r}: use auto, none, or a comma-separated list of "
            f"{', '.join(EXTRAS)}"
        )
    return ",".join(dict.fromkeys(parts))


def load_host(alias: str, path: Path | None = None) -> HostEntry:
    """The entry for `alias` in hives.conf (default RBEE_CONFIG_DIR/hives.conf)."""
    path = path or hives_conf_path()
    if not path.is_file():
        raise _fail(
            f"no hives.conf at {path}: write one in ssh_config syntax (`Host {alias}`, "
            "`HostName ...`, `User ...`), see the README's 'More machines'"
        )
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", alias):
        raise _fail(
            f"{alias!r} cannot name a hive: a Host alias for rbee hive install is lowercase "
            "letters, digits, '-' and '_' (it becomes the hive's name)"
        )
    try:
        local_user = getpass.getuser()
    except (KeyError, OSError):
        local_user = os.environ.get("USER", "")
    try:
        cfg: HivesConfig = HivesConfig.load(  # type: ignore[assignment]
            None, [path], False, False, False, local_user, (), alias, ()
        )
    except (ConfigParseError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise _fail(f"cannot read {path}: {exc}") from exc
    if cfg.refusals:
        raise _fail("; ".join(cfg.refusals))
    if not cfg.matched_hosts:
        raise _fail(f"no `Host {alias}` in {path}{_hosts_hint(path)}")
    return _entry(alias, path, cfg, local_user)


def _hosts_hint(path: Path) -> str:
    names: list[str] = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            words = shlex.split(line, comments=True) if line.strip() else []
            if len(words) >= 2 and words[0].lower() == "host":
                names.extend(w for w in words[1:] if w != "*")
    except (OSError, ValueError):
        return ""
    return f" (it names: {', '.join(names)})" if names else " (it names no host)"


def _entry(alias: str, path: Path, cfg: HivesConfig, local_user: str) -> HostEntry:
    get = cfg.get
    where = f"{path} (Host {alias})"
    user_known = get("UserKnownHostsFile", None)
    if user_known == []:
        raise _fail(
            f"{where}: UserKnownHostsFile none would skip host key checks, which rbee "
            "always does; name a file or leave it out (~/.ssh/known_hosts)"
        )
    known = _paths(user_known) or (Path.home() / ".ssh" / "known_hosts",)
    global_known = _paths(get("GlobalKnownHostsFile", None)) or (Path("/etc/ssh/ssh_known_hosts"),)
    port = get("HivePort", DEFAULT_HIVE_PORT)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise _fail(f"{where}: HivePort {port!r} is not a port number (1-65535)")
    ssh_port = get("Port", 22)
    if not isinstance(ssh_port, int) or not 0 < ssh_port < 65536:
        raise _fail(f"{where}: Port {ssh_port!r} is not a port number (1-65535)")
    options: dict[str, Any] = {}
    if "PipIndexUrl" in cfg._options:
        index = get("PipIndexUrl")
        options["pip_no_index"] = index is None
        options["pip_index_url"] = index
    extras = get("Extras", "auto")
    timeout = get("ConnectTimeout", None)
    return HostEntry(
        alias=alias,
        path=path,
        hostname=str(get("Hostname", alias)),
        port=ssh_port,
        user=str(get("User", None) or local_user),
        identity_files=tuple(os.path.expanduser(str(f)) for f in _list(get("IdentityFile"))),
        identities_only=bool(get("IdentitiesOnly", False)),
        identity_agent=_opt_str(get("IdentityAgent", None)),
        known_hosts_files=known,
        global_known_hosts_files=global_known,
        host_key_alias=str(get("HostKeyAlias", None) or ""),
        connect_timeout=float(timeout) if isinstance(timeout, int) and timeout > 0 else 15.0,
        hive_port=port,
        region=_opt_str(get("Region", None)),
        queen_url=_opt_str(get("QueenURL", None)),
        queen_ca=_opt_path(get("QueenCA", None)),
        insecure=bool(get("Insecure", False)),
        extras=parse_extras(str(extras) if extras is not None else "none", where=where),
        pip_find_links=tuple(str(v) for v in _list(get("PipFindLinks"))),
        pip_trusted_hosts=tuple(str(v) for v in _list(get("PipTrustedHost"))),
        python=_opt_str(get("Python", None)),
        models=tuple(str(v) for v in _list(get("Models"))),
        device=_opt_str(get("Device", None)),
        trust_models=_opt_bool(get("TrustModels", None)),
        allow_remote_code=bool(get("AllowRemoteCode", False)),
        warnings=tuple(cfg.warnings),
        **options,
    )


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _opt_str(value: object) -> str | None:
    return str(value) if value is not None and str(value) != "" else None


def _opt_path(value: object) -> str | None:
    text = _opt_str(value)
    return os.path.expanduser(text) if text else None


def _opt_bool(value: object) -> bool | None:
    return None if value is None else bool(value)
