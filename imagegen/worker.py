"""The only code that touches a torch device: one thread per device runs batches.

It reports step progress, honours cancellation and deadlines, times the device
cost of each request, and recovers from out-of-memory by retrying once at a
smaller batch. Before a batch runs, the device's model manager brings its
model into device memory (requests wait in the queue meanwhile). At start it
warms up every compiled model at each of its sizes and batch buckets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import torch
from PIL import Image

from imagegen.batcher import Batcher, Ticket
from imagegen.model_manager import ModelManager
from imagegen.pipelines.base import Cancelled, TextToImagePipeline
from imagegen.registry import ModelSpec
from imagegen.types import GenerationResult, Progress

log = logging.getLogger("imagegen.worker")

# Previews are small on purpose: they travel in every SSE progress event.
PREVIEW_SIZE = 64


class DeviceOutOfMemory(Exception):
    """The device ran out of memory even at a smaller batch."""


class DeadlineExceeded(Exception):
    """Sampling took longer than the request's deadline."""


class PipelineFailed(Exception):
    """The pipeline raised; the original error is not carried (it may hold content)."""


class JobCanceled(Exception):
    """The caller canceled the request."""


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc)
    )


def load_failure(exc: Exception) -> Exception:
    """What a failed move of a model onto its device means to the requests waiting for it."""
    return DeviceOutOfMemory() if _is_out_of_memory(exc) else PipelineFailed()


def latents_preview(latents: torch.Tensor, index: int) -> torch.Tensor:
    """A cheap RGB look at one image's latents: first three channels, scaled to [0, 1]."""
    x = latents[index, :3].float()
    return ((x.clamp(-1, 1) + 1) / 2).cpu()


class Worker:
    """Runs batches from a Batcher on one device until stopped."""

    def __init__(
        self,
        name: str,
        batcher: Batcher,
        pipelines: Mapping[str, TextToImagePipeline],
        models: ModelManager,
        specs: Mapping[str, ModelSpec],
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.name = name
        self.batcher = batcher
        self.pipelines = pipelines
        self.models = models
        self.specs = specs
        self.on_batch = on_batch  # (images in batch, device seconds), for metrics
        self.busy_since: float | None = None
        self.warm = threading.Event()  # set once models are placed and compiled ones warmed up
        self._gave_way = False  # the running bulk batch stopped for interactive work
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"worker-{name}", daemon=True)

    def start(self) -> None:
        # Placed before the thread starts: ready at once when nothing is compiled.
        self.models.fill()
        if not self._compiled():
            self.warm.set()
        self._thread.start()

    def _compiled(self) -> list[str]:
        return [name for name in self.pipelines if self.specs[name].compile]

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued and running, then stop (SIGTERM drain)."""
        self.batcher.close()
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            for name in self._compiled():
                self._warm_up(name)
        finally:
            self.warm.set()
        self._loop()

    def _warm_up(self, name: str) -> None:
        """Compile each (size, bucket) now, so that no request waits for a compilation."""
        spec = self.specs[name]
        prompt = spec.examples[0] if spec.examples else "a photograph"
        started = time.perf_counter()
        try:
            with self.models.use(name), torch.inference_mode():
                for width, height in spec.sizes:
                    for bucket in spec.buckets():
                        self.pipelines[name](
                            [prompt] * bucket, negative_prompts=[None] * bucket,
                            generators=[self._generator(0) for _ in range(bucket)],
                            width=width, height=height, num_inference_steps=2,
                            guidance_scale=spec.default_guidance)
        except Exception as exc:
            # Its requests will fail alike, each with its own error; the rest serve.
            log.error("warm-up failed",
                      extra={"fields": {"model": name}, "error_type": type(exc).__name__})
            return
        log.info("warmed up", extra={"fields": {
            "model": name, "seconds": round(time.perf_counter() - started, 1)}})

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.models.device).manual_seed(seed)

    def _loop(self) -> None:
        while True:
            batch = self.batcher.take(timeout=0.2)
            if not batch:
                if self._stopping.is_set():
                    return
                continue
            self.busy_since = time.monotonic()
            try:
                self._run_on_device(batch)
            finally:
                self.busy_since = None

    def _run_on_device(self, batch: list[Ticket]) -> None:
        try:
            with self.models.use(batch[0].request.params.model):
                self._run_batch(batch, allow_split=True)
        except Exception as exc:  # the model could not be moved onto the device
            log.error("model load failed", extra={"error_type": type(exc).__name__})
            for ticket in batch:
                _fail(ticket, load_failure(exc))

    def _run_batch(self, batch: list[Ticket], allow_split: bool) -> None:
        batch = [t for t in batch if not self._settle_canceled(t)]
        if not batch:
            return
        self._gave_way = False
        try:
            results = self._sample(batch)
        except Cancelled:
            if self._gave_way:  # queued again; only tickets canceled meanwhile end here
                batch = self.batcher.give_way(batch)
            for ticket in batch:
                exc: Exception = DeadlineExceeded() if ticket.expired() else JobCanceled()
                _fail(ticket, exc)
            return
        except Exception as exc:
            if _is_out_of_memory(exc):
                self._recover_from_oom(batch, allow_split)
                return
            # Only the type is logged: an exception message may quote a prompt.
            log.error("pipeline failed", extra={"error_type": type(exc).__name__})
            for ticket in batch:
                _fail(ticket, PipelineFailed())
            return
        for ticket, result in zip(batch, results, strict=True):
            if not self._settle_canceled(ticket) and not ticket.future.done():
                ticket.future.set_result(result)

    def _recover_from_oom(self, batch: list[Ticket], allow_split: bool) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if allow_split and len(batch) > 1:
            half = len(batch) // 2
            log.warning("out of memory; retrying at a smaller batch",
                        extra={"batch_size": len(batch)})
            self._run_batch(batch[:half], allow_split=False)
            self._run_batch(batch[half:], allow_split=False)
            return
        for ticket in batch:
            _fail(ticket, DeviceOutOfMemory())

    @staticmethod
    def _settle_canceled(ticket: Ticket) -> bool:
        if ticket.cancel_requested:
            _fail(ticket, JobCanceled())
            return True
        return False

    def _sample(self, batch: list[Ticket]) -> list[GenerationResult]:
        params = batch[0].request.params
        pipeline = self.pipelines[params.model]
        spec = self.specs[params.model]
        prompts: list[str] = []
        negatives: list[str | None] = []
        generators: list[torch.Generator] = []
        init_images = []
        mask_images = []
        owners: list[int] = []
        for index, ticket in enumerate(batch):
            request = ticket.request
            for offset in range(request.num_images):
                prompts.append(request.prompt)
                negatives.append(request.negative_prompt)
                generators.append(self._generator(request.seed + offset))
                init_images.append(request.init_image)
                mask_images.append(request.mask_image)
                owners.append(index)
        images = len(prompts)
        if spec.compile:
            # Up to the batch size its graph was compiled for; the extra images are dropped.
            for _ in range(spec.bucket_for(images) - images):
                prompts.append(prompts[0])
                negatives.append(negatives[0])
                generators.append(self._generator(0))
                init_images.append(init_images[0])
                mask_images.append(mask_images[0])
                owners.append(-1)

        def step_callback(step: int, total: int, latents: torch.Tensor) -> bool:
            if self.batcher.should_yield(batch):
                self._gave_way = True
                return False
            now = time.monotonic()
            keep_going = False
            for index, ticket in enumerate(batch):
                if ticket.cancel_requested or ticket.expired(now):
                    continue
                keep_going = True
                if ticket.on_progress is not None:
                    request = ticket.request
                    preview = None
                    if request.want_previews:
                        preview = _to_image(latents_preview(latents, owners.index(index)),
                                            (PREVIEW_SIZE, PREVIEW_SIZE))
                    partials = []
                    if step in request.partial_image_steps:
                        size = (request.params.width, request.params.height)
                        partials = [_to_image(latents_preview(latents, i), size)
                                    for i, owner in enumerate(owners) if owner == index]
                    ticket.on_progress(Progress(step=step, total=total, preview=preview,
                                                partial_images=partials))
            return keep_going

        has_inputs = any(image is not None for image in init_images)
        started = time.perf_counter()
        with torch.inference_mode():
            output = pipeline(
                prompts,
                negative_prompts=negatives,
                generators=generators,
                width=params.width,
                height=params.height,
                num_inference_steps=params.num_inference_steps,
                guidance_scale=params.guidance_scale,
                init_images=init_images if has_inputs else None,
                mask_images=mask_images if has_inputs else None,
                strength=batch[0].request.strength,
                step_callback=step_callback,
                loras=params.loras,
            )
        if self.models.device.type == "cuda":
            torch.cuda.synchronize(self.models.device)
        elapsed = time.perf_counter() - started
        if self.on_batch is not None:
            self.on_batch(images, elapsed)
        results = []
        for index, ticket in enumerate(batch):
            mine = [i for i, owner in enumerate(owners) if owner == index]
            results.append(
                GenerationResult(
                    request_id=ticket.id,
                    images=[output.images[i] for i in mine],
                    seed=ticket.request.seed,
                    # Each request pays its share of the batch's device time.
                    device_seconds=elapsed * len(mine) / images,
                    micro_batch_size=images,
                    ignored_words=output.ignored_words[mine[0]],
                )
            )
        return results


def _fail(ticket: Ticket, exc: Exception) -> None:
    if not ticket.future.done():
        ticket.future.set_exception(exc)


def _to_image(rgb: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    # Nearest: the latents' own cells, which also compress 5x faster and 15x smaller than
    # a smooth upscale (a 256 px partial image: 6 KB of PNG in 5 ms).
    array = (rgb.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(array).resize(size, Image.Resampling.NEAREST)
