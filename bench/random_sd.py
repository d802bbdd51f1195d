"""Random-weight Stable Diffusion directories: the full-size architectures, or toy ones.

A UNet's compute does not depend on its weights, so a random SD 1.5 or SDXL
(same configs as the published models) times the service exactly as the
real one would, with nothing downloaded. The tokenizer is byte-level with no
merges (every character a token): tokenizing is not what is being timed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ARCHITECTURES = ("sd15", "sdxl")

SD15_UNET: dict[str, Any] = {"sample_size": 64, "cross_attention_dim": 768}
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
VAE: dict[str, Any] = {
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
}
CLIP_L: dict[str, Any] = {"hidden_size": 768, "intermediate_size": 3072,
                          "num_hidden_layers": 12, "num_attention_heads": 12}
CLIP_G: dict[str, Any] = {"hidden_size": 1280, "intermediate_size": 5120,
                          "num_hidden_layers": 32, "num_attention_heads": 20,
                          "projection_dim": 1280}

# Toys keep each architecture's shape (SDXL's added time embedding, two text
# encoders) at a size a CPU test runs in seconds.
TOY_UNET: dict[str, Any] = {"sample_size": 8, "block_out_channels": (32, 64),
                            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
                            "layers_per_block": 1, "attention_head_dim": 4,
                            "cross_attention_dim": 32}
TOY_XL_UNET: dict[str, Any] = {**TOY_UNET, "cross_attention_dim": 64,
                               "use_linear_projection": True,
                               "addition_embed_type": "text_time",
                               "addition_time_embed_dim": 8,
                               "projection_class_embeddings_input_dim": 80}
TOY_VAE: dict[str, Any] = {"down_block_types": ("DownEncoderBlock2D",) * 2,
                           "up_block_types": ("UpDecoderBlock2D",) * 2,
                           "block_out_channels": (32, 64), "layers_per_block": 1,
                           "latent_channels": 4}
TOY_CLIP: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 37,
                            "num_hidden_layers": 2, "num_attention_heads": 4,
                            "projection_dim": 32}


def native_size(architecture: str, toy: bool) -> int:
    """Pixels per side the architecture is made for (the VAE scales latents by 8 or 2)."""
    if toy:
        return 32
    return {"sd15": 512, "sdxl": 1024}[architecture]


def _byte_tokenizer(directory: Path) -> CLIPTokenizer:
    # CLIP's byte-to-unicode table: printable bytes map to themselves, the rest above 255.
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocabulary = {token: i for i, token in enumerate(
        ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)])}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocabulary))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                         pad_token="<|endoftext|>", model_max_length=77)  # noqa: S106 (a token name, not a secret)


def _clip(config: dict[str, Any], vocab_size: int, projection: bool = False) -> CLIPTextModel:
    settings = CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=77,
                              bos_token_id=0, eos_token_id=1, pad_token_id=1, **config)
    model_class = CLIPTextModelWithProjection if projection else CLIPTextModel
    return model_class(settings).eval()


def build(architecture: str, directory: Path, *, toy: bool,
          dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """Write a random-weight diffusers directory for `architecture` in `dtype`; return it."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}")
    torch.manual_seed(seed)
    tokenizer = _byte_tokenizer(directory / "_tokenizer")
    vocab_size = len(tokenizer)
    vae = AutoencoderKL(**(TOY_VAE if toy else VAE))
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                       beta_end=0.012, timestep_spacing="leading",
                                       steps_offset=1)
    pipeline: Any  # diffusers' pipeline classes type-check as untyped
    if architecture == "sd15":
        pipeline = StableDiffusionPipeline(
            vae=vae, text_encoder=_clip(TOY_CLIP if toy else CLIP_L, vocab_size),
            tokenizer=tokenizer, unet=UNet2DConditionModel(**(TOY_UNET if toy else SD15_UNET)),
            scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    else:
        pipeline = StableDiffusionXLPipeline(
            vae=vae, text_encoder=_clip(TOY_CLIP if toy else CLIP_L, vocab_size),
            text_encoder_2=_clip(TOY_CLIP if toy else CLIP_G, vocab_size, projection=True),
            tokenizer=tokenizer, tokenizer_2=tokenizer,
            unet=UNet2DConditionModel(**(TOY_XL_UNET if toy else SDXL_UNET)),
            scheduler=scheduler)
    pipeline.to(dtype=dtype)
    pipeline.save_pretrained(directory / architecture)
    return directory / architecture
