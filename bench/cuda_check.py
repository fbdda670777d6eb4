"""The CUDA paths, for real, on a machine with an NVIDIA GPU (run it where one is lent).

    python bench/cuda_check.py [--stack]

1. Device detection through NVML: what the hive reports to the queen.
2. The transformers engine on cuda:0 (a small Llama built here: no hub is reachable
   from the GPU machine), streamed, with tokens/s and memory estimate vs allocated.
3. The diffusers engine on cuda:0 (the tiny pipeline `rbee` builds), text-to-image and
   image-to-image, with the time per image.
4. With --stack: a queen and a hive as users start them, serving both models on
   cuda:0, called through the official openai client; then a placement that does not
   fit the GPU's free memory, which the hive must refuse with a message saying what
   uses the memory.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def section(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def detection() -> None:
    section("devices (NVML)")
    from hives.agent.devices import detect_devices

    for d in detect_devices():
        print(json.dumps(d))


def build_models(where: Path) -> tuple[Path, Path]:
    from hives.agent.tinysd import build_tiny_sd
    from testkit.tinylm import build_tiny_lm

    lm = build_tiny_lm(where / "tiny-llama")
    sd = build_tiny_sd(where / "tiny-sd")
    return lm, sd


def text_engine(lm: Path) -> None:
    import torch

    from hives.agent.engines import get_engine
    from hives.spec import ModelSpec

    section("transformers on cuda:0")
    spec = ModelSpec(name="tiny-llama", engine="transformers", source=str(lm), device="cuda:0")
    eng = get_engine("transformers")
    estimate = eng.memory_estimate_bytes(spec)
    t = time.perf_counter()
    eng.load(spec)
    print(
        f"load {time.perf_counter() - t:.2f} s; estimate {estimate / 2**20:.1f} MiB; "
        f"allocated {torch.cuda.memory_allocated() / 2**20:.1f} MiB"
    )
    model = getattr(eng, "model", None)
    print("model device:", getattr(model, "device", "?"), "dtype:", getattr(model, "dtype", "?"))
    for _ in range(2):
        t = time.perf_counter()
        events = list(
            eng.chat(
                {
                    "messages": [{"role": "user", "content": "bees"}],
                    "max_tokens": 100,
                    "temperature": 0.8,
                    "seed": 1,
                },
                lambda: False,
            )
        )
        dt = time.perf_counter() - t
        done = events[-1]
        n = done["usage"]["completion_tokens"]
        print(f"chat: {n} tokens in {dt:.3f} s = {n / dt:.0f} tokens/s; {done['finish_reason']}")
    eng.unload()


def image_engine(sd: Path) -> None:
    import torch

    from hives.agent.engines import get_engine
    from hives.spec import ModelSpec

    section("diffusers on cuda:0")
    spec = ModelSpec(
        name="tiny-sd", engine="diffusers", source=str(sd), device="cuda:0", capability="image-gen"
    )
    eng = get_engine("diffusers")
    t = time.perf_counter()
    eng.load(spec)
    print(
        f"load {time.perf_counter() - t:.2f} s; allocated "
        f"{torch.cuda.memory_allocated() / 2**20:.1f} MiB"
    )
    pipe = getattr(eng, "pipe", None) or getattr(eng, "text2img", None)
    print("pipeline device:", getattr(pipe, "device", "?"))
    for size in ("64x64", "256x256"):
        for _ in range(2):
            t = time.perf_counter()
            events = list(
                eng.generate_image(
                    {"prompt": "a bee", "n": 1, "size": size, "seed": 1}, lambda: False
                )
            )
            dt = time.perf_counter() - t
        png = base64.b64decode(events[-1]["result"]["images"][0])
        print(f"{size}: {dt * 1000:.0f} ms per image; PNG {len(png)} bytes")
    var = list(
        eng.vary_image(
            {"image_b64": events[-1]["result"]["images"][0], "n": 2, "size": "256x256", "seed": 2},
            lambda: False,
        )
    )
    print("variations:", len(var[-1]["result"]["images"]))
    eng.unload()


def stack(lm: Path, sd: Path, home: Path) -> None:
    import httpx
    import openai

    section("queen + hive on cuda:0, through the openai client")
    env = {
        **os.environ,
        "RBEE_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "RBEE_MODELS_DIR": str(home / "models"),
    }
    exe = [sys.executable, "-m", "rbee.cli"]
    port = 7833
    tok = subprocess.run(
        [*exe, "hive", "token", "--name", "gpu", "--trust-models"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run([*exe, "tenant", "create", "acme"], env=env, check=True, capture_output=True)
    key = subprocess.run(
        [*exe, "key", "create", "--tenant", "acme", "--operator"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    queen = subprocess.Popen([*exe, "queen", "start", "--port", str(port)], env=env)
    hive = subprocess.Popen(
        [
            *exe,
            "hive",
            "start",
            "--queen",
            f"http://127.0.0.1:{port}",
            "--name",
            "gpu",
            "--model",
            f"tiny-llama=transformers:{lm}@cuda:0",
            "--model",
            f"tiny-sd=diffusers:{sd}@cuda:0",
            "--status-port",
            "-1",
        ],
        env={**env, "RBEE_HIVE_TOKEN": tok},
    )
    try:
        deadline = time.monotonic() + 240
        body: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                models = {m for h in body.get("hives", []) for m in h["models"]}
                if {"tiny-llama", "tiny-sd"} <= models:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        print("healthz:", json.dumps(body))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        for m in client.models.list().data:
            print("model:", json.dumps(m.model_dump()))
        raw = client.chat.completions.with_raw_response.create(
            model="tiny-llama", messages=[{"role": "user", "content": "bees"}], max_tokens=32
        )
        reply = raw.parse()
        print("chat via queen:", raw.headers.get("x-rbee-worker"), reply.usage)
        t = time.perf_counter()
        n = 0
        for _chunk in client.completions.create(
            model="tiny-llama", prompt="the bees", max_tokens=200, stream=True
        ):
            n += 1
        dt = time.perf_counter() - t
        print(f"completions stream via queen: {n} chunks in {dt:.2f} s = {n / dt:.0f}/s")
        raw = client.images.with_raw_response.generate(
            model="tiny-sd", prompt="a bee", size="256x256", response_format="b64_json"
        )
        img = raw.parse()
        png = base64.b64decode(img.data[0].b64_json or "")
        print("image via queen:", raw.headers.get("x-rbee-worker"), len(png), "bytes PNG")

        # A placement that cannot fit: weights larger than the GPU (a sparse file).
        big = home / "huge-model"
        big.mkdir(exist_ok=True)
        (big / "config.json").write_text("{}")
        with open(big / "model.safetensors", "wb") as fh:
            fh.truncate(120 * 2**30)
        out = subprocess.run(
            [
                *exe,
                "model",
                "add",
                f"huge=transformers:{big}",
                "--hive",
                "gpu",
                "--device",
                "cuda:0",
                "--wait",
                "60",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        print("model add huge -> exit", out.returncode)
        print(out.stdout.strip())
        print(out.stderr.strip())
        print(
            subprocess.run([*exe, "worker", "list"], env=env, capture_output=True, text=True).stdout
        )
    finally:
        for p in (hive, queen):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stack", action="store_true")
    args = ap.parse_args()
    detection()
    where = Path(tempfile.mkdtemp(prefix="rbee-cuda-"))
    lm, sd = build_models(where)
    text_engine(lm)
    image_engine(sd)
    if args.stack:
        stack(lm, sd, where / "home")


if __name__ == "__main__":
    main()
