"""The embedded model: a tiny text-to-image diffusion pipeline over a fixed vocabulary.

It draws the scenes of `imagegen.scenes` (coloured shapes) at 32x32 pixels in
pixel space, with a diffusers UNet, a DDIM scheduler and a small text encoder
of its own. Larger sizes are served by upscaling. Nothing here logs a prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from torch import nn

from imagegen import scenes
from imagegen.adapters import AdapterInvalid, LoraUse, Weights
from imagegen.pipelines.base import Cancelled, PipelineOutput, PromptError

PAD = "<pad>"
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 1.5


class ShapesTextEncoder(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Word + position embeddings and one transformer layer over a fixed vocabulary.

    The vocabulary lives in the config, so a saved model carries its own words.
    `trained_steps` is 0 for a random-init stand-in.
    """

    @register_to_config
    def __init__(
        self,
        vocabulary: Sequence[str] = (PAD, *scenes.WORDS),
        max_length: int = 16,
        hidden_size: int = 64,
        num_heads: int = 4,
        trained_steps: int = 0,
    ) -> None:
        super().__init__()
        self.vocabulary = list(vocabulary)
        self.max_length = max_length
        self.word_embedding = nn.Embedding(len(vocabulary), hidden_size)
        self.position_embedding = nn.Embedding(max_length, hidden_size)
        self.layer = nn.TransformerEncoderLayer(
            hidden_size,
            num_heads,
            dim_feedforward=2 * hidden_size,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(batch, max_length) ids -> (batch, max_length, hidden_size) states."""
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        states = self.word_embedding(token_ids) + self.position_embedding(positions)
        return self.norm(self.layer(states))


def tokenize(prompt: str, vocabulary: Sequence[str], max_length: int) -> tuple[list[int], int]:
    """Known words' ids padded to max_length, and how many words were not known.

    Words are lowercase runs of letters; unknown ones are dropped and counted.
    """
    index = {word: i for i, word in enumerate(vocabulary)}
    words = re.findall(r"[a-z]+", prompt.lower())
    ids = [index[w] for w in words if w in index][:max_length]
    ignored = sum(1 for w in words if w not in index)
    return ids + [index[PAD]] * (max_length - len(ids)), ignored


def _vocabulary_hint() -> str:
    return "; ".join(f"{kind}: {', '.join(words)}" for kind, words in scenes.VOCABULARY.items())


class ShapesPipeline:
    """Draws coloured shapes from prompts; implements `TextToImagePipeline`."""

    native_size = scenes.NATIVE_SIZE
    default_steps = DEFAULT_STEPS
    default_guidance = DEFAULT_GUIDANCE
    vocabulary: dict[str, list[str]] = scenes.VOCABULARY
    # check_prompt passes a prompt with one of these (what /openapi.json states).
    drawable_words: frozenset[str] = scenes.CONTENT_WORDS
    examples: list[str] = scenes.EXAMPLES

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: ShapesTextEncoder,
        scheduler: DDIMScheduler,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        # ModelMixin.to is wrapped by a decorator whose signature mypy misreads.
        self.unet = unet.to(device=device, dtype=dtype).eval()  # type: ignore[call-arg]
        self.text_encoder = text_encoder.to(device=device, dtype=dtype).eval()  # type: ignore[call-arg]
        self.scheduler = scheduler
        self.device = device
        self.dtype = dtype
        self._content_ids = {
            i for i, w in enumerate(text_encoder.vocabulary) if w in scenes.CONTENT_WORDS
        }

    def components(self) -> dict[str, nn.Module]:
        return {"unet": self.unet, "text_encoder": self.text_encoder}

    def to(self, device: torch.device) -> None:
        for component in self.components().values():
            component.to(device)
        self.device = device

    @property
    def trained_steps(self) -> int:
        return int(self.text_encoder.config.trained_steps)

    def check_adapter(self, weights: Weights, model: str) -> None:
        raise AdapterInvalid(f"Model '{model}' (shapes) takes no adapters.", "model")

    def check_prompt(self, prompt: str) -> int:
        ids, ignored = self._tokenize(prompt)
        if not self._content_ids.intersection(ids):
            raise PromptError(
                f"The prompt has no word this model can draw. It knows {_vocabulary_hint()}."
            )
        return ignored

    def _tokenize(self, prompt: str) -> tuple[list[int], int]:
        encoder = self.text_encoder
        return tokenize(prompt, encoder.vocabulary, encoder.max_length)

    def _encode(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = [self._tokenize(p)[0] for p in prompts]
        return self.text_encoder(torch.tensor(ids, device=self.device))

    def __call__(
        self,
        prompts: list[str],
        *,
        negative_prompts: list[str | None],
        generators: list[torch.Generator],
        width: int,
        height: int,
        num_inference_steps: int,
        guidance_scale: float,
        init_images: list[Image.Image | None] | None = None,
        mask_images: list[Image.Image | None] | None = None,
        strength: float = 0.8,
        step_callback: Callable[[int, int, torch.Tensor], bool] | None = None,
        loras: tuple[LoraUse, ...] = (),
    ) -> PipelineOutput:
        """One image per prompt; prompts[i] is sampled with generators[i]."""
        if loras:  # the engine resolves none for this model: check_adapter refuses them all
            raise ValueError("the shapes model takes no adapters")
        self._check_inputs(
            prompts, negative_prompts, generators, width, height, init_images, mask_images, strength
        )
        ignored = [self.check_prompt(p) for p in prompts]
        with torch.inference_mode():
            latents = self._sample(
                prompts,
                negative_prompts,
                generators,
                num_inference_steps,
                guidance_scale,
                init_images,
                mask_images,
                strength,
                step_callback,
            )
        return PipelineOutput([_to_image(x, width, height) for x in latents], ignored)

    def _check_inputs(
        self,
        prompts: list[str],
        negative_prompts: list[str | None],
        generators: list[torch.Generator],
        width: int,
        height: int,
        init_images: list[Image.Image | None] | None,
        mask_images: list[Image.Image | None] | None,
        strength: float,
    ) -> None:
        n = len(prompts)
        if len(negative_prompts) != n or len(generators) != n:
            raise ValueError("prompts, negative_prompts and generators must have the same length")
        size = self.native_size
        if width <= 0 or height <= 0 or width % size or height % size:
            raise ValueError(f"width and height must be positive multiples of {size}")
        if init_images is not None and (len(init_images) != n or None in init_images):
            raise ValueError("init_images must give one image per prompt")
        if mask_images is not None and (init_images is None or len(mask_images) != n):
            raise ValueError("mask_images need init_images and one entry per prompt")
        if not 0.0 < strength <= 1.0:
            raise ValueError("strength must be in (0, 1]")

    def _sample(
        self,
        prompts: list[str],
        negative_prompts: list[str | None],
        generators: list[torch.Generator],
        num_inference_steps: int,
        guidance_scale: float,
        init_images: list[Image.Image | None] | None,
        mask_images: list[Image.Image | None] | None,
        strength: float,
        step_callback: Callable[[int, int, torch.Tensor], bool] | None,
    ) -> torch.Tensor:
        n, size = len(prompts), self.native_size
        states = self._encode([p or "" for p in negative_prompts] + prompts)
        shape = (n, 3, size, size)
        # One generator per image: an image never depends on the rest of its batch.
        noise = randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self.scheduler.timesteps
        known = mask = None
        latents = noise
        if init_images is not None:
            known = torch.stack([_to_tensor(im) for im in init_images if im is not None])
            known = known.to(device=self.device, dtype=self.dtype)
            timesteps = timesteps[
                num_inference_steps - max(1, round(num_inference_steps * strength)) :
            ]
            latents = self.scheduler.add_noise(known, noise, _int(timesteps[:1]))
            if mask_images is not None:
                mask = _masks(mask_images, size).to(device=self.device, dtype=self.dtype)
        total = len(timesteps)
        grid = coordinates(2 * n, size).to(device=self.device, dtype=self.dtype)
        for step, t in enumerate(timesteps):
            pair = torch.cat([torch.cat([latents, latents]), grid], dim=1)
            uncond, cond = self.unet(pair, t, encoder_hidden_states=states).sample.chunk(2)
            guided = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(guided, int(t), latents, return_dict=False)[0]
            if known is not None and mask is not None:
                # RePaint-style: outside the mask, put back the init image noised to this level.
                later = timesteps[step + 1 : step + 2]
                kept = self.scheduler.add_noise(known, noise, _int(later)) if len(later) else known
                latents = mask * latents + (1 - mask) * kept
            if step_callback is not None and step_callback(step, total, latents) is False:
                raise Cancelled
        return latents


def coordinates(n: int, size: int) -> torch.Tensor:
    """(n, 2, size, size) x and y in [-1, 1]: extra UNet inputs that tell it where it is.

    Position words ("at the top left") were barely learned from zero padding alone.
    """
    axis = torch.linspace(-1.0, 1.0, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y]).expand(n, 2, size, size)


def _int(timesteps: torch.Tensor) -> torch.IntTensor:
    """Schedulers annotate timesteps as IntTensor; ours are integer-valued already."""
    return cast(torch.IntTensor, timesteps.long())


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> (3, 32, 32) in [-1, 1]."""
    size = scenes.NATIVE_SIZE
    small = image.convert("RGB").resize((size, size), Image.Resampling.BOX)
    array = np.asarray(small, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def _masks(mask_images: list[Image.Image | None], size: int) -> torch.Tensor:
    """(n, 1, size, size): 1 where the image is repainted (white), 0 where it is kept."""
    masks = []
    for image in mask_images:
        if image is None:  # no mask: the whole image is repainted (plain img2img)
            masks.append(np.ones((size, size), dtype=np.float32))
            continue
        small = image.convert("L").resize((size, size), Image.Resampling.BOX)
        masks.append((np.asarray(small) >= 128).astype(np.float32))
    return torch.from_numpy(np.stack(masks))[:, None]


def _to_image(latent: torch.Tensor, width: int, height: int) -> Image.Image:
    array = ((latent.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0)
    image = Image.fromarray(array.cpu().numpy())
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)


def load_shapes_pipeline(path: Path, device: torch.device, dtype: torch.dtype) -> ShapesPipeline:
    """Load a saved model directory (unet/, scheduler/, text_encoder/) from local files only."""
    unet = UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True)
    text_encoder = ShapesTextEncoder.from_pretrained(path / "text_encoder", local_files_only=True)
    scheduler = DDIMScheduler.from_pretrained(path / "scheduler", local_files_only=True)
    return ShapesPipeline(unet, text_encoder, scheduler, device, dtype)
