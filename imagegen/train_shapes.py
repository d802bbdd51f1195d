"""Train the embedded shapes model on freshly drawn scenes, on the CPU.

    python -m imagegen.train_shapes --out imagegen/embedded/shapes [--steps N] [--seed S]

Seeded and reproducible (same seed, steps and thread count: same weights).
Every batch is drawn anew by `imagegen.scenes`, so there is no data set to
fetch. The model is saved (EMA weights) every --save-every steps, so a usable
model exists while training runs; --steps 0 saves the random-init stand-in.
Prints losses only, never a prompt.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path
from typing import cast

import torch
from diffusers import __version__
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from torch import nn

from imagegen import scenes
from imagegen.pipelines.shapes import ShapesTextEncoder, coordinates, tokenize

# Share of prompts replaced by the empty prompt, so classifier-free guidance has
# an unconditional model to push away from.
_UNCONDITIONAL_SHARE = 0.1
# Min-SNR loss weighting (Hang et al. 2023). For v-prediction it all but mutes the
# noisiest timesteps, where layout (position, size, count) is decided, so the
# shipped model learns with uniform weights first; a short min-SNR second stage
# then sharpens shapes (measured: docs/embedded-model.md).
_SNR_GAMMA = 5.0
_EMA_DECAY = 0.999


def build_unet() -> UNet2DConditionModel:
    """1.7M parameters: 32/64/64 channels, cross-attention at 16x16 and 8x8."""
    return UNet2DConditionModel(
        sample_size=scenes.NATIVE_SIZE,
        in_channels=5,  # RGB + the x, y coordinates of `coordinates()`
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def build_training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=False,
    )


def sampling_scheduler(training: DDPMScheduler) -> DDIMScheduler:
    # "trailing" spacing starts few-step sampling from pure noise (t=999).
    return DDIMScheduler.from_config(
        training.config, timestep_spacing="trailing", clip_sample=True, set_alpha_to_one=True
    )


def batch(
    rng: random.Random, size: int, encoder: ShapesTextEncoder
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [-1, 1], token ids) of freshly drawn scenes."""
    images, prompts = scenes.draw_batch(size, rng)
    prompts = ["" if rng.random() < _UNCONDITIONAL_SHARE else p for p in prompts]
    ids = [tokenize(p, encoder.vocabulary, encoder.max_length)[0] for p in prompts]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pixels, torch.tensor(ids)


def loss_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, weighting: str) -> torch.Tensor:
    """Per-image weights of the v-prediction loss: uniform, or min-SNR-gamma."""
    if weighting == "uniform":
        return torch.ones(len(timesteps))
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    return snr.clamp(max=_SNR_GAMMA) / (snr + 1)


def ema_update(average: nn.Module, model: nn.Module, step: int) -> None:
    decay = min(_EMA_DECAY, (1 + step) / (10 + step))  # warm-up: early weights fade fast
    with torch.no_grad():
        for kept, current in zip(average.parameters(), model.parameters(), strict=True):
            kept.lerp_(current, 1 - decay)


def save(
    out: Path,
    unet: UNet2DConditionModel,
    encoder: ShapesTextEncoder,
    scheduler: DDPMScheduler,
    steps: int,
) -> None:
    """Write the model directory, replacing the previous one only once complete."""
    staging = out.with_name(out.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    unet.save_pretrained(staging / "unet")
    encoder.register_to_config(trained_steps=steps)
    encoder.save_pretrained(staging / "text_encoder")
    sampling_scheduler(scheduler).save_pretrained(staging / "scheduler")
    index = {
        "_class_name": "ShapesPipeline",
        "_diffusers_version": __version__,
        "loader": "imagegen.pipelines.shapes:load_shapes_pipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["imagegen.pipelines.shapes", "ShapesTextEncoder"],
        "trained_steps": steps,
    }
    (staging / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    for part in ("unet", "text_encoder"):
        _drop_source_path(staging / part / "config.json")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def build_models(init_from: Path | None) -> tuple[UNet2DConditionModel, ShapesTextEncoder]:
    """Fresh models, or a saved model's weights to train further."""
    if init_from is None:
        return build_unet(), ShapesTextEncoder()
    return (
        with_coordinate_inputs(
            UNet2DConditionModel.from_pretrained(init_from / "unet", local_files_only=True)
        ),
        ShapesTextEncoder.from_pretrained(init_from / "text_encoder", local_files_only=True),
    )


def with_coordinate_inputs(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """Give an RGB-only UNet the two coordinate inputs, with zero weights (same outputs)."""
    if unet.config["in_channels"] == 5:
        return unet
    wider = UNet2DConditionModel.from_config({**unet.config, "in_channels": 5})
    state = unet.state_dict()
    kernel = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([kernel, torch.zeros_like(kernel[:, :2])], dim=1)
    wider.load_state_dict(state)
    return wider


def _drop_source_path(config_file: Path) -> None:
    """from_pretrained records where --init-from loaded from; the saved model should not."""
    config = json.loads(config_file.read_text())
    config.pop("_name_or_path", None)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def train(args: argparse.Namespace) -> None:
    out, steps, batch_size, peak_lr = args.out, args.steps, args.batch_size, args.lr
    stop_after = steps if args.stop_after is None else args.stop_after
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    unet, encoder = build_models(args.init_from)
    scheduler = build_training_scheduler()
    ema_unet, ema_encoder = build_models(args.init_from)
    done_before = int(encoder.config["trained_steps"])
    ema_unet.load_state_dict(unet.state_dict())
    ema_encoder.load_state_dict(encoder.state_dict())
    parameters = [*unet.parameters(), *encoder.parameters()]
    print(f"parameters: unet {unet.num_parameters()}, text encoder {encoder.num_parameters()}")
    if steps == 0:
        save(out, ema_unet, ema_encoder, scheduler, done_before)
        return
    optimizer = torch.optim.AdamW(parameters, lr=peak_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak_lr, total_steps=steps, pct_start=0.15
    )
    grid = coordinates(batch_size, scenes.NATIVE_SIZE)
    started, running = time.monotonic(), 0.0
    for step in range(1, min(steps, stop_after) + 1):
        pixels, ids = batch(rng, batch_size, encoder)
        noise = torch.randn_like(pixels)
        drawn = torch.randint(0, len(scheduler.alphas_cumprod), (batch_size,))
        timesteps = cast(torch.IntTensor, drawn)  # the schedulers' annotation
        noisy = scheduler.add_noise(pixels, noise, timesteps)
        target = scheduler.get_velocity(pixels, noise, timesteps)
        inputs = torch.cat([noisy, grid], dim=1)
        predicted = unet(inputs, timesteps, encoder_hidden_states=encoder(ids)).sample
        per_image = ((predicted - target) ** 2).mean(dim=(1, 2, 3))
        loss = (per_image * loss_weights(scheduler, timesteps, args.weighting)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        ema_update(ema_unet, unet, step)
        ema_update(ema_encoder, encoder, step)
        running += loss.item()
        if step % 25 == 0:
            elapsed = time.monotonic() - started
            print(
                f"step {step}/{steps} loss {running / 25:.4f} "
                f"lr {schedule.get_last_lr()[0]:.2e} {elapsed / step:.2f} s/step",
                flush=True,
            )
            running = 0.0
        if step % args.save_every == 0 or step in (steps, stop_after):
            save(out, ema_unet, ema_encoder, scheduler, done_before + step)
            print(f"saved {step}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--save-every", type=int, default=250)
    # Stop early on the --steps schedule (reproduces a checkpoint saved mid-run).
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--init-from", type=Path, default=None, help="a saved model to go on from")
    parser.add_argument("--weighting", choices=("uniform", "min-snr"), default="uniform")
    # One thread: on a shared CPU, OpenMP threads spin-waiting for a busy core
    # made two-thread training up to ten times slower here.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
