"""What a hive refuses whoever asks: remote code without --allow-remote-code, local paths
from the queen outside its models directory, ws:// beyond loopback without --insecure;
and which files a download fetches (safetensors over pickles) at which revision."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hives.agent.agent import HiveAgent, check_queen_url
from hives.agent.download import (
    REVISION_FILE,
    DownloadError,
    Downloads,
    RemoteFile,
    download,
    safetensors_everywhere,
    select_files,
)
from hives.agent.policy import local_path_refusal, remote_code_refusal, upstream_url_refusal
from hives.protocol import WorkerState
from hives.spec import ModelSpec
from testkit.live import ROOT
from tests.hives.agent.fakehub import FakeHub
from tests.hives.agent.test_worker_pool import GiB, gpu, pool

REMOTE = {"trust_remote_code": True}


def spec(name: str, *, source: str = "", **options: Any) -> ModelSpec:
    return ModelSpec(name=name, engine="echo", source=source, device="cuda:0", options=options)


# --- trust_remote_code -------------------------------------------------------------------


def test_remote_code_is_refused_without_the_opt_in() -> None:
    assert "--allow-remote-code" in remote_code_refusal(spec("m", **REMOTE), allow=False)
    assert remote_code_refusal(spec("m", **REMOTE), allow=True) == ""
    assert remote_code_refusal(spec("m"), allow=False) == ""


@pytest.mark.asyncio
async def test_a_start_model_asking_remote_code_fails_with_the_reason() -> None:
    p = pool([spec("evil", **REMOTE), spec("fine")], [gpu(24, 20)], {"evil": 1, "fine": 1})
    await p.start()
    evil = p.workers[("evil", spec("evil").device)]
    assert evil.state == WorkerState.FAILED
    assert "--allow-remote-code" in evil.describe()["message"]
    assert p.workers[("fine", spec("fine").device)].state == WorkerState.READY


@pytest.mark.asyncio
async def test_a_spawn_asking_remote_code_fails_unless_the_hive_allows_it() -> None:
    p = pool([], [gpu(24, 20)], {"evil": 1})
    await p.spawn(spec("evil", **REMOTE))
    w = p.workers[("evil", spec("evil").device)]
    assert (w.state, w.assigned) == (WorkerState.FAILED, True)
    assert "trust_remote_code" in w.message
    allowed = pool([], [gpu(24, 20)], {"evil": 1}, allow_remote_code=True)
    await allowed.spawn(spec("evil", **REMOTE))
    assert allowed.workers[("evil", spec("evil").device)].state == WorkerState.READY


def test_the_cli_flag_reaches_the_pool() -> None:
    on = HiveAgent(
        queen="http://127.0.0.1:1",
        token="t",
        name="h",
        models=[],
        status_port=None,
        allow_remote_code=True,
    )
    off = HiveAgent(queen="http://127.0.0.1:1", token="t", name="h", models=[], status_port=None)
    assert (on.pool.allow_remote_code, off.pool.allow_remote_code) == (True, False)


# --- local paths named by the queen ----------------------------------------------------------


def test_a_local_path_from_the_queen_must_be_under_the_models_dir_or_a_start_path(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    (models / "org--x").mkdir(parents=True)
    started = tmp_path / "mine.gguf"
    started.write_text("x")
    secret = tmp_path / "etc" / "secret"
    secret.parent.mkdir()
    secret.write_text("x")
    roots = [models, started]
    assert local_path_refusal(spec("a", source=str(models / "org--x")), roots=roots) == ""
    assert local_path_refusal(spec("b", source=str(started)), roots=roots) == ""
    assert local_path_refusal(spec("c", source="org/repo"), roots=roots) == ""  # a repo id
    for source in (str(secret), str(models / ".." / "etc" / "secret"), "/etc/passwd"):
        assert "not under this hive's models directory" in local_path_refusal(
            spec("d", source=source), roots=roots
        )
    # The tokenizer option is a path too.
    sneaky = spec("e", source=str(models / "org--x"), tokenizer=str(secret))
    assert local_path_refusal(sneaky, roots=roots)


@pytest.mark.asyncio
async def test_a_spawn_with_a_foreign_local_path_is_recorded_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_MODELS_DIR", str(tmp_path / "models"))
    agent = HiveAgent(queen="http://127.0.0.1:1", token="t", name="h", models=[], status_port=None)
    assert agent._spawn_spec({"spec": "x=echo:/etc", "device": "cpu"}) is None
    await asyncio.sleep(0.05)
    described = {w["model"]: w for w in agent.describe_workers()}
    assert described["x"]["state"] == "failed"
    assert "/etc" in described["x"]["message"]
    inside = tmp_path / "models" / "ok"
    inside.mkdir(parents=True)
    got = agent._spawn_spec({"spec": f"y=echo:{inside}", "device": "cpu"})
    assert got is not None and got.source == str(inside)


# --- upstream servers the queen names ------------------------------------------------------


def test_an_upstream_from_the_queen_must_be_granted_by_the_hives_operator() -> None:
    granted = ["http://127.0.0.1:11434/v1", "https://API.example.com"]

    def refusal(source: str) -> str:
        up = ModelSpec(name="up", engine="openai", source=source, options={})
        return upstream_url_refusal(up, granted=granted)

    assert refusal("http://127.0.0.1:11434/v1") == ""
    assert refusal("http://127.0.0.1:11434/v1/") == ""
    assert refusal("https://api.example.com/v1") == ""
    assert refusal("https://api.example.com:443/openai/v1") == ""
    for sneaky in (
        "http://169.254.169.254/latest/v1",  # a cloud's metadata service
        "http://127.0.0.1:11435/v1",  # another port
        "http://127.0.0.1:11434/v10",  # a path that only starts like the granted one
        "http://127.0.0.1:11434",  # above the granted path
        "http://api.example.com/v1",  # clear text where https was granted
        "https://api.example.com.evil.test/v1",
    ):
        assert "did not grant" in refusal(sneaky), sneaky
    # Other engines have no upstream.
    assert upstream_url_refusal(spec("e", source="http://10.0.0.1/"), granted=[]) == ""


@pytest.mark.asyncio
async def test_a_spawn_naming_an_ungranted_upstream_is_recorded_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RBEE_HIVE_UPSTREAM_URLS", "http://10.1.2.3:8000/v1, http://h:1/v1")
    own = ModelSpec(name="own", engine="openai", source="http://127.0.0.1:9/v1", device="cpu")
    agent = HiveAgent(
        queen="http://127.0.0.1:1", token="t", name="h", models=[own], status_port=None
    )
    assert (
        agent._spawn_spec({"spec": "x=openai:http://169.254.169.254/v1", "device": "cpu"}) is None
    )
    await asyncio.sleep(0.05)
    described = {w["model"]: w for w in agent.describe_workers()}
    assert described["x"]["state"] == "failed"
    assert "did not grant" in described["x"]["message"]
    for url in ("http://10.1.2.3:8000/v1", "http://127.0.0.1:9/v1"):  # granted, and its own
        got = agent._spawn_spec({"spec": f"y=openai:{url}?model=m", "device": "cpu"})
        assert got is not None and got.source == url


# --- ws:// beyond loopback -------------------------------------------------------------------


@pytest.mark.parametrize(
    "queen",
    [
        "http://127.0.0.1:7833",
        "http://localhost:7833",
        "ws://[::1]:7833",
        "https://q.example",
        "wss://10.0.0.5/hive/ws",
    ],
)
def test_tls_or_loopback_is_fine(queen: str) -> None:
    assert check_queen_url(queen).startswith(("ws://", "wss://"))


@pytest.mark.parametrize("queen", ["http://10.0.0.5:7833", "ws://queen:7833", "queen:7833"])
def test_clear_text_beyond_loopback_needs_insecure(queen: str) -> None:
    with pytest.raises(ValueError, match="--insecure"):
        check_queen_url(queen)
    assert check_queen_url(queen, insecure=True).startswith("ws://")


def test_the_cli_refuses_clear_text_to_a_remote_queen() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rbee.cli",
            "hive",
            "start",
            "--queen",
            "http://10.0.0.5:7833",
            "--token",
            "rbee-hive-x",
            "--status-port",
            "-1",
            "--model",
            "x=echo:",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr
    assert "--insecure" in proc.stderr and "without TLS" in proc.stderr


# --- downloads: which files, which revision -------------------------------------------------


def files(*paths: str) -> list[RemoteFile]:
    return [RemoteFile(path=p, size=1, sha256="") for p in paths]


def test_safetensors_are_preferred_over_pickles() -> None:
    listing = files(
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tokenizer.json",
        "training_args.bin",
        "old.pth",
        "README.md",
    )
    assert [f.path for f in select_files(listing)] == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
    ]
    # No safetensors: the pickles are all there is.
    only = files("config.json", "pytorch_model.bin")
    assert select_files(only) == only


def test_pickles_are_skipped_per_directory_and_variant() -> None:
    """A diffusers repo whose unet has safetensors and whose text encoder has only a .bin:
    the .bin is the only copy of the text encoder's weights, and is kept."""
    listing = files(
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "text_encoder/pytorch_model.bin",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.bin",
        "vae/diffusion_pytorch_model.bin",
        "v1-5-pruned.ckpt",
    )
    assert [f.path for f in select_files(listing)] == [
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.bin",  # no fp16 safetensors in unet/
        "text_encoder/pytorch_model.bin",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.bin",  # the fp16 safetensors is another variant
        "v1-5-pruned.ckpt",  # nothing in the root replaces it
    ]
    # Sharded weights of one directory.
    sharded = files(
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "pytorch_model-00001-of-00003.bin",
    )
    assert [f.path for f in select_files(sharded)] == [f.path for f in sharded[:2]]


def test_safetensors_only_when_every_weights_directory_has_them() -> None:
    assert safetensors_everywhere(
        ["model_index.json", "unet/a.safetensors", "unet/a.bin", "vae/b.safetensors"]
    )
    assert not safetensors_everywhere(["unet/a.safetensors", "text_encoder/pytorch_model.bin"])
    assert not safetensors_everywhere(["unet/a.fp16.safetensors", "unet/a.bin"])
    assert not safetensors_everywhere(["config.json"])


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeHub(
        {
            "acme/two": {
                "config.json": b"{}",
                "model.safetensors": b"s" * 10,
                "pytorch_model.bin": b"p" * 10,
            }
        }
    )
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        yield fake
    finally:
        fake.close()


def test_a_download_skips_pickles_and_pins_the_commit(hub: FakeHub, tmp_path: Path) -> None:
    """The revision asked for is resolved to its commit once; the listing and every file
    come from that commit, which is what the model's directory records."""

    async def progress(done: int, total: int) -> None:
        pass

    commit = FakeHub.commit("acme/two", "v1.2")
    path = asyncio.run(download("acme/two@v1.2", tmp_path, progress))
    assert path == tmp_path / "acme--two@v1.2"
    assert sorted(p.name for p in path.iterdir()) == [
        REVISION_FILE,
        "config.json",
        "model.safetensors",
    ]
    assert (path / REVISION_FILE).read_text().strip() == commit
    assert hub.revisions and set(hub.revisions) == {commit}
    assert "pytorch_model.bin" not in [p for p, _ in hub.ranges]
    # A revision that could climb out of the URL is refused.
    with pytest.raises(DownloadError):
        asyncio.run(download("acme/two@../../x", tmp_path, progress))


def test_a_hub_without_commits_pins_the_revision_named(hub: FakeHub, tmp_path: Path) -> None:
    async def progress(done: int, total: int) -> None:
        pass

    hub.commits = False  # a mirror that does not answer the model info of a revision
    path = asyncio.run(download("acme/two@v1.2", tmp_path, progress))
    assert (path / REVISION_FILE).read_text().strip() == "v1.2"
    assert set(hub.revisions) == {"v1.2"}


def test_the_done_report_records_the_commit(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_MODELS_DIR", str(tmp_path))
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    async def run(download_id: int, source: str) -> None:
        d = Downloads(send)
        d.start(download_id, source)
        while d._running:
            await asyncio.sleep(0.01)

    asyncio.run(run(7, "acme/two@abc123"))
    assert sent[-1]["state"] == "done"
    assert sent[-1]["revision"] == FakeHub.commit("acme/two", "abc123")
    assert sent[-1]["path"].endswith("acme--two@abc123")
    # No revision named: the commit `main` names, not the word "main".
    asyncio.run(run(8, "acme/two"))
    assert sent[-1]["state"] == "done"
    assert sent[-1]["revision"] == FakeHub.commit("acme/two", "main")


_ = GiB


def test_a_hub_source_names_its_revision(tmp_path: Path) -> None:
    from hives.agent.engines.base import hub_ref

    assert hub_ref("org/name@v1.0") == ("org/name", "v1.0")
    assert hub_ref("org/name@0123abc", {}) == ("org/name", "0123abc")
    assert hub_ref("org/name", {"revision": "r2"}) == ("org/name", "r2")
    assert hub_ref("org/name") == ("org/name", None)
    local = tmp_path / "m@v1"
    local.mkdir()
    assert hub_ref(str(local)) == (str(local), None)  # a path is a path, @ and all


def test_the_transformers_engine_loads_the_pinned_revision_through_the_hub_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline (HF_HUB_OFFLINE=1): the Hub cache holds one snapshot of a repo, by commit,
    and no `main` ref. The library finds it only when asked for that revision, so loading
    `org/name@COMMIT` proves the pin reaches huggingface_hub, and `org/name` fails."""
    import shutil

    from hives.agent.engines.base import EngineError
    from hives.agent.engines.transformers_engine import TransformersEngine
    from testkit.tinylm import build_tiny_lm

    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    snapshot = cache / "models--rbee-test--tiny" / "snapshots" / commit
    shutil.copytree(build_tiny_lm(tmp_path / "built"), snapshot)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("transformers.utils.hub.constants.HF_HUB_CACHE", str(cache), raising=False)

    def spec(source: str) -> ModelSpec:
        return ModelSpec(name="t", engine="transformers", source=source, device="cpu")

    with pytest.raises(EngineError):
        TransformersEngine().load(spec("rbee-test/tiny"))
    engine = TransformersEngine()
    engine.load(spec(f"rbee-test/tiny@{commit}"))
    assert engine.model is not None
