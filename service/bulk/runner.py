"""The batches of this service: held sealed on disk, run line by line, dropped at retention.

One task feeds lines to the engine one at a time in the bulk lane, each on
the one generation path: the device takes a bulk line only when no
interactive request waits, and a line on the device gives way (at its next
step, same seed, same image later) when one queues on its device. A line's
images live by its model's retention policy, and never past the batch's
retention. Dropping a batch wipes its key first, then removes its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagegen.batcher import Lane, QueueFull
from service.bulk.files import BatchFiles, default_batch_dir, prepare_batch_dir, remove_batch_dir
from service.bulk.state import Batch, BatchStatus, BulkLine, new_batch_id
from service.errors import (
    BatchEnded,
    BatchExpired,
    BatchNotFound,
    BatchStorageUnavailable,
    InvalidInput,
    TooManyBatches,
    failure_of,
)
from service.generation import (
    QueueWatch,
    deliver,
    new_request_id,
    submit,
    to_request,
    wait_on_device,
)
from service.tenancy import ANONYMOUS, ANONYMOUS_ID, Principal
from service.webhooks import Subscription
from store.retention import TTLRejected

if TYPE_CHECKING:
    from service.container import Services

log = logging.getLogger("imagegen.bulk")

# Batches queued or running at once; each holds a file on disk until it has run.
MAX_OPEN_BATCHES = 16
QUEUE_FULL_RETRY_SECONDS = 0.5
# Bad lines named in one error message; the count covers the rest.
MAX_LISTED_LINES = 20
UNREADABLE_INPUT = ("input_unreadable", "The encrypted input line failed authentication "
                    "(it was changed or moved on disk), so it was not run.")
UNREADABLE_OUTPUT = ("output_unreadable", "The encrypted result line failed authentication "
                     "(it was changed or moved on disk).")
INTERNAL = ("internal_error", "The line failed on an internal error.")

LineOutcome = tuple[dict[str, Any], bool]  # (output record, succeeded)


class BulkRunner:
    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.directory: Path = settings.batch_dir or default_batch_dir(settings)
        self.batches: dict[str, Batch] = {}
        self._pending: asyncio.Queue[Batch] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Clear what a previous process left, then start running batches."""
        await asyncio.to_thread(prepare_batch_dir, self.directory)
        self._task = asyncio.create_task(self._run_batches())

    async def stop(self) -> None:
        """Stop between lines, then drop every batch: none is readable after a restart."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for batch in list(self.batches.values()):
            await self._drop(batch)
        if self.services.settings.batch_dir is None:  # an operator's own directory stays
            await asyncio.to_thread(remove_batch_dir, self.directory)

    async def submit(self, lines: list[BulkLine], base_url: str,
                     webhook: Subscription | None = None,
                     owner: Principal = ANONYMOUS) -> Batch:
        """Seal the lines on disk and queue the batch of `owner`; every line's TTL is checked
        first."""
        # A canceled batch counts until its retention ends: it still holds a record and files.
        held = sum(1 for batch in self.batches.values()
                   if not batch.ended or batch.status is BatchStatus.CANCELED)
        if held >= MAX_OPEN_BATCHES:
            raise TooManyBatches()
        policy = await self.services.retention.get()
        bad = []
        for number, line in enumerate(lines, 1):
            try:
                policy.ttl_for(line.gen.model, line.gen.ttl_seconds)
            except TTLRejected as exc:
                bad.append((number, str(exc)))
        if bad:
            raise _rejected(bad, len(lines))
        batch_id = new_batch_id()
        files = BatchFiles(self.directory, batch_id)
        try:
            await asyncio.to_thread(files.write_inputs, [line.to_json() for line in lines])
        except OSError:
            await asyncio.to_thread(files.drop)
            raise BatchStorageUnavailable() from None
        now = self.services.clock()
        batch = Batch(id=batch_id, files=files, total=len(lines), base_url=base_url,
                      created_at=now, expires_at=now + policy.batch_retention_seconds,
                      webhook=webhook, owner=owner)
        self.batches[batch_id] = batch
        self._pending.put_nowait(batch)
        return batch

    async def find(self, batch_id: str, owner: str = ANONYMOUS_ID) -> Batch:
        """The owner's batch; BatchNotFound when unknown, another's (its existence is not
        revealed), or past its retention (checked on every read)."""
        batch = self.batches.get(batch_id)
        if batch is not None and batch.owner.id != owner:
            batch = None
        if batch is not None and batch.expired(self.services.clock()):
            await self._drop(batch)
            batch = None
        if batch is None:
            raise BatchNotFound()
        return batch

    async def cancel(self, batch: Batch) -> None:
        """Stop a batch between lines; a queued one ends at once and its input goes now."""
        if batch.ended:
            raise BatchEnded(f"The batch has already ended ({batch.status}).")
        batch.cancel_requested = True
        if batch.status is BatchStatus.QUEUED:
            batch.finish(self.services.clock())
            self._notify(batch, "completed")
            await asyncio.to_thread(batch.files.remove_inputs)

    async def output(self, batch: Batch) -> bytes:
        """The output file decrypted: one JSON line per line run so far."""
        records = await asyncio.to_thread(batch.files.read_outputs)
        lines = [data if data is not None else _encode(_failure(line, None, UNREADABLE_OUTPUT))
                 for line, data in records]
        return b"".join(line + b"\n" for line in lines)

    async def sweep(self, now: float | None = None) -> list[str]:
        """Drop every batch whose retention has ended at now; return their ids."""
        now = self.services.clock() if now is None else now
        expired = [batch for batch in self.batches.values() if batch.expired(now)]
        for batch in expired:
            await self._drop(batch)
        return [batch.id for batch in expired]

    async def _drop(self, batch: Batch) -> None:
        # Off the registry first: the run loop sees it is gone and writes nothing more.
        self.batches.pop(batch.id, None)
        await asyncio.to_thread(batch.files.drop)

    def _notify(self, batch: Batch, event: str) -> None:
        if batch.webhook is not None:
            self.services.webhooks.notify(batch.webhook, event, batch.notice())

    def _gone(self, batch: Batch) -> bool:
        return self.batches.get(batch.id) is not batch

    async def _run_batches(self) -> None:
        while True:
            batch = await self._pending.get()
            if batch.ended or self._gone(batch):
                continue
            try:
                await self._run(batch)
            except OSError as exc:
                if self._gone(batch):
                    continue  # dropped mid-line: nothing left to record
                log.error("batch failed", extra={"error_type": type(exc).__name__})
                batch.status = BatchStatus.FAILED
                batch.finished_at = self.services.clock()
                self._notify(batch, "completed")
                await asyncio.to_thread(batch.files.remove_inputs)

    async def _run(self, batch: Batch) -> None:
        batch.status = BatchStatus.RUNNING
        batch.started_at = self.services.clock()
        self._notify(batch, "started")
        for line in range(1, batch.total + 1):
            if batch.expired(self.services.clock()):
                await self._drop(batch)
            if batch.cancel_requested or self._gone(batch):
                break
            started = time.monotonic()
            record, succeeded = await self._run_line(batch, line)
            if self._gone(batch):
                return
            await asyncio.to_thread(batch.files.append_output, line, _encode(record))
            batch.count(succeeded, time.monotonic() - started)
            self._notify(batch, "progress")
        if self._gone(batch):
            return
        batch.finish(self.services.clock())
        self._notify(batch, "completed")
        await asyncio.to_thread(batch.files.remove_inputs)
        _log_ended(batch)

    async def _run_line(self, batch: Batch, number: int) -> LineOutcome:
        raw = await asyncio.to_thread(batch.files.read_input, number)
        if raw is None:
            return _failure(number, None, UNREADABLE_INPUT), False
        line = BulkLine.from_json(raw)
        try:
            response = await self._generate(batch, line)
        except Exception as exc:
            failure = failure_of(exc)
            if failure is None:
                log.error("batch line failed", extra={"error_type": type(exc).__name__})
                return _failure(number, line.custom_id, INTERNAL), False
            return _failure(number, line.custom_id, (failure.code, failure.message)), False
        return {"line": number, "custom_id": line.custom_id, "response": response,
                "error": None}, True

    async def _generate(self, batch: Batch, line: BulkLine) -> dict[str, Any]:
        services, gen = self.services, line.gen
        await services.tenancy.admit(batch.owner, gen.model)  # each line: scope, daily quota
        queued_at = time.monotonic()
        request = to_request(gen, new_request_id())
        watch = QueueWatch()
        while True:
            with contextlib.suppress(QueueFull):
                ticket = submit(services, request, Lane.BULK, on_queue=watch)
                break
            await asyncio.sleep(QUEUE_FULL_RETRY_SECONDS)
        result = await wait_on_device(services, ticket, watch)
        ttl = await self._line_ttl(batch, line)
        queue_seconds = max(0.0, time.monotonic() - queued_at - result.device_seconds)
        generated = await deliver(services, gen, result, ttl, batch.base_url, queue_seconds,
                                  batch.owner)
        return {
            "images": [image.url for image in generated.images],
            "seed": generated.seed,
            "expires_at": generated.expires_at,
            "ignored_words": generated.ignored_words,
            "usage": generated.usage.to_dict(),
        }

    async def _line_ttl(self, batch: Batch, line: BulkLine) -> float:
        """The model's policy as it is now (it may have shortened since submission), the
        line's own ask, and never past the batch's retention."""
        policy = await self.services.retention.get()
        ttl = min(policy.ttl_for(line.gen.model, None),
                  line.gen.ttl_seconds or float("inf"),
                  batch.expires_at - self.services.clock())
        if ttl <= 0:
            raise BatchExpired()
        return ttl


def _rejected(bad: list[tuple[int, str]], total: int) -> InvalidInput:
    listed = ", ".join(f"line {number} (body.ttl_seconds)" for number, _ in bad[:MAX_LISTED_LINES])
    more = f" and {len(bad) - MAX_LISTED_LINES} more" if len(bad) > MAX_LISTED_LINES else ""
    number, reason = bad[0]
    return InvalidInput(f"{len(bad)} of {total} lines are invalid, so nothing was queued: "
                        f"{listed}{more}. Line {number}: {reason}", "lines")


def _failure(line: int, custom_id: str | None, error: tuple[str, str]) -> dict[str, Any]:
    code, message = error
    return {"line": line, "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def _log_ended(batch: Batch) -> None:
    # Counts and timings only; the id is hashed (it is a capability).
    log.info("batch ended", extra={"fields": {
        "batch_id_hash": hashlib.sha256(batch.id.encode()).hexdigest()[:16],
        "status": str(batch.status), "total": batch.total, "done": batch.done,
        "failed": batch.failed, "line_seconds": round(batch.line_seconds, 3)}})
