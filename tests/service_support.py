"""The service without HTTP and without a device: a real queue whose worker is the test.

FakeEngine has the engine's interface over a real Batcher; the test takes
tickets off the queue and answers them, as cog's tests drive their runner with
a fake worker. Everything else (store, retention, encoder, metrics, the runners)
is the real thing, on a fake clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from imagegen.batcher import Batcher, Lane, Ticket
from imagegen.registry import EMBEDDED_MODEL_NAME, embedded_spec
from imagegen.types import GenerationRequest, GenerationResult, Progress, QueueEvent
from imagegen.worker import JobCanceled
from service.container import Services, assemble
from service.generation import GenerationInput
from service.metrics import Metrics
from service.settings import Settings
from tests.helpers import FakeClock

MODEL = "shapes"


class FakeEngine:
    """The engine's interface, one device, micro-batches of one: the test plays the worker."""

    def __init__(self, capacity: int = 8) -> None:
        self.batcher = Batcher(capacity, lambda model: 1)
        # The model's spec: what it costs a second (usage) comes from it.
        self.specs: dict[str, Any] = {EMBEDDED_MODEL_NAME: embedded_spec()}
        self.pipelines: dict[str, Any] = {}

    def submit(self, request: GenerationRequest, lane: Lane = Lane.INTERACTIVE,
               on_progress: Any = None, timeout_seconds: float | None = None,
               on_queue: Any = None) -> Ticket:
        ticket = Ticket(request=request, lane=lane, timeout_seconds=timeout_seconds,
                        on_progress=on_progress, on_queue=on_queue)
        self.batcher.submit(ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        ticket.cancel_requested = True
        if self.batcher.cancel_queued(ticket.id) is not None and not ticket.future.done():
            ticket.future.set_exception(JobCanceled())

    def queue_depth(self) -> int:
        return self.batcher.depth()

    def start(self) -> None:
        """No device to start."""

    def stop(self, timeout: float = 30.0) -> None:
        self.batcher.close()

    # The worker's side.
    def take(self) -> Ticket:
        [ticket] = self.batcher.take(timeout=0)
        return ticket

    @staticmethod
    def progress(ticket: Ticket, step: int, total: int) -> None:
        assert ticket.on_progress is not None
        ticket.on_progress(Progress(step=step, total=total))

    @staticmethod
    def finish(ticket: Ticket, device_seconds: float = 0.25) -> None:
        request = ticket.request
        images = [Image.new("RGB", (8, 8), (request.seed + i) % 256)
                  for i in range(request.num_images)]
        ticket.future.set_result(GenerationResult(
            request_id=request.request_id, images=images, seed=request.seed,
            device_seconds=device_seconds, micro_batch_size=request.num_images))


def make_services(tmp_path: Path, clock: FakeClock, **settings: Any) -> tuple[Services,
                                                                              FakeEngine]:
    values: dict[str, Any] = {"batch_dir": tmp_path / "batches", "sweep_interval": 3600,
                              **settings}
    engine = FakeEngine()
    services = assemble(Settings.load(environ={}, **values), clock, engine,  # type: ignore[arg-type]
                        Metrics())
    return services, engine


def gen_input(n: int = 1, seed: int = 7, ttl_seconds: int | None = None,
              response_format: str = "url") -> GenerationInput:
    return GenerationInput(model=MODEL, prompt="a red circle", negative_prompt=None, n=n,
                           width=32, height=32, steps=2, guidance=1.5, seed=seed,
                           ttl_seconds=ttl_seconds, output_format="png",
                           response_format=response_format)


class Events:
    """A QueueEvent listener that records what the queue pushed."""

    def __init__(self) -> None:
        self.seen: list[QueueEvent] = []

    def __call__(self, event: QueueEvent) -> None:
        self.seen.append(event)
