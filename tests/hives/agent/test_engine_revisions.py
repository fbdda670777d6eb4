"""The diffusers and faster-whisper engines load `org/name@rev` at that revision, from the
Hub cache (offline: HF_HUB_OFFLINE=1), and diffusers takes safetensors only when every
component has them. The cache holds one snapshot of each repo, by commit, and no `main`
ref: the library finds it only when asked for that revision."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hives.agent.engines.base import EngineError
from hives.agent.engines.diffusion import DiffusersEngine, safetensors_only
from hives.agent.engines.whisper import FasterWhisperEngine, assemble_whisper_base
from hives.agent.tinysd import build_tiny_sd
from hives.spec import ModelSpec

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    return cache


def snapshot(cache: Path, repo: str) -> Path:
    return cache / f"models--{repo.replace('/', '--')}" / "snapshots" / COMMIT


def sd(source: str) -> ModelSpec:
    return ModelSpec(name="sd", engine="diffusers", source=source, device="cpu")


def test_the_diffusers_engine_loads_the_pinned_revision(tiny_sd: Path, hub_cache: Path) -> None:
    shutil.copytree(tiny_sd, snapshot(hub_cache, "rbee-test/tiny-sd"))
    with pytest.raises(EngineError):
        DiffusersEngine().load(sd("rbee-test/tiny-sd"))
    engine = DiffusersEngine()
    engine.load(sd(f"rbee-test/tiny-sd@{COMMIT}"))
    assert engine.pipe is not None
    engine.unload()
    # The revision may also come as an option.
    engine.load(ModelSpec(**{**sd("rbee-test/tiny-sd").to_dict(), "options": {"revision": COMMIT}}))
    assert engine.pipe is not None
    engine.unload()
    assert safetensors_only("rbee-test/tiny-sd", COMMIT)


def _as_pickle(folder: Path, safetensors: str, pickle: str) -> None:
    """Replace a component's safetensors weights with the same tensors in a .bin."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / safetensors), folder / pickle)
    (folder / safetensors).unlink()


def test_a_mixed_pipeline_loads_and_an_all_safetensors_one_never_unpickles(
    tiny_sd: Path, tmp_path: Path
) -> None:
    # A text encoder shipped as a .bin beside safetensors elsewhere: use_safetensors
    # would refuse it, so the engine leaves the choice per component to diffusers.
    mixed = shutil.copytree(tiny_sd, tmp_path / "mixed")
    _as_pickle(mixed / "text_encoder", "model.safetensors", "pytorch_model.bin")
    assert not safetensors_only(str(mixed), None)
    engine = DiffusersEngine()
    engine.load(sd(str(mixed)))
    assert engine.pipe is not None
    engine.unload()
    # Every component has safetensors: the unet's pickle is never loaded, even where the
    # safetensors beside it is not the file diffusers looks for.
    odd = shutil.copytree(tiny_sd, tmp_path / "odd")
    unet = odd / "unet"
    shutil.copy(unet / "diffusion_pytorch_model.safetensors", unet / "unet.safetensors")
    _as_pickle(unet, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    assert safetensors_only(str(odd), None)
    with pytest.raises(EngineError):
        DiffusersEngine().load(sd(str(odd)))


def test_the_whisper_engine_loads_the_pinned_revision(
    tmp_path_factory: pytest.TempPathFactory, hub_cache: Path
) -> None:
    base = assemble_whisper_base(tmp_path_factory.mktemp("models") / "whisper-base")
    snap = snapshot(hub_cache, "rbee-test/whisper-base")
    snap.mkdir(parents=True)
    for f in base.iterdir():
        (snap / f.name).symlink_to(f)

    def spec(source: str) -> ModelSpec:
        return ModelSpec(name="w", engine="faster-whisper", source=source, device="cpu")

    with pytest.raises(EngineError):
        FasterWhisperEngine().load(spec("rbee-test/whisper-base"))
    engine = FasterWhisperEngine()
    engine.load(spec(f"rbee-test/whisper-base@{COMMIT}"))
    assert engine.model is not None
    engine.unload()
