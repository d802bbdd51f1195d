"""The batches of this process, and the tasks that run them and end their retention.

One task feeds batch lines to the engine one at a time in the BULK lane, so
the device takes a bulk line only when no interactive request is waiting.
A bulk line on the device yields too: when a request queues behind it, the
line is canceled at its next step and queued again (same seed, same image),
so an interactive request waits for one step, not a whole line. Another task
drops batches at the end of their retention: key first, then the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from imagegen.batcher import Lane, QueueFull
from imagegen.types import GenerationRequest, GenerationResult
from service.container import Services
from service.errors import BatchExpired, failure_of
from service.generation import (
    GenerationInput,
    QueueWatch,
    deliver,
    submit,
    to_request,
    wait_on_device,
)
from web.bulk_files import BatchFiles, default_batch_dir, prepare_batch_dir, remove_batch_dir
from web.bulk_parse import LineError, validate_body
from web.bulk_state import Batch, BatchStatus, new_batch_id
from web.errors import ApiError
from web.request_log import new_request_id
from web.request_models import BatchLine

log = logging.getLogger("imagegen.bulk")

# Batches queued or running at once; each holds a file on disk until it has run.
MAX_OPEN_BATCHES = 16
QUEUE_FULL_RETRY_SECONDS = 0.5
UNREADABLE_INPUT = ("input_unreadable", "The encrypted input line failed authentication "
                    "(it was changed or moved on disk), so it was not run.")
UNREADABLE_OUTPUT = ("output_unreadable", "The encrypted result line failed authentication "
                     "(it was changed or moved on disk).")
INTERNAL = ("internal_error", "The line failed on an internal error.")

LineOutcome = tuple[dict[str, Any], bool]  # (output record, succeeded)


class BulkRunner:
    def __init__(self, services: Services, directory: Path) -> None:
        self.services = services
        self.directory = directory
        self.batches: dict[str, Batch] = {}
        self._pending: asyncio.Queue[Batch] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, services: Services) -> BulkRunner:
        """Clear what a previous process left, start the tasks, hang on services.extras."""
        settings = services.settings
        directory = settings.batch_dir or default_batch_dir(settings)
        await asyncio.to_thread(prepare_batch_dir, directory)
        runner = cls(services, directory)
        runner._tasks = [asyncio.create_task(runner._run_batches()),
                         asyncio.create_task(runner._sweep_periodically())]
        services.extras["batches"] = runner
        return runner

    async def stop(self) -> None:
        """Stop between lines, then drop every batch: none is readable after a restart."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for batch in list(self.batches.values()):
            await self._drop(batch)
        if self.services.settings.batch_dir is None:  # an operator's own directory stays
            await asyncio.to_thread(remove_batch_dir, self.directory)

    async def submit(self, lines: list[bytes], base_url: str) -> Batch:
        if sum(1 for batch in self.batches.values() if not batch.ended) >= MAX_OPEN_BATCHES:
            raise ApiError(429, "Too many batches are waiting; retry later.",
                           code="too_many_batches", error_type="rate_limit_error",
                           headers={"Retry-After": "30"})
        policy = await self.services.retention.get()
        batch_id = new_batch_id()
        files = BatchFiles(self.directory, batch_id)
        try:
            await asyncio.to_thread(files.write_inputs, lines)
        except OSError:
            await asyncio.to_thread(files.drop)
            raise ApiError(503, "The batch directory cannot be written; retry later.",
                           code="batch_storage_unavailable", error_type="server_error",
                           headers={"Retry-After": "30"}) from None
        now = self.services.clock()
        batch = Batch(id=batch_id, files=files, total=len(lines), base_url=base_url,
                      created_at=now, expires_at=now + policy.batch_retention_seconds)
        self.batches[batch_id] = batch
        self._pending.put_nowait(batch)
        return batch

    async def get(self, batch_id: str) -> Batch | None:
        """The batch, or None when unknown or past its retention (checked on every read)."""
        batch = self.batches.get(batch_id)
        if batch is None:
            return None
        if batch.expired(self.services.clock()):
            await self._drop(batch)
            return None
        return batch

    async def cancel(self, batch: Batch) -> None:
        """Stop a batch between lines; a queued one ends at once and its input goes now."""
        batch.cancel_requested = True
        if batch.status is BatchStatus.QUEUED:
            batch.finish(self.services.clock())
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

    def _gone(self, batch: Batch) -> bool:
        return self.batches.get(batch.id) is not batch

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.services.settings.sweep_interval)
            try:
                await self.sweep()
            except OSError as exc:
                # Type only; the next sweep retries (the keys are already gone).
                log.error("batch sweep failed", extra={"error_type": type(exc).__name__})

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
                await asyncio.to_thread(batch.files.remove_inputs)

    async def _run(self, batch: Batch) -> None:
        batch.status = BatchStatus.RUNNING
        batch.started_at = self.services.clock()
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
        if self._gone(batch):
            return
        batch.finish(self.services.clock())
        await asyncio.to_thread(batch.files.remove_inputs)
        _log_ended(batch)

    async def _run_line(self, batch: Batch, line: int) -> LineOutcome:
        raw = await asyncio.to_thread(batch.files.read_input, line)
        if raw is None:
            return _failure(line, None, UNREADABLE_INPUT), False
        item = BatchLine.model_validate_json(raw)  # authenticated: what this process wrote
        custom_id = item.custom_id
        try:
            gen = validate_body(self.services, item.body)
            response = await self._generate(batch, gen)
        except LineError as exc:
            return _failure(line, custom_id, ("invalid_line", exc.reason)), False
        except Exception as exc:
            failure = failure_of(exc)
            if failure is None:
                log.error("batch line failed", extra={"error_type": type(exc).__name__})
                return _failure(line, custom_id, INTERNAL), False
            return _failure(line, custom_id, (failure.code, failure.message)), False
        return {"line": line, "custom_id": custom_id, "response": response, "error": None}, True

    async def _generate(self, batch: Batch, gen: GenerationInput) -> dict[str, Any]:
        services = self.services
        result = await self._on_device(to_request(gen, new_request_id()))
        # The images die with the batch (or sooner, when the line asked for less).
        ttl = batch.expires_at - services.clock()
        if gen.ttl_seconds is not None:
            ttl = min(ttl, gen.ttl_seconds)
        if ttl <= 0:
            raise BatchExpired()
        generated = await deliver(services, gen, result, ttl, batch.base_url, 0.0)
        return {
            "images": [image.url for image in generated.images],
            "seed": generated.seed,
            "expires_at": generated.expires_at,
            "ignored_words": generated.ignored_words,
            "device_seconds": generated.usage.device_seconds,
        }

    async def _on_device(self, request: GenerationRequest) -> GenerationResult:
        """Run one line in the bulk lane: it gives way to interactive work on its device."""
        watch = QueueWatch()
        while True:
            with contextlib.suppress(QueueFull):
                ticket = submit(self.services, request, Lane.BULK, on_queue=watch)
                break
            await asyncio.sleep(QUEUE_FULL_RETRY_SECONDS)
        return await wait_on_device(self.services, ticket, watch)


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
