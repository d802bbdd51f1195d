"""Webhook delivery on its own tasks, never on a request's path.

Each subscription's deliveries go out in order, one at a time; different
subscriptions proceed side by side (at most `max_concurrent` attempts at once).
A delivery is retried on network errors, 429 and 5xx with exponential backoff
and jitter, or after the receiver's Retry-After, until `retry_seconds` have
passed since its first attempt; 410 Gone stops it for good, other answers end
it. Every attempt carries the same webhook-id, re-signed with its own
timestamp. At shutdown each delivery still pending gets one last try within
the drain time. Bodies are built by the caller and held in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from service.webhooks.addresses import AddressPolicy, WebhookRefused
from service.webhooks.signing import signed_headers

log = logging.getLogger("imagegen.webhooks")

TIMEOUT_SECONDS = 10.0
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_DELAY_SECONDS = 60.0
MAX_CONCURRENT = 32


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try, as its owner's record shows it: no body, no URL."""

    event: str
    at: float  # unix time the attempt started
    status: int | None  # the receiver's HTTP status; None when there was no answer
    error: str | None = None  # "timeout" | "network" | "refused" when there was no answer

    def view(self) -> dict[str, object]:
        return {"event": self.event, "at": self.at, "status": self.status, "error": self.error}


@dataclass(eq=False, slots=True)
class Delivery:
    webhook_id: str
    event: str  # the body's type, e.g. "job.completed"
    url: str
    body: bytes
    secret: str
    on_attempt: Callable[[Attempt], None]  # the owner's record of attempts


class DeliveryObserver(Protocol):
    """Where attempts and outcomes are counted (the service's metrics)."""

    def webhook_attempted(self, result: str) -> None: ...

    def webhook_finished(self, outcome: str) -> None: ...


@dataclass(eq=False, slots=True)
class _Outbox:
    """One subscription's deliveries, sent in order by one task."""

    pending: deque[Delivery] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


def backoff_seconds(attempt: int, first: float, cap: float) -> float:
    """Exponential with jitter: the n-th retry waits between half and all of first * 2**(n-1)."""
    ceiling = min(cap, first * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header as seconds from now: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class WebhookDeliverer:
    """Sends signed deliveries from tasks on the event loop it was started on."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        retry_seconds: float,
        observer: DeliveryObserver | None = None,
        timeout: float = TIMEOUT_SECONDS,
        first_retry: float = FIRST_RETRY_SECONDS,
        max_retry_delay: float = MAX_RETRY_DELAY_SECONDS,
        max_concurrent: int = MAX_CONCURRENT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.retry_seconds = retry_seconds
        self.observer = observer
        self.timeout = timeout
        self.first_retry = first_retry
        self.max_retry_delay = max_retry_delay
        self.clock = clock
        self._slots = asyncio.Semaphore(max_concurrent)
        self._outboxes: dict[object, _Outbox] = {}
        self._draining = asyncio.Event()
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        # No redirects (a 3xx could point anywhere), no proxies or netrc from the environment.
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                         trust_env=False)

    def send(self, subscription: object, delivery: Delivery) -> None:
        """Queue a delivery behind the subscription's earlier ones; returns at once."""
        outbox = self._outboxes.get(subscription)
        if outbox is None:
            outbox = self._outboxes[subscription] = _Outbox()
        outbox.pending.append(delivery)
        if outbox.task is None:
            outbox.task = asyncio.get_running_loop().create_task(
                self._drain_outbox(subscription, outbox))

    def in_flight(self) -> int:
        return sum(len(outbox.pending) for outbox in self._outboxes.values())

    async def stop(self, drain_seconds: float) -> None:
        """Give every pending delivery one last try within `drain_seconds`, then close."""
        self._draining.set()
        tasks = [outbox.task for outbox in self._outboxes.values() if outbox.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=drain_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _drain_outbox(self, subscription: object, outbox: _Outbox) -> None:
        try:
            while outbox.pending:
                delivery = outbox.pending[0]
                outcome = await self._deliver(delivery)
                outbox.pending.popleft()
                self._finished(outcome)
        finally:
            for _ in outbox.pending:  # canceled at the end of the drain time
                self._finished("dropped")
            del self._outboxes[subscription]

    async def _deliver(self, delivery: Delivery) -> str:
        """Try until delivered or given up; returns the outcome (a metrics label)."""
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        while True:
            attempt += 1
            last_try = self._draining.is_set()
            result, retry_after = await self._attempt(delivery)
            if result not in ("retry", "timeout", "network"):
                return result
            if last_try:
                return "dropped"
            if self._draining.is_set():
                continue  # shutdown began during this attempt: one last try now
            delay = retry_after if retry_after is not None else backoff_seconds(
                attempt, self.first_retry, self.max_retry_delay)
            if time.monotonic() + delay > deadline:
                return "expired"
            # Shutdown cuts the wait short: the next attempt is the last.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._draining.wait(), delay)

    async def _attempt(self, delivery: Delivery) -> tuple[str, float | None]:
        """One signed POST: (result, Retry-After seconds when the receiver sent one)."""
        assert self._client is not None, "start() first"
        started_at = self.clock()
        status: int | None = None
        error: str | None = None
        retry_after: str | None = None
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):
                    # Checked on every attempt, on the address the request will use.
                    target = await self.policy.resolve(delivery.url)
                    timestamp = int(self.clock())
                    headers = {
                        **signed_headers(delivery.secret, delivery.webhook_id, timestamp,
                                         delivery.body),
                        "content-type": "application/json",
                        "user-agent": "imagegen-webhooks",
                        "host": target.host_header,
                    }
                    extensions = ({"sni_hostname": target.sni_hostname}
                                  if target.sni_hostname else {})
                    request = self._client.build_request(
                        "POST", target.url, content=delivery.body, headers=headers,
                        extensions=extensions)
                    response = await self._client.send(request, stream=True)
                    # The answer's body is never read: only its status matters.
                    await response.aclose()
                    status = response.status_code
                    retry_after = response.headers.get("retry-after")
            except WebhookRefused:
                error = "refused"
            except (TimeoutError, httpx.TimeoutException):
                error = "timeout"
            except (httpx.TransportError, OSError) as exc:
                error = "network"
                log.info("webhook attempt failed", extra={"error_type": type(exc).__name__})
        delivery.on_attempt(Attempt(delivery.event, started_at, status, error))
        if status is None:
            assert error is not None
            self._attempted(error)
            return ("refused" if error == "refused" else error), None
        self._attempted(f"{status // 100}xx")
        if 200 <= status < 300:
            return "delivered", None
        if status == 410:
            return "gone", None
        if status == 429 or status >= 500:
            return "retry", retry_after_seconds(retry_after, self.clock())
        return "rejected", None

    def _attempted(self, result: str) -> None:
        if self.observer is not None:
            self.observer.webhook_attempted(result)

    def _finished(self, outcome: str) -> None:
        if self.observer is not None:
            self.observer.webhook_finished(outcome)
