"""Pipeline families: what differs between the kinds of model the service runs, declared once.

A diffusers directory names its pipeline class in model_index.json; diffusers'
AutoPipelineForText2Image maps that class to a family key ("stable-diffusion-xl",
"flux", "pixart-sigma"...), and its image-to-image and inpainting tables say which
families have those variants. What the service must pass differently per family
(negative prompts, the text encoder's sequence length, size snapping, the
guidance a model is made for) is the table below: the pipeline wrapper reads
these rows and never tests a family by name. A family diffusers loads but this
table does not list runs on the generic row, with its directory's own defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imagegen.pipelines.base import RequestRefused
from imagegen.types import GenerationRequest

SHAPES = "shapes"


class FamilyError(ValueError):
    """The directory holds no pipeline the service can run (the message names what it found)."""


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    # The pipeline takes a negative prompt (Flux's guidance is distilled: it takes none).
    negative_prompt: bool = True
    # Tokens of the prompt the longest-reading text encoder sees; None: its tokenizer's limit.
    max_sequence_length: int | None = None
    # The tokenizer attribute of that encoder, for counting the words cut off.
    prompt_tokenizer: str = "tokenizer"
    # A scheduler class replacing the directory's own; None keeps the directory's.
    scheduler: str | None = None
    # Changes to the scheduler's config (e.g. timestep_spacing = "trailing" for few-step
    # distilled models such as SDXL-Lightning).
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    default_guidance: float = 7.5
    default_steps: int = 25
    # Fixed keyword arguments every call gets (e.g. no snapping of sizes to a table:
    # the operator's `sizes` are the sizes served).
    call_options: dict[str, Any] = field(default_factory=dict)
    # Filled from diffusers' tables when a directory is read (see family_of_directory).
    image_to_image: bool = False
    inpainting: bool = False
    adapters: bool = False


_NO_SIZE_SNAPPING = {"use_resolution_binning": False}

# The families diffusers' AutoPipelineForText2Image loads that this service has run
# (tests/test_families.py builds a tiny one of each), by diffusers' own key.
FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("stable-diffusion", default_guidance=7.5),
    Family("stable-diffusion-xl", default_guidance=5.0),
    Family("stable-diffusion-3", max_sequence_length=256, prompt_tokenizer="tokenizer_3",
           default_guidance=7.0, default_steps=28),
    Family("flux", negative_prompt=False, max_sequence_length=512,
           prompt_tokenizer="tokenizer_2", default_guidance=3.5, default_steps=28),
    Family("pixart-alpha", max_sequence_length=120, default_guidance=4.5, default_steps=20,
           call_options=_NO_SIZE_SNAPPING),
    Family("pixart-sigma", max_sequence_length=300, default_guidance=4.5, default_steps=20,
           call_options=_NO_SIZE_SNAPPING),
    Family("sana", max_sequence_length=300, default_guidance=4.5, default_steps=20,
           call_options=_NO_SIZE_SNAPPING),
    Family("lcm", negative_prompt=False, scheduler="LCMScheduler", default_guidance=8.0,
           default_steps=4),
)}
SHAPES_PIPELINE = "ShapesPipeline"  # the class the embedded model's model_index.json names
# The embedded model: its own pipeline, with image inputs, without adapters.
SHAPES_FAMILY = Family(SHAPES, default_guidance=1.5, default_steps=20, image_to_image=True,
                       inpainting=True)


def _class_name(directory: Path) -> str:
    try:
        index = json.loads((directory / "model_index.json").read_text())
    except (OSError, ValueError):
        raise FamilyError("has no readable model_index.json (not a diffusers directory)") from None
    name = index.get("_class_name") if isinstance(index, dict) else None
    if not isinstance(name, str):
        raise FamilyError("model_index.json names no pipeline class") from None
    return name


def family_of_directory(directory: Path) -> Family:
    """The family of a local diffusers directory, with its capabilities from diffusers' tables."""
    import inspect

    from diffusers.loaders.lora_base import LoraBaseMixin
    from diffusers.pipelines.auto_pipeline import (
        AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        AUTO_INPAINT_PIPELINES_MAPPING,
        AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
    )

    class_name = _class_name(directory)
    if class_name == SHAPES_PIPELINE:
        return SHAPES_FAMILY
    found = [(key, pipeline) for key, pipeline in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.items()
             if pipeline.__name__ == class_name]
    if not found:
        raise FamilyError(f"holds a {class_name}, which is not a text-to-image pipeline "
                          "diffusers' AutoPipelineForText2Image loads")
    key, pipeline_class = found[0]
    # The generic row: a negative prompt exactly when the pipeline's call takes one.
    generic = Family(key, negative_prompt="negative_prompt" in inspect.signature(
        pipeline_class.__call__).parameters)
    return replace(FAMILIES.get(key, generic),
                   image_to_image=key in AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
                   inpainting=key in AUTO_INPAINT_PIPELINES_MAPPING,
                   adapters=issubclass(pipeline_class, LoraBaseMixin))


def check_offered(model: str, family: Family, request: GenerationRequest) -> None:
    """Refuse what the model's family does not offer, naming it (never a 500 later)."""
    what = f"Model '{model}' ({family.name})"
    if request.negative_prompt and not family.negative_prompt:
        raise RequestRefused(f"{what} takes no negative prompt.", "negative_prompt")
    if request.init_image is not None and request.mask_image is None \
            and not family.image_to_image:
        raise RequestRefused(f"{what} has no image-to-image.", "image")
    if request.mask_image is not None and not family.inpainting:
        raise RequestRefused(f"{what} has no inpainting.", "mask")
