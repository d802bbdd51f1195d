"""One async job's record: status, progress, result, and the events a late client replays.

Pure state: no event loop, no threads, no clock (callers pass `now`). Each
transition returns the events it caused, for the caller to send to listeners;
a transition that changes nothing returns none. The record never holds a
prompt: the request that carries it belongs to the worker. It lives as long
as its first image (`expires_at`, as everywhere), and never shows the URL of
an image that is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from service.generation import Generated, earliest_expiry


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

    def succeeded(self, generated: Generated, now: float) -> list[JobEvent]:
        if self.status.ended:
            return []
        images = [{"url": image.url, "expires_at": image.expires_at}
                  for image in generated.images]
        self.result = {"images": images, "seed": generated.seed,
                       "usage": generated.usage.to_dict()}
        expires_at = generated.expires_at
        self._end(JobStatus.SUCCEEDED, now,
                  now + self.ttl_seconds if expires_at is None else expires_at)
        return [self._emit("succeeded", {**self.result, "expires_at": self.expires_at})]

    def shorten(self, expires_at: float) -> None:
        """An operator shortened lifetimes: the record, and its images, go by expires_at."""
        if self.expires_at is not None and self.expires_at <= expires_at:
            return
        self.ttl_seconds = min(self.ttl_seconds, max(0.0, expires_at - self.created_at))
        if self.expires_at is not None:
            self.expires_at = expires_at
            for image in self._images():
                image["expires_at"] = min(image["expires_at"], expires_at)
            self._rewrite_succeeded()

    def images_gone(self, urls: set[str]) -> None:
        """These images were deleted before their time: the record stops showing them."""
        if not urls or self.result is None:
            return
        self.result["images"] = [i for i in self._images() if i["url"] not in urls]
        left = earliest_expiry(image["expires_at"] for image in self._images())
        self.expires_at = self.expires_at if left is None else left
        self._rewrite_succeeded()

    def image_urls(self) -> list[str]:
        return [image["url"] for image in self._images()]

    def _images(self) -> list[dict[str, Any]]:
        return [] if self.result is None else list(self.result["images"])

    def _rewrite_succeeded(self) -> None:
        # A late client's replay must say what GET says, not what was once true.
        self.history = [
            JobEvent(e.seq, e.name, {**(self.result or {}), "expires_at": self.expires_at})
            if e.name == "succeeded" else e for e in self.history]

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
        # Only this record's own fields; it never holds the prompt.
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

