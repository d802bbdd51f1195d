"""The messages between the stages: request, progress, result."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from imagegen.adapters import AdapterChoice, LoraUse


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """What decides whether two requests can share one pipeline call."""

    model: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    # The adapters applied, at their scales (resolved from the request's choices on submit).
    loras: tuple[LoraUse, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One request: `num_images` images of one prompt, seeds seed..seed+n-1."""

    request_id: str
    params: SamplingParams
    prompt: str
    negative_prompt: str | None
    num_images: int
    seed: int
    # Image inputs (img2img / inpainting); held in memory only.
    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None
    strength: float = 0.8
    want_previews: bool = False
    # Steps (0-based) after which every image's latents are shown at full size (streaming).
    partial_image_steps: frozenset[int] = frozenset()
    # Adapters of the model by name; uploaded ones must be the owner's (None: no uploads).
    loras: tuple[AdapterChoice, ...] = ()
    owner: str | None = None


@dataclass(slots=True)
class GenerationResult:
    request_id: str
    images: list[Image.Image]
    seed: int
    device_seconds: float
    micro_batch_size: int = 1  # images in the one pipeline call this request shared
    ignored_words: int = 0


@dataclass(slots=True)
class Progress:
    step: int
    total: int
    preview: Image.Image | None = field(default=None, repr=False)
    # At a partial-image step: each of the request's images, at its requested size.
    partial_images: list[Image.Image] = field(default_factory=list, repr=False)


@dataclass(frozen=True, slots=True)
class Queued:
    """A ticket's place in its device's queue changed (1 = runs next)."""

    position: int


@dataclass(frozen=True, slots=True)
class Started:
    """A ticket went onto the device (again, after giving way to interactive work)."""


# What the queue pushes to a ticket's listener, in the order it happened.
QueueEvent = Queued | Started
