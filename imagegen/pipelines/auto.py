"""Any local diffusers text-to-image directory (SD 1.x/2.x, SDXL, SD3, Flux, PixArt, Sana...).

diffusers' auto pipelines pick the class from the directory's model_index.json;
image-to-image and inpainting reuse the same loaded components (`from_pipe`),
so a model is in memory once, and exist where the family has them. What the
call passes differently per family comes from its row in imagegen.families.
Latents are decoded to images exactly once, by the pipeline itself
(output_type="pil").
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
)
from PIL import Image

from imagegen.adapters import Adapter, AdapterInvalid, LoraUse, Weights
from imagegen.families import Family
from imagegen.pipelines.base import Cancelled, PipelineOutput

StepCallback = Callable[[int, int, torch.Tensor], bool]
# A diffusers pipeline object (StableDiffusionPipeline, FluxPipeline...): their
# classes are resolved lazily at run time and type-check as untyped.
Diffusers = Any

# Adapters kept loaded in a model at once; the least recently used beyond it are unloaded.
MAX_LOADED_ADAPTERS = 8
# The down (A) and up (B) matrices of a LoRA layer, in diffusers' and peft's spellings.
_LORA_DOWN = (".lora.down.weight", ".lora_A.weight", ".lora_down.weight")
_LORA_UP = (".lora.up.weight", ".lora_B.weight", ".lora_up.weight")
# A compiled model's one adapter (ModelSpec.lora_max_rank), on the denoiser's attention
# projections: what LoRAs of these families train.
ADAPTER_SLOT = "slot"
SLOT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class DiffusersPipeline:
    """Implements `TextToImagePipeline` over a diffusers pipeline of any family."""

    def __init__(self, text2image: Diffusers, family: Family, device: torch.device,
                 dtype: torch.dtype) -> None:
        text2image.to(device)
        self.family = family
        self.text2image = text2image
        self.image2image = (AutoPipelineForImage2Image.from_pipe(text2image)
                            if family.image_to_image else None)
        self.inpaint = (AutoPipelineForInpainting.from_pipe(text2image)
                        if family.inpainting else None)
        for pipeline in (self.text2image, self.image2image, self.inpaint):
            if pipeline is not None:
                pipeline.set_progress_bar_config(disable=True)
        self.device = device
        self.dtype = dtype
        tokenizer = getattr(text2image, family.prompt_tokenizer)
        self.max_prompt_tokens = family.max_sequence_length or tokenizer.model_max_length
        # A fast tokenizer keeps its padding and truncation settings as state, set
        # on every call: the web layer's check_prompt sharing the pipeline's would
        # change them mid-batch (unpadded negative prompts, a 500). So it has its
        # own copy, and a lock, as check_prompt runs on the event loop and the worker.
        self._prompt_tokenizer = copy.deepcopy(tokenizer)
        self._prompt_lock = threading.Lock()
        # (in, out) features of every layer an adapter may change, read before any is loaded.
        self._adapter_targets = _layer_shapes(text2image) if family.adapters else {}
        self._loaded: dict[str, Adapter] = {}  # by key, least recently used first
        # With an adapter slot: its rank, its all-zero weights, and what it holds now.
        self._slot_rank = 0
        self._empty_slot: Weights = {}
        self._slot_holds: tuple[str, float] | None = None

    def open_adapter_slot(self, rank: int) -> None:
        """Before compiling: an adapter of `rank` on the denoiser's attention projections,
        all zeros (no effect). A request's adapter is copied into it (diffusers' hotswap,
        its scale folded into the weights), so the compiled graph never changes."""
        from peft import LoraConfig, get_peft_model_state_dict

        name = "unet" if getattr(self.text2image, "unet", None) is not None else "transformer"
        denoiser = getattr(self.text2image, name)
        self.text2image.enable_lora_hotswap(target_rank=rank)
        denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank,
                                        target_modules=list(SLOT_TARGETS)), adapter_name="shape")
        state = get_peft_model_state_dict(denoiser, adapter_name="shape")
        denoiser.delete_adapters("shape")
        self._empty_slot = {f"{name}.{key}": torch.zeros_like(value)
                            for key, value in state.items()}
        # Clones: peft may keep the given tensors as the slot's parameters, which later
        # swaps overwrite in place.
        self.text2image.load_lora_weights(_clones(self._empty_slot), adapter_name=ADAPTER_SLOT)
        self._slot_rank = rank

    def _fill_slot(self, use: LoraUse | None) -> None:
        holds = None if use is None else (use.adapter.key, use.scale)
        if holds == self._slot_holds:
            return
        weights = _clones(self._empty_slot) if use is None else {
            key: tensor * use.scale if key.endswith(_LORA_UP) else tensor.clone()
            for key, tensor in use.adapter.weights.items()}
        self.text2image.load_lora_weights(weights, adapter_name=ADAPTER_SLOT, hotswap=True)
        self._slot_holds = holds

    def check_adapter(self, weights: Weights, model: str) -> None:
        """Refuse weights that are not a LoRA of this model's layers (before any is loaded)."""
        if not self.family.adapters:
            raise AdapterInvalid(f"Model '{model}' ({self.family.name}) takes no adapters.",
                                 "model")
        normal = type(self.text2image).lora_state_dict(dict(weights))
        state = normal[0] if isinstance(normal, tuple) else normal
        matrices = 0
        for key, tensor in state.items():
            for suffixes, side in ((_LORA_DOWN, 0), (_LORA_UP, 1)):
                suffix = next((x for x in suffixes if key.endswith(x)), None)
                if suffix is None:
                    continue
                shape = self._adapter_targets.get(key[:-len(suffix)])
                # down: (rank, in_features, ...); up: (out_features, rank, ...)
                wanted = None if shape is None else shape[side]
                if tensor.dim() < 2 or tensor.shape[1 - side] != wanted:
                    raise AdapterInvalid(f"The adapter does not fit model '{model}': its "
                                         "layers are not the model's.", "file")
                if self._slot_rank:
                    self._check_fits_slot(key[:-len(suffix)], tensor.shape[side], model)
                matrices += 1
        if matrices == 0:
            raise AdapterInvalid(f"The adapter holds no LoRA weights for model '{model}'.",
                                 "file")

    def _check_fits_slot(self, layer: str, rank: int, model: str) -> None:
        if not layer.endswith(tuple(f".{target}" for target in SLOT_TARGETS)):
            raise AdapterInvalid(f"Model '{model}' is compiled with an adapter slot for "
                                 f"attention projections ({', '.join(SLOT_TARGETS)}); the "
                                 "adapter changes other layers.", "file")
        if rank > self._slot_rank:
            raise AdapterInvalid(f"The adapter's rank {rank} is above model '{model}''s "
                                 f"lora_max_rank {self._slot_rank}.", "file")

    def _use_adapters(self, loras: tuple[LoraUse, ...]) -> None:
        """Exactly these adapters at these scales for the next call; none when empty."""
        if self._slot_rank:  # the engine refuses more than one for a slot
            self._fill_slot(loras[0] if loras else None)
            return
        keep = {use.adapter.key for use in loras}
        for key, adapter in list(self._loaded.items()):
            if key not in keep and (adapter.deleted
                                    or len(self._loaded) + len(loras) > MAX_LOADED_ADAPTERS):
                self.text2image.delete_adapters(key)
                del self._loaded[key]
        for use in loras:
            key = use.adapter.key
            if key not in self._loaded:
                try:
                    # A copy: diffusers pops the keys it consumes from the dict it is given.
                    self.text2image.load_lora_weights(dict(use.adapter.weights),
                                                      adapter_name=key)
                except Exception:
                    loaded = self.text2image.get_list_adapters().values()
                    if any(key in names for names in loaded):  # half loaded
                        self.text2image.delete_adapters(key)
                    raise
            self._loaded.pop(key, None)
            self._loaded[key] = use.adapter  # most recently used last
        if not loras:
            if self._loaded:
                self.text2image.disable_lora()
            return
        self.text2image.enable_lora()
        self.text2image.set_adapters([use.adapter.key for use in loras],
                                     [use.scale for use in loras])

    def components(self) -> dict[str, torch.nn.Module]:
        return {name: component for name, component in self.text2image.components.items()
                if isinstance(component, torch.nn.Module)}

    def to(self, device: torch.device) -> None:
        # The image-to-image and inpainting pipelines share these components.
        self.text2image.to(device)
        self.device = device

    def check_prompt(self, prompt: str) -> int:
        """Text encoders read any text but only their first tokens: count the words cut off."""
        tokenizer = self._prompt_tokenizer
        with self._prompt_lock:
            kept_ids = tokenizer(prompt, truncation=True,
                                 max_length=self.max_prompt_tokens).input_ids
            if len(kept_ids) < self.max_prompt_tokens:
                return 0
            kept = tokenizer.decode(kept_ids, skip_special_tokens=True)
        return max(0, len(prompt.split()) - len(kept.split()))

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
        step_callback: StepCallback | None = None,
        loras: tuple[LoraUse, ...] = (),
    ) -> PipelineOutput:
        """One image per prompt; prompts[i] is sampled with generators[i]."""
        if len(negative_prompts) != len(prompts) or len(generators) != len(prompts):
            raise ValueError("prompts, negative_prompts and generators must have the same length")
        ignored = [self.check_prompt(p) for p in prompts]
        if self.family.adapters:
            self._use_adapters(loras)
        arguments: dict[str, Any] = {
            **self.family.call_options,
            "prompt": prompts,
            "generator": generators,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "output_type": "pil",
            "callback_on_step_end": _on_step_end(step_callback),
        }
        if self.family.negative_prompt:
            arguments["negative_prompt"] = [p or "" for p in negative_prompts]
        if self.family.max_sequence_length is not None:
            arguments["max_sequence_length"] = self.family.max_sequence_length
        pipeline = self._pick(width, height, init_images, mask_images, strength, arguments)
        images = pipeline(**arguments).images
        return PipelineOutput(list(images), ignored)

    def _pick(self, width: int, height: int, init_images: list[Image.Image | None] | None,
              mask_images: list[Image.Image | None] | None, strength: float,
              arguments: dict[str, Any]) -> Diffusers:
        if init_images is None:
            arguments.update(width=width, height=height)
            return self.text2image
        if None in init_images:
            raise ValueError("init_images must give one image per prompt")
        arguments.update(strength=strength,
                         image=[image.convert("RGB").resize((width, height))
                                for image in init_images if image is not None])
        if mask_images is None or all(mask is None for mask in mask_images):
            if self.image2image is None:
                raise ValueError(f"the {self.family.name} family has no image-to-image")
            # Some take the output size (Flux: else its default size), others follow the image.
            if "width" in inspect.signature(self.image2image.__call__).parameters:
                arguments.update(width=width, height=height)
            return self.image2image
        if self.inpaint is None:
            raise ValueError(f"the {self.family.name} family has no inpainting")
        # No mask for an image means the whole image is repainted.
        whole = Image.new("L", (width, height), 255)
        arguments.update(width=width, height=height,
                         mask_image=[whole if mask is None else mask.convert("L")
                                     for mask in mask_images])
        return self.inpaint


def _on_step_end(step_callback: StepCallback | None) -> Callable[..., dict[str, Any]]:
    def on_step_end(pipeline: Diffusers, step: int, timestep: Any,
                    tensors: dict[str, Any]) -> dict[str, Any]:
        if step_callback is not None:
            total = int(pipeline.num_timesteps)
            if step_callback(step, total, tensors["latents"]) is False:
                raise Cancelled
        return tensors

    return on_step_end


def _clones(weights: Weights) -> Weights:
    return {key: tensor.clone() for key, tensor in weights.items()}


def _layer_shapes(pipeline: Diffusers) -> dict[str, tuple[int, int]]:
    """'component.module.path' -> (in, out) features, for every linear and conv layer."""
    shapes: dict[str, tuple[int, int]] = {}
    for component_name, component in pipeline.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        for name, module in component.named_modules():
            if isinstance(module, torch.nn.Linear):
                shapes[f"{component_name}.{name}"] = (module.in_features, module.out_features)
            elif isinstance(module, torch.nn.Conv2d):
                shapes[f"{component_name}.{name}"] = (module.in_channels, module.out_channels)
    return shapes


def load_diffusers_pipeline(path: Path, family: Family, device: torch.device,
                            dtype: torch.dtype) -> DiffusersPipeline:
    """Load from a local directory only; the hub is never asked."""
    text2image = AutoPipelineForText2Image.from_pretrained(
        path, dtype=dtype, local_files_only=True)
    if family.scheduler is not None or family.scheduler_options:
        scheduler_class = (getattr(diffusers, family.scheduler) if family.scheduler
                           else type(text2image.scheduler))
        text2image.scheduler = scheduler_class.from_config(text2image.scheduler.config,
                                                           **family.scheduler_options)
    return DiffusersPipeline(text2image, family, device, dtype)
