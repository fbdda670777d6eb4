"""The queen's own rbee, as a wheel, with the SHA-256 it had when it was made.

A hive runs the queen's version. When the queen runs from a source tree (a checkout,
`pip install -e .`), its wheel is built from that tree and cached under
RBEE_HOME/wheels/, keyed by a digest of the files that go into it, so a changed tree
builds again and an unchanged one never does. A queen installed from a package fetches
exactly its version's wheel from its package index (`pip download rbee==VERSION`).
Either way the digest is recorded beside the wheel (`NAME.sha256`) when it is made, and
the host checks the uploaded file against that record: a wheel changed in the cache or
on the way is refused there.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hives.install.errors import InstallError, InstallErrorCode
from kernel import __version__
from kernel.paths import rbee_home

KEEP_BUILDS = 3
_SKIP_DIRS = {"__pycache__", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
_WHEEL_NAME = re.compile(r"^rbee-(?P<version>[^-]+)-[^-]+-[^-]+-[^-]+\.whl$")


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str  # recorded when the wheel was made
    version: str
    origin: str  # how it was had, for the progress line

    @property
    def name(self) -> str:
        return self.path.name


def queen_version() -> str:
    return __version__


def source_root() -> Path | None:
    """The source tree this queen runs from, or None when it runs from an installed
    package."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    try:
        meta = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if meta.get("project", {}).get("name") == "rbee" else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache() -> Path:
    path = rbee_home() / "wheels"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _record(wheel: Path) -> str:
    digest = file_sha256(wheel)
    wheel.with_name(wheel.name + ".sha256").write_text(f"{digest}  {wheel.name}\n")
    return digest


def _recorded(wheel: Path) -> str | None:
    try:
        text = wheel.with_name(wheel.name + ".sha256").read_text()
    except OSError:
        return None
    digest = text.split()[0] if text.split() else ""
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


def _cached_wheel(directory: Path) -> Path | None:
    found = sorted(directory.glob("rbee-*.whl")) if directory.is_dir() else []
    return found[0] if found and _recorded(found[0]) else None


def _package_dirs(root: Path) -> list[Path]:
    """The top-level directories setuptools packs (pyproject's packages.find include)."""
    meta = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = (
        meta.get("tool", {})
        .get("setuptools", {})
        .get("packages", {})
        .get("find", {})
        .get("include", [])
    )
    tops = {p.split(".")[0].rstrip("*") for p in patterns}
    return sorted(root / t for t in tops if (root / t).is_dir())


def _source_files(root: Path) -> Iterator[Path]:
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.cfg"):
        if (root / name).is_file():
            yield root / name
    for top in _package_dirs(root):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for f in sorted(filenames):
                if not f.endswith((".pyc", ".pyo")):
                    yield Path(dirpath) / f


def source_digest(root: Path) -> str:
    """A digest of every file that can go into the wheel (paths and contents)."""
    h = hashlib.sha256()
    for path in _source_files(root):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(file_sha256(path).encode() + b"\n")
    return h.hexdigest()


def _run_pip(args: list[str], what: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise InstallError(InstallErrorCode.WHEEL, f"{what} failed:\n{tail}")


def _only_wheel(directory: Path, version: str) -> Path:
    wheels = [p for p in directory.glob("rbee-*.whl")]
    if len(wheels) != 1:
        raise InstallError(
            InstallErrorCode.WHEEL, f"expected one rbee wheel in {directory}, found {len(wheels)}"
        )
    match = _WHEEL_NAME.match(wheels[0].name)
    if match is None or match["version"] != version:
        raise InstallError(
            InstallErrorCode.WHEEL,
            f"{wheels[0].name} is not rbee {version}, the queen's version",
        )
    return wheels[0]


def _prune(cache: Path, keep: Path) -> None:
    entries = sorted(
        (p for p in cache.iterdir() if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in entries[KEEP_BUILDS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def build_from_source(root: Path) -> Wheel:
    """The wheel of the tree at `root`, built once per content (a copy of the tree is
    built, so the tree gets no build/ or egg-info)."""
    version = queen_version()
    digest = source_digest(root)
    cache = _cache()
    entry = cache / f"src-{version}-{digest[:16]}"
    cached = _cached_wheel(entry)
    if cached is not None:
        return Wheel(cached, _recorded(cached) or "", version, "cached build of the source tree")
    with tempfile.TemporaryDirectory(prefix="rbee-wheel-") as tmp:
        src = Path(tmp) / "src"
        for path in _source_files(root):
            target = src / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        out = Path(tmp) / "out"
        _run_pip(
            ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
            f"building the rbee {version} wheel from {root} (pip wheel; needs setuptools "
            "and wheel in the queen's environment)",
        )
        built = _only_wheel(out, version)
        entry.mkdir(mode=0o700, exist_ok=True)
        final = entry / built.name
        shutil.move(str(built), final)
    sha = _record(final)
    _prune(cache, entry)
    return Wheel(final, sha, version, f"built from the source tree {root}")


def download(version: str) -> Wheel:
    """Exactly `version` from the queen's package index (its pip configuration)."""
    cache = _cache()
    entry = cache / f"pypi-{version}"
    cached = _cached_wheel(entry)
    if cached is not None:
        return Wheel(cached, _recorded(cached) or "", version, "cached from the package index")
    with tempfile.TemporaryDirectory(prefix="rbee-wheel-") as tmp:
        _run_pip(
            ["download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, f"rbee=={version}"],
            f"fetching the rbee {version} wheel from the package index (or give one with "
            "--wheel FILE)",
        )
        got = _only_wheel(Path(tmp), version)
        entry.mkdir(mode=0o700, exist_ok=True)
        final = entry / got.name
        shutil.move(str(got), final)
    return Wheel(final, _record(final), version, "downloaded from the package index")


def given(path: Path) -> Wheel:
    """A wheel the operator names (`--wheel FILE`): it must be the queen's version."""
    version = queen_version()
    match = _WHEEL_NAME.match(path.name)
    if not path.is_file() or match is None:
        raise InstallError(InstallErrorCode.WHEEL, f"{path} is not an rbee wheel file")
    if match["version"] != version:
        raise InstallError(
            InstallErrorCode.WHEEL,
            f"{path.name} is rbee {match['version']}; the queen runs {version}, and a hive "
            "runs the queen's version",
        )
    return Wheel(path, file_sha256(path), version, f"given ({path})")


def queen_wheel(path: Path | None = None) -> Wheel:
    """The wheel to install: `path` if given, else built from this queen's source tree,
    else its version fetched from the package index."""
    if path is not None:
        return given(path)
    root = source_root()
    return build_from_source(root) if root is not None else download(queen_version())
