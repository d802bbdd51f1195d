"""One async job's record: status, progress, result, and the events a late client replays.

Pure state: no event loop, no threads, no clock (callers pass `now`). Each
transition returns the events it caused, for the caller to send to listeners;
a transition that changes nothing returns none. The record never holds a
prompt: the request that carries it belongs to the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def ended(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


# The event names a stream carries; the last one is always one of the three endings.
TERMINAL_EVENTS = frozenset({"succeeded", "failed", "canceled"})


@dataclass(frozen=True, slots=True)
class JobEvent:
    seq: int  # increases per job; sent as the SSE id so a reconnecting client resumes
    name: str
    data: dict[str, Any]


@dataclass(slots=True)
class JobRecord:
    id: str
    model: str
    created_at: float
    ttl_seconds: float  # the images' TTL; the record lives as long as they do
    status: JobStatus = JobStatus.QUEUED
    queue_position: int | None = None
    step: int = 0
    total: int = 0
    cancel_requested: bool = False
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    ended_at: float | None = None
    expires_at: float | None = None  # set when the job ends
    # The replay for a late client: at most one event of each name, in the order they happened.
    history: list[JobEvent] = field(default_factory=list)
    _seq: int = 0

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def queued(self, position: int) -> list[JobEvent]:
        if self.status is not JobStatus.QUEUED or position == self.queue_position:
            return []
        self.queue_position = position
        return [self._emit("queued", {"position": position})]

    def started(self) -> list[JobEvent]:
        if self.status is not JobStatus.QUEUED:
            return []
        self.status = JobStatus.RUNNING
        self.queue_position = None
        return [self._emit("started", {})]

    def progressed(self, step: int, total: int, preview: str | None) -> list[JobEvent]:
        if self.status.ended:
            return []
        # The first step can arrive before anyone noticed the job leave the queue.
        events = self.started()
        self.step, self.total = step, total
        data: dict[str, Any] = {"step": step, "total": total}
        if preview is not None:
            data["preview"] = preview
        return [*events, self._emit("progress", data)]

    def succeeded(self, images: list[dict[str, Any]], seed: int, device_seconds: float,
                  now: float) -> list[JobEvent]:
        if self.status.ended:
            return []
        self.result = {"images": images, "seed": seed,
                       "device_seconds": round(device_seconds, 4)}
        expiries = [image["expires_at"] for image in images]
        self._end(JobStatus.SUCCEEDED, now, max(expiries, default=now + self.ttl_seconds))
        return [self._emit("succeeded", {**self.result, "expires_at": self.expires_at})]

    def failed(self, code: str, message: str, now: float) -> list[JobEvent]:
        if self.status.ended:
            return []
        self.error = {"code": code, "message": message}
        self._end(JobStatus.FAILED, now, now + self.ttl_seconds)
        return [self._emit("failed", {"error": self.error})]

    def canceled(self, now: float) -> list[JobEvent]:
        if self.status.ended:
            return []
        self._end(JobStatus.CANCELED, now, now + self.ttl_seconds)
        return [self._emit("canceled", {})]

    def view(self) -> dict[str, Any]:
        """The record as GET /v1/jobs/{id} shows it."""
        return {
            "id": self.id,
            "object": "job",
            "model": self.model,
            "status": self.status.value,
            "queue_position": self.queue_position,
            "progress": {"step": self.step, "total": self.total} if self.total else None,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "expires_at": self.expires_at,
            "result": self.result,
            "error": self.error,
        }

    def _end(self, status: JobStatus, now: float, expires_at: float) -> None:
        self.status = status
        self.queue_position = None
        self.ended_at = now
        self.expires_at = expires_at
        # The final images replace the previews; a replay need not carry them.
        self.history = [
            JobEvent(e.seq, e.name, {k: v for k, v in e.data.items() if k != "preview"})
            for e in self.history
        ]

    def _emit(self, name: str, data: dict[str, Any]) -> JobEvent:
        self._seq += 1
        event = JobEvent(self._seq, name, data)
        for index, earlier in enumerate(self.history):
            if earlier.name == name:
                self.history[index] = event
                return event
        self.history.append(event)
        return event
