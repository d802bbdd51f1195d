"""Deciding what runs next: a pure queue state, and a thin thread-safe handle around it.

Interactive requests always go before bulk ones; requests whose sampling
parameters agree are run as one pipeline call, up to the model's max batch.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum

from imagegen.types import GenerationRequest, GenerationResult, Progress


class Lane(IntEnum):
    INTERACTIVE = 0
    BULK = 1


class QueueFull(Exception):
    """No room in the queue; the caller should retry later."""


@dataclass(eq=False, slots=True)
class Ticket:
    """A request waiting for, or running on, the device."""

    request: GenerationRequest
    lane: Lane = Lane.INTERACTIVE
    deadline: float | None = None  # time.monotonic() after which sampling stops
    on_progress: Callable[[Progress], None] | None = None
    future: Future[GenerationResult] = field(default_factory=Future)
    cancel_requested: bool = False
    started: bool = False

    @property
    def id(self) -> str:
        return self.request.request_id

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (now or time.monotonic()) > self.deadline


def batch_key(request: GenerationRequest) -> tuple[object, ...]:
    """Requests with equal keys can share one pipeline call.

    An init image shortens the schedule by its strength, so image-to-image
    requests only join others with an init image and the same strength.
    """
    strength = request.strength if request.init_image is not None else None
    return (request.params, strength)


class BatchState:
    """The queue per lane; no threads, no event loop, no clock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lanes: dict[Lane, deque[Ticket]] = {lane: deque() for lane in Lane}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._lanes.values())

    def depth(self, lane: Lane) -> int:
        return len(self._lanes[lane])

    def append(self, ticket: Ticket) -> int:
        """Queue a ticket; return its 1-based position. Raise QueueFull when its lane is full."""
        queue = self._lanes[ticket.lane]
        if len(queue) >= self.capacity:
            raise QueueFull
        queue.append(ticket)
        return self.position(ticket.id) or len(self)

    def _in_order(self) -> Iterator[Ticket]:
        for lane in Lane:
            yield from self._lanes[lane]

    def position(self, ticket_id: str) -> int | None:
        """1 = runs next. None when the ticket is not queued."""
        for index, ticket in enumerate(self._in_order(), start=1):
            if ticket.id == ticket_id:
                return index
        return None

    def remove(self, ticket_id: str) -> Ticket | None:
        for queue in self._lanes.values():
            for ticket in queue:
                if ticket.id == ticket_id:
                    queue.remove(ticket)
                    return ticket
        return None

    def next_batch(self, max_images: Callable[[str], int]) -> list[Ticket]:
        """Take the oldest ticket of the first non-empty lane and every compatible one behind it.

        Compatible means an equal batch_key; the batch holds at most
        max_images(model) images. Bulk never joins an interactive batch.
        """
        queue = self._first_queue()
        if queue is None:
            return []
        batch = self._compatible(queue, max_images)
        for ticket in batch:
            queue.remove(ticket)
        return batch

    def next_batch_is_full(self, max_images: Callable[[str], int]) -> bool:
        """Whether the next batch already has max_images(model) images: more cannot join it."""
        queue = self._first_queue()
        if queue is None:
            return False
        batch = self._compatible(queue, max_images)
        limit = max_images(batch[0].request.params.model)
        return sum(ticket.request.num_images for ticket in batch) >= limit

    def _first_queue(self) -> deque[Ticket] | None:
        return next((self._lanes[lane] for lane in Lane if self._lanes[lane]), None)

    @staticmethod
    def _compatible(queue: deque[Ticket], max_images: Callable[[str], int]) -> list[Ticket]:
        head = queue[0]
        batch = [head]
        room = max_images(head.request.params.model) - head.request.num_images
        for ticket in itertools.islice(queue, 1, None):
            if room <= 0:
                break
            if batch_key(ticket.request) == batch_key(head.request) and (
                ticket.request.num_images <= room
            ):
                batch.append(ticket)
                room -= ticket.request.num_images
        return batch


class Batcher:
    """The thread-safe handle: the event loop submits, the worker thread takes."""

    def __init__(self, capacity: int, max_images: Callable[[str], int],
                 gather_seconds: float = 0.0) -> None:
        self._state = BatchState(capacity)
        self._max_images = max_images
        self.gather_seconds = gather_seconds
        self._ready = threading.Condition()
        self._closed = False

    def submit(self, ticket: Ticket) -> int:
        with self._ready:
            if self._closed:
                raise QueueFull
            position = self._state.append(ticket)
            self._ready.notify()
            return position

    def cancel_queued(self, ticket_id: str) -> Ticket | None:
        with self._ready:
            return self._state.remove(ticket_id)

    def position(self, ticket_id: str) -> int | None:
        with self._ready:
            return self._state.position(ticket_id)

    def depth(self, lane: Lane | None = None) -> int:
        with self._ready:
            return len(self._state) if lane is None else self._state.depth(lane)

    def close(self) -> None:
        """Refuse new work (draining); queued work is still handed out."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def take(self, timeout: float) -> list[Ticket]:
        """Block until a batch is ready (or timeout); called by the worker thread only.

        A request that finds the device idle runs at once. Requests that queued
        while it was busy wait up to gather_seconds more for compatible ones to
        fill their batch: clients whose results just came back resubmit within
        milliseconds, and without the wait they would run out of phase in
        batches of one (bench/batching.py, docs/performance.md).
        """
        with self._ready:
            if not len(self._state):
                self._ready.wait(timeout)
            elif self.gather_seconds > 0 and not self._closed:
                self._gather(time.monotonic() + self.gather_seconds)
            batch = self._state.next_batch(self._max_images)
            for ticket in batch:
                ticket.started = True
            return batch

    def _gather(self, deadline: float) -> None:
        while not self._state.next_batch_is_full(self._max_images):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._ready.wait(left)
