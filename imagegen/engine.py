"""The loaded models and the worker of each device: what the service submits to."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from imagegen.batcher import Batcher, Lane, QueueFull, Ticket
from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import ModelSpec
from imagegen.types import GenerationRequest, Progress, QueueEvent
from imagegen.worker import JobCanceled, Worker

__all__ = ["Engine", "QueueFull"]


class Engine:
    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        pipelines: Mapping[str, TextToImagePipeline],
        queue_size: int,
        on_micro_batch: Callable[[int, float], None] | None = None,
        micro_batch_wait: float = 0.0,
    ) -> None:
        self.specs = dict(specs)
        self.pipelines = dict(pipelines)
        by_device: dict[str, dict[str, TextToImagePipeline]] = {}
        for name, pipeline in self.pipelines.items():
            by_device.setdefault(str(pipeline.device), {})[name] = pipeline
        self._batchers: dict[str, Batcher] = {}
        self._workers: dict[str, Worker] = {}
        for device, device_pipelines in by_device.items():
            batcher = Batcher(queue_size, self._max_batch, micro_batch_wait)
            self._batchers[device] = batcher
            self._workers[device] = Worker(device, batcher, device_pipelines, on_micro_batch)

    def _max_batch(self, model: str) -> int:
        return self.specs[model].max_batch

    def _batcher_for(self, model: str) -> Batcher:
        return self._batchers[str(self.pipelines[model].device)]

    def start(self) -> None:
        for worker in self._workers.values():
            worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        for worker in self._workers.values():
            worker.stop(timeout)

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
        """Queue a request. Raises QueueFull when its device's queue is full.

        The ticket's position and start are pushed to on_queue as they change.
        """
        ticket = Ticket(request=request, lane=lane, timeout_seconds=timeout_seconds,
                        on_progress=on_progress, on_queue=on_queue)
        self._batcher_for(request.params.model).submit(ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Cancel a queued ticket at once, or a running one at its next step."""
        ticket.cancel_requested = True
        queued = self._batcher_for(ticket.request.params.model).cancel_queued(ticket.id)
        if queued is not None and not ticket.future.done():
            ticket.future.set_exception(JobCanceled())
