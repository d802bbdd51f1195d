"""Helpers for the jobs and demo tests: a gate in front of the real pipeline (it fakes
timing only: every call still runs the model), a movable clock, and an SSE reader.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import torch
from starlette.applications import Starlette

from imagegen.pipelines.base import PipelineOutput, TextToImagePipeline
from tests.helpers import LiveServer

WAIT_SECONDS = 60.0


def wait_until(condition: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
    """Poll until condition() holds; fail naming `what` if it never does."""
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


async def async_wait_until(condition: Callable[[], bool], what: str,
                           seconds: float = WAIT_SECONDS) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class PipelineCall:
    batch_size: int
    num_inference_steps: int
    steps_run: int = 0


@dataclass
class Gate:
    """Holds each pipeline call at the door until let in; open by default."""

    calls: list[PipelineCall] = field(default_factory=list)
    step_delay: float = 0.0  # seconds added after each step, so a person can watch
    _held: bool = False
    _permits: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self) -> None:
        self._held = True

    def open(self) -> None:
        """Let every waiting and future call through."""
        self._held = False
        for _ in range(64):
            self._permits.release()
        self._permits = threading.Semaphore(0)

    def let_one_in(self) -> None:
        self._permits.release()

    def enter(self, call: PipelineCall) -> None:
        with self._lock:
            self.calls.append(call)
            permits = self._permits
        if self._held:
            permits.acquire()

    def reset(self) -> None:
        self.open()
        self.calls.clear()
        self.step_delay = 0.0


class GatedPipeline:
    """The real pipeline behind a Gate."""

    def __init__(self, inner: TextToImagePipeline, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate
        self.device = inner.device
        self.dtype = inner.dtype

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def check_prompt(self, prompt: str) -> int:
        return self.inner.check_prompt(prompt)

    def __call__(self, prompts: list[str], **kwargs: Any) -> PipelineOutput:
        call = PipelineCall(len(prompts), kwargs["num_inference_steps"])
        self.gate.enter(call)
        callback = kwargs.get("step_callback")

        def counting(step: int, total: int, latents: torch.Tensor) -> bool:
            call.steps_run += 1
            if self.gate.step_delay:
                time.sleep(self.gate.step_delay)
            return True if callback is None else callback(step, total, latents)

        return self.inner(prompts, **{**kwargs, "step_callback": counting})


def gated(gate: Gate) -> Callable[[str, TextToImagePipeline], TextToImagePipeline]:
    def wrap(name: str, pipeline: TextToImagePipeline) -> TextToImagePipeline:
        return GatedPipeline(pipeline, gate)  # type: ignore[return-value]

    return wrap


class OffsetClock:
    """Real time plus an offset a test can advance (expiry without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def app_of(live: LiveServer) -> Starlette:
    app: Starlette = live.server.config.app
    return app


@dataclass
class Event:
    name: str
    data: dict[str, Any]
    id: int | None


async def read_events(response: httpx.Response) -> AsyncIterator[Event]:
    """Parse a text/event-stream response into events (comments and retry lines skipped)."""
    name, data, event_id = "message", "", None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Event(name, json.loads(data), event_id)
            name, data, event_id = "message", "", None
        elif line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data += line[len("data: "):]
        elif line.startswith("id: "):
            event_id = int(line[len("id: "):])
