"""Tiny random-weight diffusers directories of each family, built here (seeded, offline).

Shapes follow diffusers' own tests (get_dummy_components); the tokenizers are
made locally from a character vocabulary, so nothing is ever fetched. Each
directory generates a 32x32 image in well under a second on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderDC,
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    SanaPipeline,
    SanaTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    Gemma2Config,
    Gemma2Model,
    GemmaTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from bench import random_sd

# The attention projections a LoRA usually trains, in every family's denoiser.
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]

# Every family the tests serve; SD 1.5 and SDXL come from bench.random_sd's toys.
KINDS = ("sd15", "sdxl", "sd3", "flux", "pixart-sigma", "sana")
SIZE = 32


def _t5_tokenizer() -> T5Tokenizer:
    # A unigram vocabulary of single characters, with and without the word-start mark.
    chars = [chr(c) for c in range(33, 127)]
    vocabulary = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocabulary += [(c, -3.0) for c in chars] + [("\u2581" + c, -3.5) for c in chars]
    return T5Tokenizer(vocab=vocabulary, extra_ids=0)


def _t5(vocab_size: int) -> T5EncoderModel:
    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=32, d_ff=37, d_kv=8,
                                   num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8)).eval()


def _clip(vocab_size: int, projection: bool) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=0,
                            eos_token_id=1, pad_token_id=1, hidden_size=32,
                            intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                            projection_dim=32)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _flat_vae(latent_channels: int) -> AutoencoderKL:
    return AutoencoderKL(sample_size=32, block_out_channels=(4,), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=1,
                         use_quant_conv=False, use_post_quant_conv=False,
                         shift_factor=0.0609, scaling_factor=1.5035)


def _sd3(directory: Path) -> Any:
    clip_tokenizer = random_sd._byte_tokenizer(directory / "_tokenizer")
    t5_tokenizer = _t5_tokenizer()
    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(
            sample_size=32, patch_size=1, in_channels=16, num_layers=1, attention_head_dim=8,
            num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
            pooled_projection_dim=64, out_channels=16),
        text_encoder=_clip(len(clip_tokenizer), projection=True),
        text_encoder_2=_clip(len(clip_tokenizer), projection=True),
        text_encoder_3=_t5(len(t5_tokenizer)), tokenizer=clip_tokenizer,
        tokenizer_2=clip_tokenizer, tokenizer_3=t5_tokenizer, vae=_flat_vae(16),
        scheduler=FlowMatchEulerDiscreteScheduler())


def _flux(directory: Path) -> Any:
    clip_tokenizer = random_sd._byte_tokenizer(directory / "_tokenizer")
    t5_tokenizer = _t5_tokenizer()
    return FluxPipeline(
        transformer=FluxTransformer2DModel(
            patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
            pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]),
        text_encoder=_clip(len(clip_tokenizer), projection=False),
        text_encoder_2=_t5(len(t5_tokenizer)), tokenizer=clip_tokenizer,
        tokenizer_2=t5_tokenizer, vae=_flat_vae(1), scheduler=FlowMatchEulerDiscreteScheduler())


def _pixart_sigma(directory: Path) -> Any:
    t5_tokenizer = _t5_tokenizer()
    return PixArtSigmaPipeline(
        transformer=PixArtTransformer2DModel(
            sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8,
            num_attention_heads=3, caption_channels=32, in_channels=4, cross_attention_dim=24,
            out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6).eval(),
        vae=AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, sample_size=32).eval(),
        scheduler=DDIMScheduler(), text_encoder=_t5(len(t5_tokenizer)), tokenizer=t5_tokenizer)


def _sana(directory: Path) -> Any:
    # Gemma's byte fallback: every byte is a token, no merges.
    vocabulary = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    vocabulary.update({f"<0x{b:02X}>": 5 + b for b in range(256)})
    text_encoder = Gemma2Model(Gemma2Config(
        head_dim=16, hidden_size=8, intermediate_size=64, max_position_embeddings=8192,
        num_attention_heads=2, num_hidden_layers=1, num_key_value_heads=2,
        vocab_size=len(vocabulary), attn_implementation="eager")).eval()
    return SanaPipeline(
        transformer=SanaTransformer2DModel(
            patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2,
            attention_head_dim=4, num_cross_attention_heads=2, cross_attention_head_dim=4,
            cross_attention_dim=8, caption_channels=8, sample_size=32),
        vae=AutoencoderDC(
            in_channels=3, latent_channels=4, attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
            encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
            encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1],
            downsample_block_type="conv", upsample_block_type="interpolate",
            decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder=text_encoder,
        tokenizer=GemmaTokenizer(vocab=vocabulary, merges=[]))


_BUILDERS = {"sd3": _sd3, "flux": _flux, "pixart-sigma": _pixart_sigma, "sana": _sana}


def build(kind: str, directory: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight diffusers directory of `kind` under directory; return it."""
    if kind in random_sd.ARCHITECTURES:
        return random_sd.build(kind, directory, toy=True, seed=seed)
    torch.manual_seed(seed)
    _BUILDERS[kind](directory).save_pretrained(directory / kind)
    return directory / kind


def lora_bytes(model_dir: Path, seed: int, rank: int = 4) -> bytes:
    """A random LoRA of the model's denoiser as safetensors bytes, in the format diffusers'
    save_lora_weights writes; strong enough (up-weights not zero) to change every image."""
    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save

    pipeline = AutoPipelineForText2Image.from_pretrained(model_dir, local_files_only=True)
    component = "unet" if getattr(pipeline, "unet", None) is not None else "transformer"
    denoiser = getattr(pipeline, component)
    torch.manual_seed(seed)
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS,
                                    init_lora_weights="gaussian"))
    for name, parameter in denoiser.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser))
    return save({f"{component}.{key}": value.contiguous() for key, value in state.items()})
