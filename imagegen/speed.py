"""A model's speed settings from models.toml, and the count of torch.compile compilations.

diffusers' measurements (SDXL, 30 steps, A100): 7.36 s fp32 -> 4.63 s bf16
-> 3.31 s SDPA -> 2.54 s compiled with channels_last -> 2.52 s fused QKV.
Regional compilation (`compile_repeated_blocks`: each repeated transformer
block class compiled once, not the whole network) reaches the same speed
with several times less compile time (the embedded model at two batch
sizes on a 2-core CPU: 38 s against 200 s). A compiled graph is specialised
to its shapes, so a compiled model runs at a few batch sizes
(`ModelSpec.buckets`; smaller batches are padded) and the worker's warm-up
compiles every (size, bucket) before the service reports ready; a
compilation after that is a recompile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch._dynamo.callback import CallbackArgs, CallbackTrigger, callback_handler

from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import ModelConfigError, ModelSpec

# Graphs per (size, bucket) a regional compile may need: its blocks come in a few
# widths and token counts (SDXL: 640 x 4096 and 1280 x 1024), and dynamo's default of
# 8 graphs per function would otherwise fall back to eager past the second bucket.
GRAPHS_PER_SHAPE = 8


def denoiser(pipeline: TextToImagePipeline) -> torch.nn.Module | None:
    """The network every step runs (UNet or transformer): what is compiled."""
    components = pipeline.components()
    return components.get("unet") or components.get("transformer")


def apply_speed_settings(spec: ModelSpec, pipeline: TextToImagePipeline) -> None:
    """Attention, fused QKV, channels_last and compile, as the spec asks; nothing runs yet."""
    network = denoiser(pipeline)
    if network is None:
        return
    _set_attention(network, spec)
    components = pipeline.components().values()
    if spec.fuse_qkv:
        for component in components:
            fuse = getattr(component, "fuse_qkv_projections", None)
            if fuse is not None:  # the UNet/transformer and the VAE have it
                fuse()
    if spec.channels_last:
        for component in components:
            if any(isinstance(m, torch.nn.Conv2d) for m in component.modules()):
                component.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if spec.lora_max_rank:  # before compiling: the graph must include the slot's layers
        from imagegen.pipelines.auto import DiffusersPipeline

        if not isinstance(pipeline, DiffusersPipeline):
            raise ModelConfigError(f"models.{spec.name}.lora_max_rank: no adapters here")
        pipeline.open_adapter_slot(spec.lora_max_rank)
    if spec.compile:
        _compile(network, spec)


def _set_attention(network: torch.nn.Module, spec: ModelSpec) -> None:
    if spec.attention == "sdpa":
        return  # diffusers' default processors call torch's scaled_dot_product_attention
    if spec.attention == "eager":
        from diffusers.models.attention_processor import AttnProcessor

        network.set_attn_processor(AttnProcessor())  # type: ignore[operator]
        return
    processors = network.attn_processors.values()  # type: ignore[operator]
    # Only processors written for diffusers' dispatcher honour a backend; the rest
    # would ignore it silently.
    if not all(hasattr(type(p), "_attention_backend") for p in processors):
        raise ModelConfigError(f"models.{spec.name}.attention: this model's attention does "
                               "not use diffusers' dispatcher; use sdpa or eager")
    network.set_attention_backend(spec.attention)  # type: ignore[operator]


def _compile(network: torch.nn.Module, spec: ModelSpec) -> None:
    shapes = len(spec.sizes) * len(spec.buckets())
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, GRAPHS_PER_SHAPE * shapes)
    # dynamic=False: one graph per bucket, specialised, rather than a slower dynamic one.
    options = {"mode": spec.compile_mode, "dynamic": False}
    if getattr(network, "_repeated_blocks", None):
        network.compile_repeated_blocks(fullgraph=True, **options)  # type: ignore[operator]
    else:
        network.compile(**options)


class CompileCounter:
    """Counts dynamo compilations in this process and tells listeners of each one.

    torch calls the hook on the thread that compiles (a worker's), once per
    compilation, nested ones included in their parent.
    """

    def __init__(self) -> None:
        self.total = 0
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        callback_handler.register_start_callback(self._compiling)

    def _compiling(self, args: CallbackArgs) -> None:
        if args.callback_trigger is not CallbackTrigger.DYNAMO:
            return
        with self._lock:
            self.total += 1
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)


compilations = CompileCounter()
