"""`rbee model download`: fetched from a Hub (our own, on loopback), resumable, checked."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hives.agent.download import DownloadError, download
from testkit.live import ROOT, Deployment, Hive, Queen
from tests.hives.agent.fakehub import FakeHub

WEIGHTS = os.urandom(3 * 1024 * 1024 + 123)
REPO = {
    "config.json": b'{"model_type": "tiny"}',
    "model.safetensors": WEIGHTS,
    "tokenizer/vocab.txt": b"a\nb\nc\n",
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub({"acme/tiny": dict(REPO), "acme/evil": {"../escape.txt": b"x"}})
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield fake
    finally:
        fake.close()


def fetch(source: str, dest: Path) -> tuple[Path, list[tuple[int, int]]]:
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    return asyncio.run(download(source, dest, progress)), seen


def test_a_repo_is_fetched_and_checked(hub: FakeHub, tmp_path: Path) -> None:
    path, seen = fetch("acme/tiny", tmp_path)
    assert path == tmp_path / "acme--tiny"
    for name, data in REPO.items():
        assert (path / name).read_bytes() == data
    assert not list(path.rglob("*.part"))
    total = sum(len(d) for d in REPO.values())
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # never goes backwards
    # Fetched again: nothing is downloaded twice.
    hub.ranges.clear()
    fetch("acme/tiny", tmp_path)
    assert hub.ranges == []


def test_an_interrupted_download_resumes_with_a_range(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "acme--tiny"
    dest.mkdir()
    half = len(WEIGHTS) // 2
    (dest / "model.safetensors.part").write_bytes(WEIGHTS[:half])
    path, _ = fetch("acme/tiny", tmp_path)
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert ("model.safetensors", f"bytes={half}-") in hub.ranges


def test_a_corrupted_file_is_never_put_in_place(hub: FakeHub, tmp_path: Path) -> None:
    hub.corrupt.add("model.safetensors")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch("acme/tiny", tmp_path)
    assert not (tmp_path / "acme--tiny" / "model.safetensors").exists()
    assert not (tmp_path / "acme--tiny" / "model.safetensors.part").exists()


def test_bad_sources_say_what_is_wrong(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="no model repo"):
        fetch("acme/nope", tmp_path)
    hub.gated.add("acme/tiny")
    with pytest.raises(DownloadError, match="HF_TOKEN"):
        fetch("acme/tiny", tmp_path)
    with pytest.raises(DownloadError, match="unsafe path"):
        fetch("acme/evil", tmp_path)
    assert not (tmp_path.parent / "escape.txt").exists()
    with pytest.raises(DownloadError, match="neither a local path nor a repo id"):
        fetch("not a repo", tmp_path)
    with pytest.raises(DownloadError, match="does not exist"):
        fetch("/no/such/model", tmp_path)


def test_a_gated_repo_with_a_token(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    hub.gated.add("acme/tiny")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    path, _ = fetch("acme/tiny", tmp_path)
    assert (path / "config.json").exists()


def test_a_local_path_is_used_as_it_is(tmp_path: Path) -> None:
    model = tmp_path / "mine"
    model.mkdir()
    (model / "w.bin").write_bytes(b"12345")
    path, seen = fetch(str(model), tmp_path / "models")
    assert path == model and seen == [(5, 5)]


@pytest.mark.e2e
def test_rbee_model_download_through_a_hive_survives_its_restart(tmp_path: Path) -> None:
    hub = FakeHub({"acme/tiny": dict(REPO)})
    hub.rate = 1024 * 1024  # about 3 s for the weights: time to restart the hive
    dep = Deployment()
    cli: subprocess.Popen[str] | None = None
    try:
        models = tmp_path / "hive-models"
        env = {"HF_ENDPOINT": hub.url, "RBEE_MODELS_DIR": str(models), "HF_HUB_OFFLINE": "0"}
        queen = Queen(dep)
        hive = Hive(dep, queen, "hive-d", ["smollm2-135m-instruct"], env=env)
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rbee.cli",
                "model",
                "download",
                "acme/tiny",
                "--hive",
                "hive-d",
            ],
            env=dep.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while hub.sent.get("model.safetensors", 0) < 1024 * 1024:
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        hive.proc.send_signal(signal.SIGKILL)  # mid-file
        hive.proc.wait()
        hive.start()
        out, err = cli.communicate(timeout=120)
        assert cli.returncode == 0, err
        assert out.strip() == str(models / "acme--tiny")
        assert (models / "acme--tiny" / "model.safetensors").read_bytes() == WEIGHTS
        resumed = [r for p, r in hub.ranges if p == "model.safetensors" and r]
        assert resumed, hub.ranges  # the second hive went on from the bytes on disk

        bad = dep.rbee("model", "download", "acme/missing", "--hive", "hive-d", check=False)
        assert bad.returncode == 1 and "no model repo" in bad.stderr
        none = dep.rbee("model", "download", "acme/tiny", "--hive", "nope", check=False)
        assert none.returncode == 1 and "no hive named" in none.stderr
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()  # a failed test must not leave the CLI waiting forever
            cli.wait()
        dep.close()
        hub.close()
