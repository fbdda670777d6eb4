"""The queen's own wheel: built from its source tree once per content, its SHA-256
recorded when made; a wheel of another version is refused."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from hives.install import wheel
from hives.install.errors import InstallError
from testkit.live import ROOT


def test_built_from_this_source_tree_once_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    assert wheel.source_root() == ROOT
    tree_before = sorted(p.name for p in ROOT.iterdir())
    built = wheel.queen_wheel()
    assert sorted(p.name for p in ROOT.iterdir()) == tree_before  # no build/, no egg-info
    assert built.version == wheel.queen_version() == "0.1.0"
    assert built.name == "rbee-0.1.0-py3-none-any.whl"
    assert built.origin == f"built from the source tree {ROOT}"
    assert built.path.parent.parent == tmp_path / "wheels"
    assert built.sha256 == wheel.file_sha256(built.path)
    sidecar = built.path.with_name(built.name + ".sha256").read_text()
    assert sidecar == f"{built.sha256}  {built.name}\n"
    with zipfile.ZipFile(built.path) as zf:
        names = set(zf.namelist())
    assert "hives/install/supervise.py" in names and "rbee/cli/hive.py" in names
    assert not any(n.startswith("tests/") for n in names)

    again = wheel.queen_wheel()
    assert (again.path, again.sha256) == (built.path, built.sha256)
    assert again.origin == "cached build of the source tree"


def test_the_digest_follows_the_content(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "rbee"\n[tool.setuptools.packages.find]\ninclude = ["kernel*"]\n'
    )
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "__init__.py").write_text("x = 1\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.py").write_text("ignored\n")
    first = wheel.source_digest(tmp_path)
    (tmp_path / "kernel" / "__pycache__").mkdir()
    (tmp_path / "kernel" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "other" / "a.py").write_text("changed, but not packed\n")
    assert wheel.source_digest(tmp_path) == first
    (tmp_path / "kernel" / "__init__.py").write_text("x = 2\n")
    assert wheel.source_digest(tmp_path) != first


def test_a_given_wheel_must_be_the_queens_version(tmp_path: Path) -> None:
    other = tmp_path / "rbee-0.0.9-py3-none-any.whl"
    other.write_bytes(b"PK")
    with pytest.raises(InstallError) as err:
        wheel.queen_wheel(other)
    assert "is rbee 0.0.9; the queen runs 0.1.0" in err.value.message
    with pytest.raises(InstallError) as err:
        wheel.queen_wheel(tmp_path / "notes.txt")
    assert "is not an rbee wheel file" in err.value.message
    same = tmp_path / "rbee-0.1.0-py3-none-any.whl"
    same.write_bytes(b"PK-same")
    given = wheel.queen_wheel(same)
    assert given.sha256 == wheel.file_sha256(same) and given.path == same
