"""Deciding what runs next: a pure queue state, and a thin thread-safe handle around it.

Interactive requests always go before bulk ones; requests whose sampling
parameters agree run as one pipeline call (a micro-batch), up to the model's
limit. A bulk micro-batch on the device gives way when interactive work queues
on its device: the worker asks at each step, and the queue takes the bulk
tickets back in front of their lane (same seeds, so the same images later).
The queue pushes each ticket's position changes and starts to its listener as
they happen; nobody polls it.
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

from imagegen.types import (
    GenerationRequest,
    GenerationResult,
    Progress,
    Queued,
    QueueEvent,
    Started,
)

# A bulk ticket gives way at most this often, then runs to the end: every one makes progress.
MAX_YIELDS = 8


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
    # Interactive: from submission, queueing included. Bulk: time on the device, from each start.
    timeout_seconds: float | None = None
    on_progress: Callable[[Progress], None] | None = None
    # Called with each QueueEvent, under the queue's lock: it must only hand the event on.
    on_queue: Callable[[QueueEvent], None] | None = None
    future: Future[GenerationResult] = field(default_factory=Future)
    deadline: float | None = None  # time.monotonic() after which sampling stops
    cancel_requested: bool = False
    started: bool = False
    position: int | None = None  # the last position announced; None once started
    yields: int = 0  # times it gave the device way to interactive work

    def __post_init__(self) -> None:
        if self.lane is Lane.INTERACTIVE and self.timeout_seconds:
            self.deadline = time.monotonic() + self.timeout_seconds

    @property
    def id(self) -> str:
        return self.request.request_id

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (now or time.monotonic()) > self.deadline

    def start(self, now: float) -> None:
        self.started = True
        self.position = None
        if self.lane is Lane.BULK and self.timeout_seconds:
            self.deadline = now + self.timeout_seconds
        self._tell(Started())

    def requeued(self) -> None:
        self.started = False
        self.deadline = None
        self.yields += 1

    def moved_to(self, position: int) -> None:
        if position != self.position:
            self.position = position
            self._tell(Queued(position))

    def _tell(self, event: QueueEvent) -> None:
        if self.on_queue is not None:
            self.on_queue(event)


def micro_batch_key(request: GenerationRequest) -> tuple[object, ...]:
    """Requests with equal keys can share one pipeline call.

    An init image shortens the schedule by its strength, so image-to-image
    requests only join others with an init image and the same strength.
    """
    strength = request.strength if request.init_image is not None else None
    return (request.params, strength)


class QueueState:
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

    def push_front(self, tickets: list[Ticket]) -> None:
        """Put tickets taken from the queue back at the head of their lane, in their order."""
        for ticket in reversed(tickets):
            self._lanes[ticket.lane].appendleft(ticket)

    def in_order(self) -> Iterator[Ticket]:
        for lane in Lane:
            yield from self._lanes[lane]

    def position(self, ticket_id: str) -> int | None:
        """1 = runs next. None when the ticket is not queued."""
        for index, ticket in enumerate(self.in_order(), start=1):
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

    def next_micro_batch(self, max_images: Callable[[str], int]) -> list[Ticket]:
        """Take the oldest ticket of the first non-empty lane and every compatible one behind it.

        Compatible means an equal micro_batch_key; the micro-batch holds at
        most max_images(model) images. Bulk never joins an interactive one.
        """
        queue = self._first_queue()
        if queue is None:
            return []
        micro_batch = self._compatible(queue, max_images)
        for ticket in micro_batch:
            queue.remove(ticket)
        return micro_batch

    def next_micro_batch_is_full(self, max_images: Callable[[str], int]) -> bool:
        """Whether the next micro-batch already has max_images(model) images."""
        queue = self._first_queue()
        if queue is None:
            return False
        micro_batch = self._compatible(queue, max_images)
        limit = max_images(micro_batch[0].request.params.model)
        return sum(ticket.request.num_images for ticket in micro_batch) >= limit

    def _first_queue(self) -> deque[Ticket] | None:
        return next((self._lanes[lane] for lane in Lane if self._lanes[lane]), None)

    @staticmethod
    def _compatible(queue: deque[Ticket], max_images: Callable[[str], int]) -> list[Ticket]:
        head = queue[0]
        micro_batch = [head]
        room = max_images(head.request.params.model) - head.request.num_images
        for ticket in itertools.islice(queue, 1, None):
            if room <= 0:
                break
            if micro_batch_key(ticket.request) == micro_batch_key(head.request) and (
                ticket.request.num_images <= room
            ):
                micro_batch.append(ticket)
                room -= ticket.request.num_images
        return micro_batch


class Batcher:
    """The thread-safe handle of one device's queue: the event loop submits, the worker takes."""

    def __init__(self, capacity: int, max_images: Callable[[str], int],
                 gather_seconds: float = 0.0) -> None:
        self._state = QueueState(capacity)
        self._max_images = max_images
        self.gather_seconds = gather_seconds
        self._ready = threading.Condition()
        self._closed = False

    def submit(self, ticket: Ticket) -> int:
        with self._ready:
            if self._closed:
                raise QueueFull
            position = self._state.append(ticket)
            self._announce_positions()
            self._ready.notify()
            return position

    def cancel_queued(self, ticket_id: str) -> Ticket | None:
        with self._ready:
            ticket = self._state.remove(ticket_id)
            if ticket is not None:
                self._announce_positions()
            return ticket

    def depth(self, lane: Lane | None = None) -> int:
        with self._ready:
            return len(self._state) if lane is None else self._state.depth(lane)

    def close(self) -> None:
        """Refuse new work (draining); queued work is still handed out."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def take(self, timeout: float) -> list[Ticket]:
        """Block until a micro-batch is ready (or timeout); called by the worker thread only.

        A request that finds the device idle runs at once. Requests that queued
        while it was busy wait up to gather_seconds more for compatible ones to
        fill their micro-batch: clients whose results just came back resubmit
        within milliseconds, and without the wait they would run out of phase
        in micro-batches of one (bench/batching.py, docs/performance.md).
        """
        with self._ready:
            if not len(self._state):
                self._ready.wait(timeout)
            elif self.gather_seconds > 0 and not self._closed:
                self._gather(time.monotonic() + self.gather_seconds)
            micro_batch = self._state.next_micro_batch(self._max_images)
            now = time.monotonic()
            for ticket in micro_batch:
                ticket.start(now)
            if micro_batch:
                self._announce_positions()
            return micro_batch

    def should_yield(self, micro_batch: list[Ticket]) -> bool:
        """Asked by the worker at each step: does this bulk micro-batch give way now?

        Only to interactive work on this same device (another device's queue
        is no reason to stop), and only while each ticket has yields left.
        """
        if micro_batch[0].lane is not Lane.BULK:
            return False
        with self._ready:
            waiting = self._state.depth(Lane.INTERACTIVE) > 0
        return waiting and all(ticket.yields < MAX_YIELDS for ticket in micro_batch)

    def give_way(self, micro_batch: list[Ticket]) -> list[Ticket]:
        """Take a bulk micro-batch that stopped for interactive work back, first in its lane.

        Returns the tickets that end instead (canceled or past their deadline meanwhile).
        """
        again = [t for t in micro_batch
                 if not (t.cancel_requested or t.expired() or t.future.done())]
        with self._ready:
            for ticket in again:
                ticket.requeued()
            self._state.push_front(again)
            self._announce_positions()
            self._ready.notify()
        return [t for t in micro_batch if t not in again]

    def _announce_positions(self) -> None:
        # Under the lock, so listeners hear the changes in the order they happened.
        for position, ticket in enumerate(self._state.in_order(), start=1):
            ticket.moved_to(position)

    def _gather(self, deadline: float) -> None:
        while not self._state.next_micro_batch_is_full(self._max_images):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._ready.wait(left)
