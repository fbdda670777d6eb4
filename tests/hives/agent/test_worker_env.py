"""Workers hold no secrets: a worker process gets an allow-list of the hive's environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from hives.agent.supervisor import WorkerProcess, files_are_here
from hives.agent.workerenv import worker_env
from hives.protocol import WorkerState
from hives.spec import ModelSpec

SECRETS = {
    "RBEE_HIVE_TOKEN": "hive-secret",
    "HF_TOKEN": "hf_secret",
    "HUGGING_FACE_HUB_TOKEN": "hf_secret2",
    "HF_TOKEN_PATH": "/root/.hf-token",
    "AWS_ACCESS_KEY_ID": "AKIA...",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AWS_SESSION_TOKEN": "aws-session",
    "GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcp.json",
    "AZURE_CLIENT_SECRET": "azure-secret",
    "RBEE_DATABASE_URL": "postgres://rbee:pw@db/rbee",
    "RBEE_SECRET_KEY": "django-secret",
    "RBEE_STRIPE_SECRET_KEY": "sk_live_x",
    "GITHUB_TOKEN": "ghp_x",
    "OPENAI_API_KEY": "sk-x",
    "VLLM_API_KEY": "vllm-key",
    "HTTPS_PROXY": "http://user:pw@proxy:3128",
    "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
}
KEPT = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/hive",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "CUDA_VISIBLE_DEVICES": "0,1",
    "HIP_VISIBLE_DEVICES": "0",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
    "OMP_NUM_THREADS": "4",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    "HF_HOME": "/data/hf",
    "HF_HUB_CACHE": "/data/hf/hub",
    "RBEE_HOME": "/data/rbee",
    "RBEE_MODELS_DIR": "/data/models",
    "RBEE_LLAMA_THREADS": "2",
    "RBEE_LOG_LEVEL": "DEBUG",
    "VIRTUAL_ENV": "/opt/rbee/.venv",
}


def test_worker_env_keeps_what_engines_need_and_drops_secrets() -> None:
    env = worker_env({**SECRETS, **KEPT, "SOMETHING_ELSE": "x"})
    for name in SECRETS:
        assert name not in env, name
    assert "SOMETHING_ELSE" not in env  # an allow-list: unknown names stay behind
    for name, value in KEPT.items():
        assert env[name] == value, name
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HF_HUB_DISABLE_IMPLICIT_TOKEN"] == "1"
    assert "HF_HUB_OFFLINE" not in env


def test_a_worker_with_local_files_runs_offline_unless_the_operator_says_otherwise() -> None:
    assert worker_env({}, offline=True)["HF_HUB_OFFLINE"] == "1"
    assert worker_env({"HF_HUB_OFFLINE": "0"}, offline=True)["HF_HUB_OFFLINE"] == "0"


def test_only_local_and_bundled_models_count_as_here(tmp_path: Path) -> None:
    def spec(source: str, **options: str) -> ModelSpec:
        return ModelSpec(name="m", engine="transformers", source=source, options=options)

    assert files_are_here(spec(""))
    assert files_are_here(spec("bundled:whisper-base"))
    assert files_are_here(spec(str(tmp_path)))
    assert not files_are_here(spec("Qwen/Qwen2.5-0.5B-Instruct"))
    assert not files_are_here(spec(str(tmp_path / "m.gguf"), tokenizer="Qwen/Qwen2.5-0.5B"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/environ")
async def test_a_spawned_worker_does_not_inherit_the_hives_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    worker = WorkerProcess(ModelSpec(name="echo", engine="echo", source=""))
    worker.start()
    try:
        assert await worker.wait_ready(60), worker.message
        assert worker.state == WorkerState.READY
        assert worker.proc is not None
        raw = Path(f"/proc/{worker.proc.pid}/environ").read_bytes()
    finally:
        await worker.stop()
    environ = dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)
    for name in SECRETS:
        assert name not in environ, name
    assert b"hf_secret" not in raw and b"hive-secret" not in raw
    assert environ["PATH"] == os.environ["PATH"]
    assert environ["CUDA_VISIBLE_DEVICES"] == ""
    assert environ["HF_HUB_OFFLINE"] == "1"  # the echo model needs no files at all
