"""The environment a worker process gets: an allow-list, so workers hold no secrets.

A worker loads third-party weights and code (transformers, diffusers, llama.cpp, a
model repo's own Python with trust_remote_code, ...). Whatever is in its environment,
that code can read and send somewhere. The hive's environment holds secrets: its
token for the queen (RBEE_HIVE_TOKEN), the Hub token it downloads with (HF_TOKEN;
the hive downloads, hives/agent/download.py, so no worker needs it), the machine's
cloud credentials (AWS_*, GOOGLE_*, AZURE_*), the queen's settings on a shared box
(RBEE_DATABASE_URL, RBEE_SECRET_KEY, Stripe keys, ...). So a worker gets only what
engines need to find themselves, their libraries and their devices, named below,
and nothing else: a variable not named here does not reach a worker.

This is the one place that says what a worker may see. Add a name only when an
engine needs it, and never one that carries a credential (a proxy URL may embed
one, so proxies are left out too). As a second guard, any name that looks like a
credential (TOKEN, SECRET, PASSWORD, ...) is dropped even when a prefix allows it.

The environment is not the only way to a secret: a worker runs as the hive's user
and could read the same files (~/.cache/huggingface/token, ~/.aws/credentials).
HF_HUB_DISABLE_IMPLICIT_TOKEN keeps huggingface_hub from sending a stored token on
its own; isolating files needs another user or a sandbox.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Exact names.
WORKER_ENV_NAMES: frozenset[str] = frozenset(
    {
        # The process itself: finding programs, the home directory, locale, temp files.
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        # Python: the same interpreter and packages as the hive.
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONIOENCODING",
        "VIRTUAL_ENV",
        # Shared libraries (CUDA, ROCm, llama.cpp builds); DYLD_* on macOS (Metal).
        "LD_LIBRARY_PATH",
        "DYLD_LIBRARY_PATH",
        "DYLD_FALLBACK_LIBRARY_PATH",
        # Devices: NVIDIA, AMD.
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "CUDA_HOME",
        "CUDA_PATH",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "ROCM_PATH",
        "HSA_OVERRIDE_GFX_VERSION",
        # Hugging Face libraries: where the cache is, offline or not, a mirror. Never the
        # token (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, HF_TOKEN_PATH).
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_ENDPOINT",
        "HF_HUB_DISABLE_TELEMETRY",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "TRANSFORMERS_OFFLINE",
        "TRANSFORMERS_CACHE",
        "SENTENCE_TRANSFORMERS_HOME",
        # Caches and data directories (kernel/paths.py: rbee_home falls back to XDG_DATA_HOME).
        "XDG_CACHE_HOME",
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        # TLS roots, should a worker fetch a public model itself.
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        # espeak-ng's voices (the piper engine's fallback).
        "ESPEAK_DATA_PATH",
        # rbee's settings that workers read (none is a secret): where models live, logging,
        # thread and slot counts.
        "RBEE_HOME",
        "RBEE_MODELS_DIR",
        "RBEE_LOG_LEVEL",
        "RBEE_LLAMA_THREADS",
        "RBEE_LLAMA_SLOTS",
        "RBEE_WHISPER_THREADS",
        "RBEE_MAX_IMAGE_PIXELS",
        "RBEE_MAX_AUDIO_SECONDS",
        # The openai engine's defaults (hives/agent/engines/openai_engine.py).
        "RBEE_OPENAI_CONNECT_TIMEOUT",
        "RBEE_OPENAI_READ_TIMEOUT",
        "RBEE_OPENAI_MAX_CONNECTIONS",
        "RBEE_OPENAI_HEALTH_INTERVAL",
        "RBEE_OPENAI_MAX_RESPONSE_BYTES",
    }
)

# Prefixes: families of tuning variables read by the engines' libraries.
WORKER_ENV_PREFIXES: tuple[str, ...] = (
    "LC_",  # locale
    "NVIDIA_",  # container runtime: NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES
    "CUDA_",  # CUDA_LAUNCH_BLOCKING, CUDA_MODULE_LOADING, ...
    "NCCL_",  # multi-GPU vLLM
    "OMP_",  # OpenMP: OMP_NUM_THREADS, ...
    "KMP_",  # Intel OpenMP (KMP_DUPLICATE_LIB_OK on macOS)
    "MKL_",
    "OPENBLAS_",
    "TORCH_",  # TORCH_HOME, TORCH_CUDA_ARCH_LIST, ...
    "TORCHINDUCTOR_",
    "PYTORCH_",  # PYTORCH_CUDA_ALLOC_CONF, PYTORCH_ENABLE_MPS_FALLBACK, ...
    "TRITON_",
    "GGML_",  # llama.cpp's backends (GGML_METAL_*, GGML_CUDA_*)
    "LLAMA_CPP_",  # llama-cpp-python: LLAMA_CPP_LIB_PATH
    "VLLM_",
)

# Dropped whatever allowed them: names of credentials (VLLM_API_KEY, a TORCH_..._TOKEN).
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_KEY|PRIVATE|AUTH", re.I)

# Set in every worker, whatever the hive has.
WORKER_ENV_FIXED: dict[str, str] = {
    "PYTHONUNBUFFERED": "1",
    # huggingface_hub sends a token it finds in its token file unless told not to.
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
}


def allowed(name: str) -> bool:
    """Whether a variable of the hive's environment may reach a worker."""
    if SECRET_NAME.search(name):
        return False
    return name in WORKER_ENV_NAMES or name.startswith(WORKER_ENV_PREFIXES)


# The hive's variables whose names the queen may name as an upstream model's key
# (`api_key_env=VAR` in a model the queen assigns), comma-separated. A model given on
# the hive's own command line may name any variable: its operator wrote it there.
GRANTED_KEYS_ENV = "RBEE_HIVE_UPSTREAM_KEYS"


def upstream_key_env(
    options: Mapping[str, object], parent: Mapping[str, str], *, assigned: bool
) -> str:
    """The variable an upstream model (the openai engine) reads its key from, when this
    worker may have it: named by the model's `api_key_env`, never one of rbee's own
    (RBEE_*: the hive's token), and, for a model the queen assigned, granted by the
    hive's operator in RBEE_HIVE_UPSTREAM_KEYS. '' otherwise."""
    name = str(options.get("api_key_env") or "")
    if not name or name.startswith("RBEE_"):
        return ""
    if assigned:
        granted = {n.strip() for n in parent.get(GRANTED_KEYS_ENV, "").split(",")}
        if name not in granted:
            return ""
    return name


def worker_env(
    parent: Mapping[str, str], *, offline: bool = False, key_env: str = ""
) -> dict[str, str]:
    """A worker's environment from the hive's: the allowed variables, plus the fixed ones.

    `key_env`: one more variable, a credential, for the one worker whose engine needs it
    (an upstream server's key: see upstream_key_env).

    `offline`: the model's files are already here (a local path, a bundled model), so
    the worker runs with HF_HUB_OFFLINE=1 and its libraries never reach the Hub, unless
    the operator set HF_HUB_OFFLINE themselves.
    """
    env = {name: value for name, value in parent.items() if allowed(name)}
    env.update(WORKER_ENV_FIXED)
    if key_env and key_env in parent:
        env[key_env] = parent[key_env]
    if offline:
        env.setdefault("HF_HUB_OFFLINE", "1")
    return env
