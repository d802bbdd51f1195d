"""Which models of one device are in its memory: a byte budget, least recently used out first.

Every model is loaded from disk once, into CPU RAM. The manager moves a
model's weights onto its device when a batch needs it, first moving the least
recently used ones back to CPU RAM (never to disk) until it fits the budget.
A batch holds the manager's lock while it runs, so nothing moves under it;
requests for a model that is being moved wait in the queue as for a busy
device. On a CPU device the move is the identity and the budget is
bookkeeping only (which models count as resident): a CPU has none unless
models.toml sets one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

import torch

from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import DeviceSpec

log = logging.getLogger("imagegen.models")

OFFLOAD_DEVICE = torch.device("cpu")
# Without a budget in models.toml: free memory at start minus this share of the
# device's total, left for activations (SDXL's VAE decodes a 1024 px batch of 8
# in tens of GB) and the allocator's cache.
DEFAULT_RESERVE_FRACTION = 0.2
MB = 1 << 20


class ModelState(StrEnum):
    RESIDENT = "resident"
    OFFLOADED = "offloaded"
    LOADING = "loading"


def _ignore(model: str, seconds: float) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ModelEvents:
    """Told of every move, for metrics; called on the thread that moved the model."""

    loaded: Callable[[str, float], None] = _ignore
    evicted: Callable[[str, float], None] = _ignore


def weight_bytes(pipeline: TextToImagePipeline) -> int:
    """Bytes of every parameter and buffer of the model, each tensor counted once."""
    seen: dict[int, int] = {}
    for component in pipeline.components().values():
        for tensor in (*component.parameters(), *component.buffers()):
            seen[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def budget_bytes(device: torch.device, spec: DeviceSpec | None) -> int | None:
    """The device's budget for model weights; None: unlimited.

    Measured only on CUDA: offloading from a CPU to CPU RAM frees nothing, and
    other devices have no portable free-memory reading.
    """
    if spec is not None and spec.memory_budget_mb is not None:
        return int(spec.memory_budget_mb * MB)
    if device.type != "cuda":
        return None
    free, total = (int(value) for value in torch.cuda.mem_get_info(device))
    if spec is not None and spec.memory_reserve_mb is not None:
        reserve = int(spec.memory_reserve_mb * MB)
    else:
        reserve = int(total * DEFAULT_RESERVE_FRACTION)
    return max(0, free - reserve)


class ModelManager:
    """The models whose home is one device; thread-safe."""

    def __init__(self, device: torch.device, pipelines: Mapping[str, TextToImagePipeline],
                 budget: int | None, events: ModelEvents | None = None) -> None:
        self.device = device
        self.budget = budget
        self.events = events or ModelEvents()
        self._pipelines = dict(pipelines)
        self.sizes = {name: weight_bytes(p) for name, p in self._pipelines.items()}
        # Least recently used first. Everything starts offloaded: `fill` brings models in.
        self._resident: OrderedDict[str, None] = OrderedDict()
        self._loading: str | None = None
        # Held while a model moves and while a batch runs on the device.
        self._lock = threading.RLock()

    @property
    def names(self) -> list[str]:
        return list(self._pipelines)

    def state(self, name: str) -> ModelState:
        if name == self._loading:
            return ModelState.LOADING
        return ModelState.RESIDENT if name in self._resident else ModelState.OFFLOADED

    def resident_bytes(self) -> int:
        return sum(self.sizes[name] for name in list(self._resident))

    def report(self) -> dict[str, object]:
        """For operators (GET /admin/stats): the budget, what is resident, each model's size."""
        return {"budget_mb": None if self.budget is None else round(self.budget / MB, 1),
                "resident_mb": round(self.resident_bytes() / MB, 1),
                "models": {name: {"state": self.state(name),
                                  "weights_mb": round(self.sizes[name] / MB, 1)}
                           for name in self._pipelines}}

    def fill(self) -> None:
        """At start: bring models in, in the order given, while they fit without evicting."""
        with self._lock:
            for name in self._pipelines:
                if self._fits(self.sizes[name]):
                    self._move_in(name)

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[None]:
        """Make `name` resident and keep it there (and everything else where it is) meanwhile."""
        with self._lock:
            self._make_resident(name)
            yield

    def load(self, name: str) -> None:
        with self._lock:
            self._make_resident(name)

    def offload(self, name: str) -> None:
        with self._lock:
            if name in self._resident:
                self._move_out(name)

    def _fits(self, size: int) -> bool:
        return self.budget is None or self.resident_bytes() + size <= self.budget

    def _make_resident(self, name: str) -> None:
        if name in self._resident:
            self._resident.move_to_end(name)
            return
        size = self.sizes[name]
        while self._resident and not self._fits(size):
            self._move_out(next(iter(self._resident)))
        if not self._fits(size):
            # Alone on the device it may still run; the budget is a plan, not a wall.
            log.warning("model larger than its device's budget", extra={"fields": {
                "model": name, "size_mb": size // MB, "budget_mb": (self.budget or 0) // MB}})
        self._move_in(name)

    def _move_in(self, name: str) -> None:
        pipeline = self._pipelines[name]
        self._loading = name
        started = time.perf_counter()
        try:
            pipeline.to(self.device)
            self._synchronize()
        except BaseException:
            self._loading = None
            pipeline.to(OFFLOAD_DEVICE)  # a half-moved model goes back whole
            raise
        self._resident[name] = None
        self._loading = None
        self.events.loaded(name, time.perf_counter() - started)

    def _move_out(self, name: str) -> None:
        started = time.perf_counter()
        self._pipelines[name].to(OFFLOAD_DEVICE)
        self._synchronize()
        del self._resident[name]
        self.events.evicted(name, time.perf_counter() - started)

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
