"""The loaded models, each device's worker and model manager: what the service submits to."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import torch

from imagegen.adapters import Adapter, AdapterCatalog, Weights
from imagegen.batcher import Batcher, Lane, QueueFull, Ticket
from imagegen.families import check_offered
from imagegen.model_manager import ModelEvents, ModelManager, ModelState, budget_bytes
from imagegen.pipelines.base import RequestRefused, TextToImagePipeline
from imagegen.registry import DeviceSpec, ModelSpec, resolve_device
from imagegen.speed import compilations
from imagegen.types import GenerationRequest, Progress, QueueEvent
from imagegen.worker import JobCanceled, Worker, load_failure

__all__ = ["Engine", "QueueFull"]


class Engine:
    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        pipelines: Mapping[str, TextToImagePipeline],
        queue_size: int,
        on_micro_batch: Callable[[int, float], None] | None = None,
        micro_batch_wait: float = 0.0,
        devices: Mapping[str, DeviceSpec] | None = None,
        weights: Mapping[str, TextToImagePipeline] | None = None,
        events: ModelEvents | None = None,
        on_compile: Callable[[bool], None] | None = None,
        adapters: AdapterCatalog | None = None,
    ) -> None:
        """`pipelines` are what the workers call; `weights` the same models unwrapped,
        which the model managers move (tests wrap pipelines to inject faults)."""
        self.specs = dict(specs)
        self.pipelines = dict(pipelines)
        weights = weights or pipelines
        self.on_compile = on_compile  # (after warm-up?) per dynamo compilation, for metrics
        by_device: dict[str, list[str]] = {}
        for name in self.pipelines:
            by_device.setdefault(str(resolve_device(self.specs[name])), []).append(name)
        self.adapters = adapters or AdapterCatalog(time.time)
        self._batchers: dict[str, Batcher] = {}
        self._workers: dict[str, Worker] = {}
        self._models: dict[str, ModelManager] = {}
        for device, names in by_device.items():
            home = torch.device(device)
            models = ModelManager(home, {name: weights[name] for name in names},
                                  budget_bytes(home, (devices or {}).get(device)), events)
            batcher = Batcher(queue_size, self._max_batch, micro_batch_wait)
            self._batchers[device] = batcher
            self._models[device] = models
            self._workers[device] = Worker(device, batcher,
                                           {name: self.pipelines[name] for name in names},
                                           models, self.specs, on_micro_batch)

    def _max_batch(self, model: str) -> int:
        return self.specs[model].max_batch

    def _device_of(self, model: str) -> str:
        return str(resolve_device(self.specs[model]))

    def _batcher_for(self, model: str) -> Batcher:
        return self._batchers[self._device_of(model)]

    def models_of(self, model: str) -> ModelManager:
        """The manager of the device `model` runs on."""
        return self._models[self._device_of(model)]

    def devices(self) -> dict[str, dict[str, object]]:
        """Each device's model manager report, by device name."""
        return {device: models.report() for device, models in self._models.items()}

    def model_state(self, model: str) -> ModelState:
        return self.models_of(model).state(model)

    def load_model(self, model: str) -> None:
        """Into device memory now (blocking; waits for the batch running on the device)."""
        try:
            self.models_of(model).load(model)
        except Exception as exc:
            raise load_failure(exc) from None

    def offload_model(self, model: str) -> None:
        """Out to CPU RAM now (blocking); the next request for it brings it back."""
        self.models_of(model).offload(model)

    @property
    def warm(self) -> bool:
        """Models placed and every compiled one warmed up, on every device."""
        return all(worker.warm.is_set() for worker in self._workers.values())

    def _compiled(self) -> None:
        if self.on_compile is not None:
            self.on_compile(self.warm)

    def start(self) -> None:
        compilations.subscribe(self._compiled)
        for worker in self._workers.values():
            worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        for worker in self._workers.values():
            worker.stop(timeout)
        compilations.unsubscribe(self._compiled)

    def healthy(self, stuck_after_seconds: float) -> bool:
        """Every worker thread runs, and none has been inside one batch for too long."""
        alive = all(worker.alive for worker in self._workers.values())
        return alive and self.stuck_for() <= stuck_after_seconds

    def stuck_for(self) -> float:
        """Seconds the longest-running batch has been running (0 when idle)."""
        now = time.monotonic()
        busy = [now - w.busy_since for w in self._workers.values() if w.busy_since is not None]
        return max(busy, default=0.0)

    def queue_depth(self) -> int:
        return sum(batcher.depth() for batcher in self._batchers.values())

    def submit(
        self,
        request: GenerationRequest,
        lane: Lane = Lane.INTERACTIVE,
        on_progress: Callable[[Progress], None] | None = None,
        timeout_seconds: float | None = None,
        on_queue: Callable[[QueueEvent], None] | None = None,
    ) -> Ticket:
        """Queue a request. Raises QueueFull when its device's queue is full, and
        RequestRefused when its model cannot do what it asks.

        The ticket's position and start are pushed to on_queue as they change.
        """
        spec = self.specs[request.params.model]
        check_offered(spec.name, spec.traits, request)
        if request.loras:
            uses = self.adapters.resolve(spec.name, request.loras, request.owner)
            if spec.lora_max_rank and len(uses) > 1:
                raise RequestRefused(f"Model '{spec.name}' is compiled with one adapter slot: "
                                     "one adapter per request.", "loras")
            request = dataclasses.replace(
                request, params=dataclasses.replace(request.params, loras=uses))
        ticket = Ticket(request=request, lane=lane, timeout_seconds=timeout_seconds,
                        on_progress=on_progress, on_queue=on_queue)
        self._batcher_for(request.params.model).submit(ticket)
        return ticket

    def add_adapter(self, model: str, weights: Weights, owner: str,
                    expires_at: float) -> Adapter:
        """Keep an upload for its owner until expires_at; AdapterInvalid when it does not
        fit the model. Checked against layer shapes read at load, off the worker."""
        self.pipelines[model].check_adapter(weights, model)
        return self.adapters.add_upload(model, weights, owner, expires_at)

    def cancel(self, ticket: Ticket) -> None:
        """Cancel a queued ticket at once, or a running one at its next step."""
        ticket.cancel_requested = True
        queued = self._batcher_for(ticket.request.params.model).cancel_queued(ticket.id)
        if queued is not None and not ticket.future.done():
            ticket.future.set_exception(JobCanceled())
