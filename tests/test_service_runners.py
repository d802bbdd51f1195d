"""The job and bulk runners and the one generation path, without HTTP: a real queue whose
worker is the test (tests/service_support.py), real store and retention on a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from imagegen.adapters import AdapterChoice
from imagegen.encode import encode_image
from imagegen.types import GenerationResult
from service.bulk.state import BatchStatus, BulkLine
from service.errors import IdempotencyConflict, InvalidInput, JobEnded, JobNotFound, StoreFull
from service.generation import deliver
from service.jobs.runner import IdempotencyKey, Job
from service.jobs.state import JobStatus
from service.tenancy import ANONYMOUS
from store import RetentionPolicy
from store.retention import ModelRetention
from tests.helpers import FakeClock
from tests.service_support import MODEL, gen_input, make_services

BASE = "http://service.test"
GUARD_SECONDS = 30.0  # a guard against hanging, not a timing assertion


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run (events arrive through it) until condition() holds."""
    give_up = time.monotonic() + GUARD_SECONDS
    while not condition():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def token_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1].split(".", 1)[0]


def ended(job: Job) -> Callable[[], bool]:
    return lambda: job.record.status.ended


async def test_a_job_follows_pushed_queue_events_and_ends_with_its_images_stored(
        tmp_path: Path) -> None:
    clock = FakeClock()
    services, engine = make_services(tmp_path, clock)
    jobs = services.jobs
    first = jobs.start(gen_input(seed=1), 600, BASE, "req_1")
    second = jobs.start(gen_input(n=2, seed=2), 600, BASE, "req_2")
    assert (first.record.queue_position, second.record.queue_position) == (1, 2)

    ticket = engine.take()  # the worker takes the first job; the queue says so, unasked
    await until(lambda: second.record.queue_position == 1, "the second job to move up")
    assert first.record.status is JobStatus.RUNNING
    engine.progress(ticket, step=0, total=2)
    await until(lambda: first.record.step == 1, "progress")
    engine.finish(ticket, device_seconds=0.123456)
    await until(ended(first), "the first job to end")

    record = first.record
    assert record.status is JobStatus.SUCCEEDED
    assert [e.name for e in record.history] == ["queued", "started", "progress", "succeeded"]
    assert record.result is not None
    assert record.result["usage"] == {"device_seconds": 0.1235, "cost": 0.1235}
    [image] = record.result["images"]
    assert image["expires_at"] == record.expires_at == clock.now + 600
    assert await services.store.head(token_of(image["url"])) is not None
    assert first.ticket is None  # the request, which carries the prompt, is let go

    engine.finish(engine.take())
    await until(ended(second), "the second job to end")
    assert second.record.result is not None and len(second.record.result["images"]) == 2
    assert (await services.store.stats()).count == 3

    clock.tick(600)
    with pytest.raises(JobNotFound):
        jobs.find(first.record.id)
    assert first.record.id not in jobs.jobs


async def test_a_queued_job_is_canceled_at_once_and_only_once(tmp_path: Path) -> None:
    services, engine = make_services(tmp_path, FakeClock())
    job = services.jobs.start(gen_input(), 600, BASE, "req_1")
    services.jobs.cancel(job)
    assert job.record.status is JobStatus.CANCELED
    assert engine.queue_depth() == 0
    with pytest.raises(JobEnded):
        services.jobs.cancel(job)


async def test_an_idempotency_key_replays_its_job_and_refuses_another_body(
        tmp_path: Path) -> None:
    services, _ = make_services(tmp_path, FakeClock())
    jobs = services.jobs
    job = jobs.start(gen_input(), 600, BASE, "req_1", key=IdempotencyKey("k", "body-a"))
    assert jobs.replay(IdempotencyKey("k", "body-a")) is job
    assert jobs.replay(IdempotencyKey("other", "body-a")) is None
    with pytest.raises(IdempotencyConflict):
        jobs.replay(IdempotencyKey("k", "body-b"))


async def test_shortening_a_models_lifetime_reaches_its_images_and_job_records(
        tmp_path: Path) -> None:
    clock = FakeClock()
    services, engine = make_services(tmp_path, clock, ttl=600, max_ttl=3600)
    job = services.jobs.start(gen_input(), 600, BASE, "req_1")
    engine.finish(engine.take())
    await until(ended(job), "the job to end")
    other_token, _ = await services.store.put(b"x", "image/png", 600, tag="other-model")

    current = await services.retention.get()
    policy = RetentionPolicy(current.default_ttl_seconds, current.max_ttl_seconds,
                             models={MODEL: ModelRetention(30, 30)})
    assert await services.change_retention(policy, "test", apply_to_existing=True) == 1

    assert job.record.expires_at == clock.now + 30
    assert job.record.result is not None
    [image] = job.record.result["images"]
    assert image["expires_at"] == clock.now + 30
    artifact = await services.store.head(token_of(image["url"]))
    assert artifact is not None and artifact.expires_at == clock.now + 30
    other = await services.store.head(other_token)
    assert other is not None and other.expires_at == clock.now + 600  # its model's policy
    succeeded = [e for e in job.record.history if e.name == "succeeded"]
    assert succeeded[0].data["expires_at"] == clock.now + 30

    clock.tick(30)
    with pytest.raises(JobNotFound):
        services.jobs.find(job.record.id)


async def test_a_job_record_stops_showing_an_image_deleted_early(tmp_path: Path) -> None:
    services, engine = make_services(tmp_path, FakeClock())
    job = services.jobs.start(gen_input(n=2), 600, BASE, "req_1")
    engine.finish(engine.take())
    await until(ended(job), "the job to end")
    assert job.record.result is not None
    kept, deleted = (image["url"] for image in job.record.result["images"])
    assert await services.store.delete(token_of(deleted))

    await services.jobs.refresh(job)
    shown = json.dumps(job.record.view()) + json.dumps([e.data for e in job.record.history])
    assert deleted not in shown and kept in shown


async def test_a_refused_store_leaves_nothing_stored(tmp_path: Path) -> None:
    noise = [Image.effect_noise((32, 32), 64).convert("RGB") for _ in range(2)]
    one_fits = len(encode_image(noise[0], "png")) + 16
    services, _ = make_services(tmp_path, FakeClock(), store_max_bytes=one_fits)
    result = GenerationResult("req_1", noise, seed=1, device_seconds=0.1)

    with pytest.raises(StoreFull):
        await deliver(services, gen_input(n=2), result, 600, BASE, 0.0, ANONYMOUS)
    stats = await services.store.stats()
    assert (stats.count, stats.bytes) == (0, 0)


async def test_a_job_refused_by_the_store_fails_with_store_full(tmp_path: Path) -> None:
    services, engine = make_services(tmp_path, FakeClock(), store_max_bytes=64)
    job = services.jobs.start(gen_input(n=2), 600, BASE, "req_1")
    engine.finish(engine.take())
    await until(ended(job), "the job to end")
    assert job.record.status is JobStatus.FAILED
    assert job.record.error is not None and job.record.error["code"] == "store_full"
    assert (await services.store.stats()).count == 0


async def run_batch(services, engine, lines: list[BulkLine]) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    await services.bulk.start()
    try:
        batch = await services.bulk.submit(lines, BASE)
        for _ in lines:
            await until(lambda: engine.queue_depth() > 0, "the next line to queue")
            engine.finish(engine.take())
        await until(lambda: batch.ended, "the batch to end")
        assert batch.status is BatchStatus.COMPLETED
        return [json.loads(line) for line in (await services.bulk.output(batch)).splitlines()]
    finally:
        await services.bulk.stop()


async def test_batch_lines_live_by_their_models_policy_and_report_usage(
        tmp_path: Path) -> None:
    clock = FakeClock()
    services, engine = make_services(tmp_path, clock, ttl=600, max_ttl=3600)
    current = await services.retention.get()
    await services.retention.set(RetentionPolicy(
        current.default_ttl_seconds, current.max_ttl_seconds,
        models={MODEL: ModelRetention(30, 30)}), "test")

    records = await run_batch(services, engine, [BulkLine("a", gen_input(seed=1)),
                                                 BulkLine("b", gen_input(seed=2, ttl_seconds=10))])
    assert [r["custom_id"] for r in records] == ["a", "b"]
    responses = [r["response"] for r in records]
    assert [r["expires_at"] for r in responses] == [clock.now + 30, clock.now + 10]  # type: ignore[index]
    # The synchronous response's usage, in the same shape.
    assert all(r["usage"] == {"device_seconds": 0.25, "cost": 0.25} for r in responses)  # type: ignore[index]


async def test_a_line_asking_more_than_its_models_policy_is_refused_at_submission(
        tmp_path: Path) -> None:
    services, _ = make_services(tmp_path, FakeClock(), ttl=600, max_ttl=3600)
    current = await services.retention.get()
    await services.retention.set(RetentionPolicy(
        current.default_ttl_seconds, current.max_ttl_seconds,
        models={MODEL: ModelRetention(30, 30)}), "test")
    with pytest.raises(InvalidInput) as refused:
        await services.bulk.submit([BulkLine("a", gen_input()),
                                    BulkLine("b", gen_input(ttl_seconds=60))], BASE)
    assert refused.value.param == "lines"
    assert "line 2 (body.ttl_seconds)" in refused.value.message
    assert services.bulk.batches == {}


async def test_a_lines_images_never_outlive_the_batch(tmp_path: Path) -> None:
    clock = FakeClock()
    services, engine = make_services(tmp_path, clock, ttl=600, batch_retention=20)
    [record] = await run_batch(services, engine, [BulkLine("a", gen_input())])
    assert record["response"]["expires_at"] == clock.now + 20  # type: ignore[index]


async def test_a_line_stuck_on_the_device_fails_with_a_timeout_and_the_next_runs(
        tmp_path: Path) -> None:
    services, engine = make_services(tmp_path, FakeClock(), request_timeout=0.2)
    await services.bulk.start()
    try:
        batch = await services.bulk.submit([BulkLine("stuck", gen_input(seed=1)),
                                            BulkLine("next", gen_input(seed=2))], BASE)
        await until(lambda: engine.queue_depth() == 1, "the first line to queue")
        stuck = engine.take()  # on the device, and never answered
        await until(lambda: engine.queue_depth() == 1, "the second line to queue")
        assert stuck.cancel_requested  # given up: it stops at its next step, if ever
        engine.finish(engine.take())
        await until(lambda: batch.ended, "the batch to end")
        records = [json.loads(line) for line in (await services.bulk.output(batch)).splitlines()]
        assert [r["error"] and r["error"]["code"] for r in records] == ["timeout", None]
    finally:
        await services.bulk.stop()


async def test_stopping_lets_a_job_whose_result_is_in_store_it(tmp_path: Path) -> None:
    services, engine = make_services(tmp_path, FakeClock())
    job = services.jobs.start(gen_input(), 600, BASE, "req_1")
    engine.finish(engine.take())  # the device's last result, as shutdown drains it
    await services.jobs.stop()
    assert job.record.status is JobStatus.SUCCEEDED
    assert (await services.store.stats()).count == 1


def test_a_sealed_line_reads_back_as_the_line_it_was() -> None:
    gen = dataclasses.replace(gen_input(ttl_seconds=30), negative_prompt="blue",
                              loras=(AdapterChoice("pixel", 0.5),), owner="key_1")
    line = BulkLine("a", gen)
    assert BulkLine.from_json(line.to_json()) == line
