"""`rbee hive install|upgrade|status|uninstall HOST`: the steps, in order.

Install (and upgrade, which is install again with the queen's current version)::

    [1/9] connect          SSH, host key verified against known_hosts
    [2/9] detect           OS, CPU, NVIDIA GPUs, Python 3.11+ with venv, systemd -> extra
    [3/9] wheel            the queen's own wheel and its recorded SHA-256
    [4/9] upload           SFTP to uploads/, SHA-256 checked on the host
    [5/9] virtualenv       a NEW venv under venvs/, pip install 'rbee[extra]' from the wheel
    [6/9] token            kept if the queen still knows it (unless --new-token), else issued;
                           written over SFTP to hive.env.new (0600), never in a command line
    [7/9] service          the old hive stopped; unit/plist/start script, hive.env, the
                           `venv` symlink and install.json switched to the new install
    [8/9] start            systemd / launchd / the fallback supervisor
    [9/9] connected        the queen's database shows the hive connected anew, with the
                           queen's version; its devices are printed

Every step that changes the host pushes how to undo it. When a step fails (or the
command is interrupted), the undo actions run newest first: the new hive is stopped, the
old files, symlink and env file are put back, the old hive is started again, the new
venv and the upload are removed (and the data directory, if this install made it), and a
token issued for a hive that never had one is revoked. Only then does the old venv go,
after the new hive has connected. A token replaced by `--new-token` cannot be given back:
the old one stops working when the new one is issued (step 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from hives.agent.policy import insecure_queen_refusal
from hives.install import detect, queen, service, supervise
from hives.install import wheel as wheels
from hives.install.config import HostEntry, load_host, parse_extras
from hives.install.errors import InstallError, InstallErrorCode
from hives.install.remote import Remote, RemoteError
from hives.install.service import HiveArgs, Kind, Layout
from kernel.errors import DomainError

Out = Callable[[str], None]
Undo = Callable[[], Awaitable[None]]

INSTALL_STEPS = 9


@dataclass
class Options:
    accept_new_host_key: bool = False
    extras: str | None = None  # --extras: over hives.conf's Extras
    queen_url: str | None = None  # --queen: over hives.conf's QueenURL and RBEE_PUBLIC_URL
    insecure: bool = False  # --insecure: as hives.conf's `Insecure yes`
    new_token: bool = False
    wait: float = 120.0  # seconds for the hive to connect (step 9)
    wheel: Path | None = None
    purge: bool = False  # uninstall: the whole data directory, models included
    actor: str = "cli"
    config: Path | None = None  # hives.conf (default RBEE_CONFIG_DIR/hives.conf)


@dataclass
class Previous:
    """What the host had before this run (to switch from, and to put back)."""

    data_existed: bool
    record: dict[str, Any] | None
    record_raw: bytes | None  # install.json as it was, byte for byte (to put back)
    venv_target: str  # where `venv` pointed ('' when there was none)
    env: bytes | None
    ca: bytes | None
    files: dict[str, bytes | None] = field(default_factory=dict)  # service files by path

    @property
    def kind(self) -> Kind | None:
        raw = (self.record or {}).get("service")
        try:
            return Kind(str(raw)) if raw else None
        except ValueError:
            return None


class Progress:
    def __init__(self, out: Out, total: int) -> None:
        self.out = out
        self.total = total
        self.number = 0
        self.text = ""

    def step(self, text: str) -> None:
        self.number += 1
        self.text = text
        self.out(f"[{self.number}/{self.total}] {text}")

    def detail(self, text: str) -> None:
        self.out(f"      {text}")

    def failed(
        self, reason: str, undone: str, code: InstallErrorCode = InstallErrorCode.STEP
    ) -> InstallError:
        return InstallError(
            code, f"step {self.number}/{self.total} ({self.text}) failed: {reason}\n{undone}"
        )


def tilde(path: str, home: str) -> str:
    return "~" + path[len(home) :] if home and path.startswith(home + "/") else path


# --- the queen URL ----------------------------------------------------------------------


def queen_url_for(entry: HostEntry, options: Options, public_url: str) -> tuple[str, bool, str]:
    """(the URL the hive connects to, whether it runs with --insecure, a warning or '')."""
    url = (options.queen_url or entry.queen_url or public_url or "").strip().rstrip("/")
    if not url:
        raise InstallError(
            InstallErrorCode.CONFIG,
            f"no queen URL for the hive on {entry.alias}: set `QueenURL https://queen:7833` "
            f"under Host {entry.alias} in {entry.path}, pass --queen URL, or set "
            "RBEE_PUBLIC_URL",
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InstallError(
            InstallErrorCode.CONFIG, f"queen URL {url!r}: use http://HOST:7833 or https://HOST"
        )
    if entry.queen_ca and parts.scheme != "https":
        # `rbee hive start` refuses --ca for a queen it reaches without TLS.
        raise InstallError(
            InstallErrorCode.CONFIG,
            f"QueenCA {entry.queen_ca} is for a queen that serves TLS, but the hive on "
            f"{entry.alias} would reach {url}: give an https:// QueenURL (or --queen), or "
            "drop QueenCA",
        )
    insecure = options.insecure or entry.insecure
    ws = ("wss" if parts.scheme == "https" else "ws") + url[len(parts.scheme) :]
    problem = insecure_queen_refusal(ws, insecure=insecure)
    if problem:
        raise InstallError(
            InstallErrorCode.CONFIG,
            f"the hive would refuse {url}: it is plain http:// to another machine, so the "
            "hive token and every prompt would cross the network in clear. Use an https:// "
            f"queen (QueenURL, with QueenCA for a private CA), or, on a network you trust, "
            f"`Insecure yes` under Host {entry.alias} (or --insecure)",
        )
    warning = ""
    if parts.hostname in ("localhost", "127.0.0.1", "::1"):
        warning = (
            f"the queen URL {url} is the host's own loopback: the hive on {entry.alias} will "
            "look for the queen on itself (set QueenURL to an address the host reaches)"
        )
    return url, insecure, warning


# --- the host ---------------------------------------------------------------------------


async def _detect(remote: Remote, entry: HostEntry) -> detect.HostFacts:
    result = await remote.run(detect.detect_script(entry.python), what="detecting the host")
    facts = detect.parse_facts(result.stdout)
    if not facts.home or not facts.data_home:
        raise RemoteError("detecting the host", result, "no home directory reported")
    return facts


def layout_for(facts: detect.HostFacts) -> Layout:
    return Layout(
        home=facts.home,
        data=f"{facts.data_home}/rbee",
        config_home=facts.config_home,
        is_root=facts.is_root,
        darwin=facts.os == "Darwin",
    )


async def _previous(remote: Remote, layout: Layout) -> Previous:
    q = shlex.quote
    probe = await remote.run(
        f"[ -d {q(layout.data)} ] && echo data=yes; "
        f"[ -L {q(layout.venv)} ] && echo venv=$(readlink {q(layout.venv)}); exit 0",
        what="reading what is installed",
    )
    lines = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    raw = await remote.read_file(layout.record)
    record: dict[str, Any] | None = None
    if raw:
        with contextlib.suppress(ValueError):
            loaded = json.loads(raw)
            record = loaded if isinstance(loaded, dict) else None
    files = {}
    for path in (layout.service_file, layout.start_script):
        files[path] = await remote.read_file(path)
    return Previous(
        data_existed=lines.get("data") == "yes",
        record=record,
        record_raw=raw,
        venv_target=lines.get("venv", "").strip(),
        env=await remote.read_file(layout.env_file),
        ca=await remote.read_file(layout.ca_file),
        files=files,
    )


async def _systemd_before(remote: Remote, kind: Kind) -> tuple[bool, bool]:
    """(the unit was enabled, the user lingered) before this install."""
    probe = await remote.run(
        service.systemd_state_script(kind), what="reading the service's state", check=False
    )
    lines = set(probe.stdout.split())
    return "enabled=yes" in lines, "linger=yes" in lines


async def _restore(remote: Remote, path: str, content: bytes | None, mode: int) -> None:
    if content is None:
        await remote.run(f"rm -f {shlex.quote(path)}", what=f"removing {path}")
    else:
        await remote.write_file(path, content, mode=mode)


async def _point_venv(remote: Remote, layout: Layout, target: str) -> None:
    """Switch the `venv` symlink to `target` atomically ('' removes it)."""
    q = shlex.quote
    if not target:
        await remote.run(f"rm -f {q(layout.venv)}", what="removing the venv link")
        return
    tmp = f"{layout.venv}.new"
    await remote.run(
        f"rm -f {q(tmp)} && ln -s {q(target)} {q(tmp)} && "
        f"{{ mv -T {q(tmp)} {q(layout.venv)} 2>/dev/null || mv -h {q(tmp)} {q(layout.venv)}; }}",
        what="switching the venv link",
    )


# --- install ----------------------------------------------------------------------------


class Installer:
    def __init__(self, alias: str, options: Options, out: Out) -> None:
        self.alias = alias
        self.options = options
        self.out = out
        self.undo: list[tuple[str, Undo]] = []

    def _push(self, what: str, action: Undo) -> None:
        self.undo.append((what, action))

    async def _rollback(self) -> str:
        if not self.undo:
            return "nothing on the host was changed"
        problems = []
        while self.undo:
            what, action = self.undo.pop()
            try:
                await action()
            except Exception as exc:
                problems.append(f"{what}: {exc}")
        if problems:
            return "undoing it did not fully work: " + "; ".join(problems)
        return "the host was left as it was"

    async def run(self, *, upgrade: bool) -> int:
        entry = load_host(self.alias, self.options.config)
        for warning in entry.warnings:
            self.out(f"warning: {warning}")
        extras_cfg = (
            parse_extras(self.options.extras, where="--extras")
            if self.options.extras
            else entry.extras
        )
        url, insecure, url_warning = queen_url_for(
            entry, self.options, await asyncio.to_thread(queen.public_url)
        )
        if url_warning:
            self.out(f"warning: {url_warning}")
        ca_bytes = _read_ca(entry.queen_ca) if entry.queen_ca else None
        progress = Progress(self.out, INSTALL_STEPS)
        progress.step(f"connecting to {entry.destination}")
        remote = await Remote.connect(
            entry, accept_new_host_key=self.options.accept_new_host_key, note=progress.detail
        )
        try:
            progress.detail(f"host key {remote.fingerprint} verified")
            return await self._install(
                remote, entry, progress, url, insecure, extras_cfg, upgrade, ca_bytes
            )
        finally:
            await remote.close()

    async def _install(
        self,
        remote: Remote,
        entry: HostEntry,
        progress: Progress,
        url: str,
        insecure: bool,
        extras_cfg: str,
        upgrade: bool,
        ca_bytes: bytes | None,
    ) -> int:
        name = entry.alias
        version = wheels.queen_version()
        q = shlex.quote
        try:
            progress.step("detecting the host")
            facts = await _detect(remote, entry)
            python = facts.python()
            if python is None:
                raise InstallError(InstallErrorCode.HOST, f"{name}: {facts.python_problem()}")
            layout = layout_for(facts)
            kind = service.choose_kind(
                darwin=layout.darwin, systemd=facts.systemd, is_root=facts.is_root
            )
            choice = detect.choose_extras(facts, extras_cfg)
            previous = await _previous(remote, layout)
            if upgrade and previous.record is None:
                raise InstallError(
                    InstallErrorCode.NOT_INSTALLED,
                    f"no hive is installed on {name} ({layout.record} is missing): "
                    f"`rbee hive install {name}` installs one",
                )
            progress.detail(
                f"{facts.describe()}; Python {python.version_text} ({python.path}); "
                f"{kind.description}"
            )
            progress.detail(
                f"extra: rbee{choice.requirement_suffix} ({choice.label}: {choice.why})"
            )
            if previous.record:
                progress.detail(
                    f"installed now: rbee {previous.record.get('version', '?')} "
                    f"({previous.record.get('extras_label', '?')}); upgrading in place"
                )

            progress.step(f"preparing the rbee {version} wheel")
            wheel = await asyncio.to_thread(wheels.queen_wheel, self.options.wheel)
            progress.detail(f"{wheel.name}: {wheel.origin}, SHA-256 {wheel.sha256[:16]}…")

            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            upload_dir = f"{layout.uploads}/{stamp}-{uuid.uuid4().hex[:6]}"
            remote_wheel = f"{upload_dir}/{wheel.name}"
            progress.step(f"uploading {wheel.name} ({wheel.path.stat().st_size // 1024} KiB)")
            if not previous.data_existed:
                await self._make_dirs(remote, str(PurePosixPath(layout.data).parent), layout)
                self._push("removing the data directory", self._rm(remote, layout.data))
            await self._make_dirs(remote, upload_dir, layout)
            await self._make_dirs(remote, layout.venvs, layout)
            await remote.run(f"chmod 700 {q(layout.data)}", what="closing the data directory")
            self._push("removing the upload", self._rm(remote, upload_dir))
            await remote.put(wheel.path, remote_wheel)
            got = await remote.run(
                f"{q(python.path)} -c {q(_SHA256_PY)} {q(remote_wheel)}",
                what="checking the wheel's SHA-256 on the host",
            )
            remote_sha = got.stdout.strip()
            if remote_sha != wheel.sha256:
                raise RemoteError(
                    "checking the wheel's SHA-256 on the host",
                    detail=f"the uploaded {wheel.name} has SHA-256 {remote_sha or '?'}, but "
                    f"{wheel.sha256} was recorded when it was made: refused (the cached "
                    f"wheel changed, or the upload was corrupted)",
                )
            progress.detail(f"SHA-256 {remote_sha[:16]}… matches on the host")

            venv = f"{layout.venvs}/rbee-{version}-{wheel.sha256[:12]}-{stamp}"
            progress.step(
                f"installing rbee {version} ({choice.label}) into {tilde(venv, layout.home)}"
            )
            self._push("removing the new virtualenv", self._rm(remote, venv))
            await remote.run(f"{q(python.path)} -m venv {q(venv)}", what="making the virtualenv")
            pip = [f"{venv}/bin/python", "-m", "pip", "install", "--disable-pip-version-check"]
            pip += ["--no-input", "--progress-bar", "off"]
            pip.append(remote_wheel + choice.requirement_suffix)
            command = "exec " + " ".join(q(w) for w in pip)
            settings = pip_env_text(entry)
            if settings:
                # hives.conf's index and wheel URLs may carry credentials: they reach pip
                # through its environment, from a 0600 file, never on a command line.
                pip_env = f"{upload_dir}/pip.env"
                await remote.write_file(pip_env, settings, mode=0o600)
                command = f"set -a && . {q(pip_env)} && set +a && {command}"
            await remote.run(command, what="pip install", timeout=None)
            check = await remote.run(f"{q(layout.rbee(venv))} --version", what="running rbee")
            if version not in check.stdout:
                raise RemoteError("running rbee", check, f"expected version {version}")

            progress.step("handing the hive its token")
            token = await self._token(remote, entry, previous, layout, progress)
            env_new = f"{layout.env_file}.new"
            self._push("removing the new env file", self._rm(remote, env_new))
            await remote.write_file(
                env_new, service.env_file_text(token=token, rbee_home=layout.data), mode=0o600
            )
            del token
            progress.detail(
                f"in {tilde(layout.env_file, layout.home)} (mode 0600), read by the service"
            )
            ca_file = None
            if ca_bytes is not None:
                ca_file = layout.ca_file
                self._push("removing the new CA file", self._rm(remote, f"{ca_file}.new"))
                await remote.write_file(f"{ca_file}.new", ca_bytes, mode=0o644)

            args = HiveArgs(
                queen_url=url,
                name=name,
                hive_port=entry.hive_port,
                region=entry.region,
                models=entry.models,
                device=entry.device,
                insecure=insecure,
                ca_file=ca_file,
                allow_remote_code=entry.allow_remote_code,
            )
            progress.step(f"writing the service: {kind.description}")
            systemd = kind in (Kind.SYSTEMD_SYSTEM, Kind.SYSTEMD_USER)
            enabled, linger = await _systemd_before(remote, kind) if systemd else (False, False)
            old_kind = previous.kind
            if old_kind is not None:
                await remote.run(
                    service.stop_script(old_kind, layout), what="stopping the old hive"
                )
                self._push(
                    "starting the old hive again",
                    self._cmd(remote, service.start_script_for(old_kind, layout), "start old hive"),
                )
            if systemd:  # once the unit files are put back: systemd reads them again
                self._push(
                    "reloading systemd", self._cmd(remote, service.reload_script(kind), "reload")
                )
            await self._write_service(remote, layout, args, kind, previous, progress)
            self._push(
                "putting the env file back",
                lambda: _restore(remote, layout.env_file, previous.env, 0o600),
            )
            await remote.run(f"mv -f {q(env_new)} {q(layout.env_file)}", what="switching hive.env")
            if ca_file:
                self._push(
                    "putting the CA file back",
                    lambda: _restore(remote, layout.ca_file, previous.ca, 0o644),
                )
                await remote.run(f"mv -f {q(ca_file)}.new {q(ca_file)}", what="switching the CA")
            self._push(
                "switching the venv link back",
                lambda: _point_venv(remote, layout, previous.venv_target),
            )
            await _point_venv(remote, layout, venv)
            record = {
                "name": name,
                "version": version,
                "sha256": wheel.sha256,
                "wheel": wheel.name,
                "extras": list(choice.extras),
                "extras_label": choice.label,
                "service": kind.value,
                "service_file": layout.service_file,
                "venv": venv,
                "queen": url,
                "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            self._push(
                "putting install.json back",
                lambda: _restore(remote, layout.record, previous.record_raw, 0o644),
            )
            await remote.write_file(layout.record, json.dumps(record, indent=2) + "\n", mode=0o644)

            progress.step("starting the hive")
            before = await asyncio.to_thread(queen.hive_view, name=name)
            marker = before.connected_at if before else None
            undo_start = service.undo_start_script(kind, layout, enabled=enabled, linger=linger)
            self._push("stopping the new hive", self._cmd(remote, undo_start, "stop new hive"))
            await remote.run(service.start_script_for(kind, layout), what="starting the hive")

            progress.step(f"waiting for {name} to connect to the queen at {url}")
            view = await self._wait(remote, name, kind, layout, marker, version)
        except (DomainError, RemoteError, OSError) as exc:
            # DomainError: ours, or the queen's (an invalid Region from hives.services).
            code = (
                InstallErrorCode(exc.code)
                if isinstance(exc, InstallError)
                else InstallErrorCode.STEP
            )
            reason = exc.message if isinstance(exc, DomainError) else str(exc)
            raise progress.failed(reason, await self._rollback(), code) from exc
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            raise progress.failed("interrupted", await self._rollback()) from exc
        except Exception as exc:  # a bug of ours: still undo what was done, then say it
            undone = await self._rollback()
            raise progress.failed(f"{type(exc).__name__}: {exc}", undone) from exc
        self.undo.clear()
        # The new hive runs: the old venv and the upload can go.
        await remote.run(
            f'for d in {q(layout.venvs)}/*; do [ "$d" = {q(venv)} ] || rm -rf "$d"; done; '
            f"rm -rf {q(upload_dir)}",
            what="removing the old virtualenv",
            check=False,
        )
        self._report(view, name)
        return 0

    async def _token(
        self,
        remote: Remote,
        entry: HostEntry,
        previous: Previous,
        layout: Layout,
        progress: Progress,
    ) -> str:
        name = entry.alias
        old = (
            supervise.parse_env_file(previous.env.decode(errors="replace")).get(
                "RBEE_HIVE_TOKEN", ""
            )
            if previous.env
            else ""
        )
        actor = self.options.actor
        if old and not self.options.new_token:
            if await asyncio.to_thread(queen.token_is_current, name=name, token=old):
                await asyncio.to_thread(
                    queen.record_update,
                    name=name,
                    region=entry.region,
                    trust_models=entry.trust_models,
                    actor=actor,
                )
                progress.detail("kept the hive's token (the queen still knows it)")
                return old
            progress.detail("the token on the host is no longer valid: issuing a new one")
        before = await asyncio.to_thread(queen.hive_view, name=name)
        # A hive the queen does not know, or whose token is revoked (an earlier install
        # that was undone, `rbee hive revoke`), gets its token revoked again if this
        # install is undone; a working token it had is gone once this one is issued.
        existed = before is not None and before.status != "revoked"
        token = await asyncio.to_thread(
            queen.token_issue,
            name=name,
            region=entry.region,
            trust_models=entry.trust_models,
            actor=actor,
        )
        if not existed:

            async def revoke() -> None:
                await asyncio.to_thread(queen.token_revoke, name=name, actor=actor)

            self._push("revoking the token issued for the new hive", revoke)
        progress.detail(
            f"issued a new token for the hive {name} on the queen"
            + (" (the old one no longer works)" if existed else "")
        )
        return token

    async def _write_service(
        self,
        remote: Remote,
        layout: Layout,
        args: HiveArgs,
        kind: Kind,
        previous: Previous,
        progress: Progress,
    ) -> None:
        writes: list[tuple[str, str, int]] = []
        if layout.darwin:
            writes.append((layout.plist_file, service.launchd_plist(layout, args), 0o644))
        else:
            unit = service.systemd_unit(layout, args, system=layout.is_root)
            writes.append((layout.unit_file, unit, 0o644))
        if kind is Kind.FALLBACK:
            writes.append((layout.start_script, service.start_script(layout, args), 0o700))
        for path, text, mode in writes:
            old = previous.files.get(path)
            await self._make_dirs(remote, str(PurePosixPath(path).parent), layout)
            self._push(
                f"putting {path} back",
                lambda p=path, o=old, m=mode: _restore(remote, p, o, m),  # type: ignore[misc]
            )
            await remote.write_file(path, text, mode=mode)
            note = (
                " (not enabled: systemd is not running)"
                if (kind is Kind.FALLBACK and path == layout.unit_file)
                else ""
            )
            progress.detail(f"wrote {tilde(path, layout.home)}{note}")

    async def _wait(
        self,
        remote: Remote,
        name: str,
        kind: Kind,
        layout: Layout,
        marker: datetime | None,
        version: str,
    ) -> queen.HiveView:
        deadline = time.monotonic() + self.options.wait
        next_check = time.monotonic() + 2
        view: queen.HiveView | None = None
        while time.monotonic() < deadline:
            view = await asyncio.to_thread(queen.hive_view, name=name)
            if (
                view is not None
                and view.live
                and view.connected_at is not None
                and (marker is None or view.connected_at > marker)
            ):
                if view.version and view.version != version:
                    raise RemoteError(
                        "waiting for the hive",
                        detail=f"it connected with version {view.version}, not {version}",
                    )
                return view
            if time.monotonic() >= next_check:
                state = await remote.run(
                    service.running_script(kind, layout), what="checking the hive", check=False
                )
                if state.stdout.startswith("stopped"):
                    logs = await remote.run(
                        service.log_tail_script(kind, layout), what="reading its log", check=False
                    )
                    raise RemoteError(
                        "starting the hive",
                        detail=f"it is not running ({state.stdout.strip()}); its log:\n"
                        f"{logs.stdout.strip()}",
                    )
                next_check = time.monotonic() + 3
            await asyncio.sleep(0.5)
        logs = await remote.run(
            service.log_tail_script(kind, layout), what="reading its log", check=False
        )
        seen = f"the queen sees it {view.status}" if view else "the queen never heard from it"
        raise RemoteError(
            "waiting for the hive",
            detail=f"not connected within {self.options.wait:.0f} s ({seen}); its log:\n"
            f"{logs.stdout.strip()}",
        )

    def _report(self, view: queen.HiveView, name: str) -> None:
        age = (
            f", heartbeat {view.heartbeat_age:.0f} s ago" if view.heartbeat_age is not None else ""
        )
        self.out(f"      {name} is connected (rbee {view.version}{age})")
        for line in describe_devices(view.devices):
            self.out(f"      device {line}")
        for model, device, state in view.workers:
            self.out(f"      worker {model} on {device}: {state}")
        for model in view.pending:
            self.out(
                f"      {model} waits for approval: `rbee hive approve {name} {model}` "
                "(or TrustModels yes in hives.conf)"
            )

    async def _make_dirs(self, remote: Remote, directory: str, layout: Layout) -> None:
        """`mkdir -p directory`; undone by removing (if empty) the ones it made."""
        q = shlex.quote
        chain = []
        path = PurePosixPath(directory)
        while str(path) not in ("/", layout.home) and path != path.parent:
            chain.append(str(path))  # deepest first
            path = path.parent
        probe = await remote.run(
            "for d in " + " ".join(q(d) for d in chain) + '; do [ -d "$d" ] || echo "$d"; done',
            what=f"looking at {directory}",
        )
        missing = [d for d in chain if d in probe.stdout.splitlines()]
        await remote.run(f"mkdir -p {q(directory)}", what=f"making {directory}")
        if missing:

            async def remove() -> None:
                await remote.run(
                    "rmdir " + " ".join(q(d) for d in missing) + " 2>/dev/null; exit 0",
                    what=f"removing {missing[-1]}",
                )

            self._push(f"removing {missing[-1]}", remove)

    @staticmethod
    def _rm(remote: Remote, path: str) -> Undo:
        async def action() -> None:
            await remote.run(f"rm -rf {shlex.quote(path)}", what=f"removing {path}")

        return action

    @staticmethod
    def _cmd(remote: Remote, script: str, what: str) -> Undo:
        async def action() -> None:
            await remote.run(script, what=what)

        return action


def pip_env_text(entry: HostEntry) -> str:
    """hives.conf's pip settings as shell assignments of pip's own variables ('' when it
    has none: the host's pip configuration alone)."""
    values: dict[str, str] = {}
    if entry.pip_no_index:
        values["PIP_NO_INDEX"] = "1"
    elif entry.pip_index_url:
        values["PIP_INDEX_URL"] = entry.pip_index_url
    if entry.pip_find_links:
        values["PIP_FIND_LINKS"] = " ".join(entry.pip_find_links)
    if entry.pip_trusted_hosts:
        values["PIP_TRUSTED_HOST"] = " ".join(entry.pip_trusted_hosts)
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


_SHA256_PY = (
    "import hashlib, sys\n"
    "h = hashlib.sha256()\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for b in iter(lambda: f.read(1 << 20), b''): h.update(b)\n"
    "print(h.hexdigest())\n"
)


def _read_ca(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InstallError(
            InstallErrorCode.CONFIG, f"QueenCA {path}: cannot read it on the queen: {exc}"
        ) from exc


def describe_devices(devices: list[dict[str, Any]]) -> list[str]:
    lines = []
    for d in devices:
        kind = str(d.get("kind", "?"))
        index = d.get("index")
        where = kind if kind == "cpu" or index is None else f"{kind}:{index}"
        total = d.get("memory_total_mb")
        memory = f", {float(total) / 1024:.1f} GiB" if isinstance(total, int | float) else ""
        lines.append(f"{where}: {d.get('name') or d.get('gpu_type') or '?'}{memory}")
    return lines


async def install(alias: str, options: Options, out: Out, *, upgrade: bool = False) -> int:
    return await Installer(alias, options, out).run(upgrade=upgrade)


# --- status -----------------------------------------------------------------------------


async def _connect(entry: HostEntry, options: Options, note: Out) -> Remote:
    return await Remote.connect(entry, accept_new_host_key=options.accept_new_host_key, note=note)


def _record_kind(record: dict[str, Any] | None) -> Kind | None:
    try:
        return Kind(str((record or {}).get("service")))
    except ValueError:
        return None


async def status(alias: str, options: Options, out: Out) -> int:
    """The host's side (service state, installed version) and the queen's (connected,
    heartbeat age, devices, workers). Exit 0 when installed, running and connected."""
    entry = load_host(alias, options.config)
    for warning in entry.warnings:
        out(f"warning: {warning}")
    remote = await _connect(entry, options, lambda line: out(f"  {line}"))
    ok = True
    try:
        out(f"{alias}: {entry.destination} (host key {remote.fingerprint} verified)")
        try:
            facts = await _detect(remote, entry)
            layout = layout_for(facts)
            raw = await remote.read_file(layout.record)
            record = json.loads(raw) if raw else None
        except (RemoteError, ValueError) as exc:
            raise InstallError(InstallErrorCode.CONNECT, f"{alias}: {exc}") from exc
        kind = _record_kind(record)
        if not isinstance(record, dict) or kind is None:
            out(f"  installed   nothing ({tilde(layout.record, layout.home)} is missing)")
            ok = False
        else:
            out(
                f"  installed   rbee {record.get('version', '?')} "
                f"({record.get('extras_label', '?')}) on {record.get('installed_at', '?')}, "
                f"wheel SHA-256 {str(record.get('sha256', '?'))[:16]}…"
            )
            state = await remote.run(
                service.running_script(kind, layout), what="checking the hive", check=False
            )
            running = state.stdout.startswith("running")
            ok = ok and running
            out(f"  service     {kind.description}: {state.stdout.strip() or 'unknown'}")
            version = await remote.run(
                f"{shlex.quote(layout.rbee())} --version", what="running rbee", check=False
            )
            out(
                f"  venv        {tilde(str(record.get('venv', layout.venv)), layout.home)}: "
                f"{version.stdout.strip() or 'does not run: ' + version.tail(3)}"
            )
            out(f"  queen URL   {record.get('queen', '?')}")
    finally:
        await remote.close()
    view = await asyncio.to_thread(queen.hive_view, name=alias)
    if view is None:
        out(f"  queen       knows no hive named {alias}")
        return 1
    age = f", heartbeat {view.heartbeat_age:.0f} s ago" if view.heartbeat_age is not None else ""
    out(
        f"  queen       {'connected' if view.live else 'not connected'} ({view.status}{age}), "
        f"rbee {view.version or '?'}, region {view.region or '-'}"
    )
    for line in describe_devices(view.devices):
        out(f"  device      {line}")
    last = "" if view.live else " (last reported)"
    for model, device, state_ in view.workers:
        out(f"  worker      {model} on {device}: {state_}{last}")
    for model in view.pending:
        out(f"  pending     {model} (`rbee hive approve {alias} {model}`)")
    return 0 if ok and view.live else 1


# --- uninstall --------------------------------------------------------------------------


async def uninstall(alias: str, options: Options, out: Out) -> int:
    """Stop and remove the hive's service, its virtualenvs, token file and logs (its
    downloaded models stay unless `purge`), then revoke its token on the queen."""
    entry = load_host(alias, options.config)
    for warning in entry.warnings:
        out(f"warning: {warning}")
    progress = Progress(out, 4)
    q = shlex.quote
    progress.step(f"connecting to {entry.destination}")
    remote = await _connect(entry, options, progress.detail)
    try:
        progress.detail(f"host key {remote.fingerprint} verified")
        try:
            facts = await _detect(remote, entry)
            layout = layout_for(facts)
            previous = await _previous(remote, layout)
            kind = previous.kind or service.choose_kind(
                darwin=layout.darwin, systemd=facts.systemd, is_root=facts.is_root
            )
            progress.step(f"stopping the hive and removing its service ({kind.description})")
            await remote.run(service.disable_script(kind, layout), what="stopping the hive")
            if kind is not Kind.FALLBACK:  # a fallback supervisor may run from before
                await remote.run(
                    service.stop_script(Kind.FALLBACK, layout), what="stopping the supervisor"
                )
            files = [layout.service_file, layout.start_script]
            await remote.run(
                "rm -f " + " ".join(q(f) for f in files), what="removing the service files"
            )
            if kind in (Kind.SYSTEMD_SYSTEM, Kind.SYSTEMD_USER):
                await remote.run(service.reload_script(kind), what="reloading systemd", check=False)
            for path, content in previous.files.items():
                if content is not None:
                    progress.detail(f"removed {tilde(path, layout.home)}")
            if options.purge:
                progress.step(f"removing {tilde(layout.data, layout.home)}, models included")
                await remote.run(f"rm -rf {q(layout.data)}", what="removing the data directory")
            else:
                progress.step("removing rbee from the host (downloaded models stay)")
                gone = [
                    layout.venv,
                    layout.venvs,
                    layout.uploads,
                    layout.env_file,
                    f"{layout.env_file}.new",
                    layout.record,
                    layout.ca_file,
                    layout.pid_file,
                    layout.logs,
                ]
                await remote.run(
                    "rm -rf " + " ".join(q(p) for p in gone) + f"; rmdir {q(layout.data)} "
                    "2>/dev/null; exit 0",
                    what="removing the install",
                )
                left = await remote.run(
                    f"ls -A {q(layout.data)} 2>/dev/null; exit 0", what="listing what stays"
                )
                if left.stdout.strip():
                    progress.detail(
                        f"kept in {tilde(layout.data, layout.home)}: "
                        f"{', '.join(left.stdout.split())} (--purge removes them)"
                    )
        except RemoteError as exc:
            raise progress.failed(str(exc), "the hive may be partly removed; run it again") from exc
    finally:
        await remote.close()
    progress.step("revoking the hive's token on the queen")
    revoked = await asyncio.to_thread(queen.token_revoke, name=alias, actor=options.actor)
    progress.detail(
        f"revoked: the hive {alias} can no longer connect"
        if revoked
        else f"the queen knows no hive named {alias}"
    )
    if previous.record is None:
        progress.detail(f"(no install record was on {alias}; removed whatever was there)")
    return 0
