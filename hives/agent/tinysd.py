"""A tiny Stable Diffusion pipeline with random weights, built from configs.

It draws noise, not pictures. It exists so that tests, CI and a fresh machine with
no model downloaded can exercise the real diffusers path end to end: the pipeline
is saved with `save_pretrained` and loaded back by `AutoPipelineForText2Image`
exactly like one from the Hub (model_index.json, one folder per component,
safetensors weights, a real CLIP BPE tokenizer). It weighs about 2 MB and draws a
64x64 image in a fraction of a second on a CPU.

Next to the pipeline it writes rbee.json, the options rbee's diffusers engine
merges under the model's own (the sizes it offers, the default step count).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TINY_OPTIONS: dict[str, Any] = {"sizes": ["64x64", "128x128", "256x256"], "steps": 2}

_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
# A few merges so that the tokenizer does real BPE work on English-ish prompts.
_MERGES = (
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("i", "n"),
    ("in", "g</w>"),
    ("e", "r</w>"),
    ("o", "n</w>"),
    ("a", "t</w>"),
    ("o", "f</w>"),
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_clip_tokenizer_files(folder: Path) -> int:
    """vocab.json + merges.txt of a small but complete CLIP BPE vocabulary (every
    byte, with and without the end-of-word mark, the merges above, and the two
    special tokens last so that argmax(ids) finds <|endoftext|>, as CLIP's pooling
    expects). Returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    base = list(_bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base] + ["".join(m) for m in _MERGES]
    tokens += list(_SPECIALS)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES)
    (folder / "merges.txt").write_text(merges, encoding="utf-8")
    return len(vocab)


def clip_tokenizer(folder: Path) -> Any:
    """A CLIPTokenizer from the files above. (transformers 5's CLIPTokenizer ignores
    vocab_file/merges_file given to its constructor, so go through from_pretrained.)"""
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def _text_config(vocab_size: int, eos_id: int, bos_id: int, **extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        **extra,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )


def _scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        timestep_spacing="leading",
        steps_offset=1,
    )


def _build_sd(work: Path) -> Any:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer(work / "_tok")
    unet = UNet2DConditionModel(
        sample_size=32,
        layers_per_block=1,
        block_out_channels=(32, 64),
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    text_encoder = CLIPTextModel(
        _text_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id)
    )
    return StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl(work: Path) -> Any:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer(work / "_tok")
    tokenizer_2 = clip_tokenizer(work / "_tok2")
    config = _text_config(
        len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, projection_dim=32
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        layers_per_block=1,
        block_out_channels=(32, 64),
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        # six micro-conditioning numbers x 8 + the pooled text embedding (32)
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,  # the two encoders' hidden states, concatenated
        norm_num_groups=32,
    )
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),
    )


def build_tiny_sd(dest: Path, kind: str = "sd") -> Path:
    """Build the tiny pipeline (`kind` "sd" or "sdxl") into `dest` and return it
    (idempotent and atomic: see save_tiny_pipeline)."""
    if kind not in ("sd", "sdxl"):
        raise ValueError(f"unknown tiny pipeline kind {kind!r}: 'sd' or 'sdxl'")
    options = dict(TINY_OPTIONS)
    if kind == "sdxl":
        options["pipeline"] = "sdxl"
    return save_tiny_pipeline(Path(dest), _build_sd if kind == "sd" else _build_sdxl, options)


def save_tiny_pipeline(dest: Path, build: Callable[[Path], Any], options: dict[str, Any]) -> Path:
    """Build a random-weight pipeline with `build(workdir)` (seeded, so every machine gets
    the same weights), save it with its rbee.json `options` into `dest`, and return dest.

    Idempotent (returns at once when dest/model_index.json exists) and atomic: it is
    built in a temporary sibling directory and renamed into place, so a crash or a
    concurrent builder never leaves a half-written pipeline that loads badly.
    """
    if (dest / "model_index.json").is_file():
        return dest
    import torch

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        state = torch.random.get_rng_state()
        torch.manual_seed(0)  # the same random weights on every machine
        try:
            pipe = build(work)
        finally:
            torch.random.set_rng_state(state)
        out = work / "pipeline"
        pipe.save_pretrained(str(out), safe_serialization=True)
        (out / "rbee.json").write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(out, dest)
        except OSError:
            if not (dest / "model_index.json").is_file():  # not a concurrent winner: real
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def main() -> None:  # pragma: no cover - a convenience for people
    import sys

    where = build_tiny_sd(Path(sys.argv[1]), *(sys.argv[2:3] or ["sd"]))
    print(where)


if __name__ == "__main__":  # pragma: no cover
    main()
