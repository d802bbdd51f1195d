"""What every pipeline family offers the worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from PIL import Image

if TYPE_CHECKING:  # adapters import this module's errors
    from imagegen.adapters import LoraUse, Weights


class PromptError(ValueError):
    """The prompt cannot be drawn by this model (the message never quotes it)."""


class RequestRefused(ValueError):
    """The model cannot do what a request asks (a 400): the message names the model and
    the capability or adapter, `param` the request field; neither quotes content."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class PipelineOutput:
    images: list[Image.Image]
    # Per prompt: how many of its words the model did not know (0 if it has no vocabulary).
    ignored_words: list[int]


class TextToImagePipeline(Protocol):
    device: torch.device  # where the weights are now (the model manager moves them)
    dtype: torch.dtype

    def components(self) -> dict[str, torch.nn.Module]:
        """The model's weights by name ("unet", "text_encoder"...): what is moved and sized."""
        ...

    def to(self, device: torch.device) -> None:
        """Move every component to `device` (offload to "cpu", or back); `device` follows."""
        ...

    def check_prompt(self, prompt: str) -> int:
        """Return how many words will be ignored; raise PromptError if nothing is drawable."""
        ...

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
        """One image per prompt; prompts[i] is sampled with generators[i].

        step_callback(step, total, latents) runs after each step; returning
        False stops sampling (cancellation) and the call raises Cancelled.
        loras: the adapters for this call only; none carry over to the next.
        """
        ...

    def check_adapter(self, weights: Weights, model: str) -> None:
        """Raise AdapterInvalid unless the weights are a LoRA adapter of this model."""
        ...


class Cancelled(Exception):
    """Sampling stopped because the caller asked it to."""
