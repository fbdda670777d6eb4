"""A tiny AnimateDiff text-to-video pipeline with random weights, built from configs.

It animates noise, not scenes. As hives/agent/tinysd.py does for images, it exists so
that tests, CI and a fresh machine with no model downloaded can drive the real video
path end to end: a Stable Diffusion UNet, a motion adapter, a VAE, a CLIP text encoder
and a real CLIP BPE tokenizer, saved with `save_pretrained` and loaded back by
`DiffusionPipeline.from_pretrained` exactly like a pipeline from the Hub. It weighs well
under 1 MB and makes a 64x64 clip of a few seconds in about a second on a CPU.

Next to the pipeline it writes rbee.json, the options rbee's video engine merges under
the model's own (its sizes, frame rate and step count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hives.agent.tinysd import clip_tokenizer, save_tiny_pipeline

# 4 frames a second keeps a 12-second clip at 48 frames (the motion adapter's
# positional table below holds 64).
TINY_VIDEO_OPTIONS: dict[str, Any] = {"sizes": ["64x64", "128x128"], "fps": 4, "steps": 2}


def _build(work: Path) -> Any:
    from diffusers import (
        AnimateDiffPipeline,
        AutoencoderKL,
        DDIMScheduler,
        MotionAdapter,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer(work / "_tok")
    channels = (8, 8)
    unet = UNet2DConditionModel(
        block_out_channels=channels,
        layers_per_block=2,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
    )
    adapter = MotionAdapter(
        block_out_channels=channels,
        motion_layers_per_block=2,
        motion_norm_num_groups=2,
        motion_num_attention_heads=4,
        motion_max_seq_length=64,
    )
    vae = AutoencoderKL(
        block_out_channels=channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
            hidden_size=8,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False
    )
    return AnimateDiffPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        motion_adapter=adapter,
        scheduler=scheduler,
    )


def build_tiny_video(dest: Path) -> Path:
    """Build the tiny pipeline into `dest` and return it (idempotent and atomic)."""
    return save_tiny_pipeline(Path(dest), _build, dict(TINY_VIDEO_OPTIONS))


def main() -> None:  # pragma: no cover - a convenience for people
    import sys

    print(build_tiny_video(Path(sys.argv[1])))


if __name__ == "__main__":  # pragma: no cover
    main()
