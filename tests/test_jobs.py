"""Async jobs through a real HTTP client against a real uvicorn: lifecycle, queue positions,
cancel (queued and running), idempotency, SSE order and replay, disconnects, expiry.

The pipeline is the real embedded model behind a Gate, which only decides when each call
may start, so the tests can hold jobs in the queue.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from service.generation import Generated, OutputImage, Usage
from service.jobs.runner import JobRunner
from service.jobs.state import JobRecord, JobStatus
from tests.helpers import LiveServer, live_server, make_settings
from tests.jobs_support import (
    Event,
    Gate,
    OffsetClock,
    app_of,
    async_wait_until,
    gated,
    read_events,
)

PROMPT = "a red circle on a blue background"
QUEUE_SIZE = 4


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate()


@pytest.fixture(scope="module")
def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture(scope="module")
def server(gate: Gate, clock: OffsetClock) -> Iterator[LiveServer]:
    settings = make_settings(ttl=600, max_ttl=3600, queue_size=QUEUE_SIZE, sweep_interval=1.0)
    with live_server(settings, clock=clock, wrap_pipeline=gated(gate)) as live:
        yield live


def registry(server: LiveServer) -> JobRunner:
    return app_of(server).state.services.jobs


@pytest.fixture
async def client(server: LiveServer, gate: Gate) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        yield http
    # Every test leaves the device idle for the next one.
    gate.open()
    jobs = registry(server)
    await async_wait_until(lambda: all(job.ticket is None for job in list(jobs.jobs.values())),
                           "every job to end")
    gate.reset()


def job_body(steps: int = 2, **extra: Any) -> dict[str, Any]:
    return {"prompt": PROMPT, "width": 32, "height": 32, "num_inference_steps": steps,
            "seed": 7, **extra}


async def post_job(client: httpx.AsyncClient, steps: int = 2, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=job_body(steps, **extra))
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


async def get_job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def wait_for_status(client: httpx.AsyncClient, job_id: str, status: str) -> dict[str, Any]:
    for _ in range(6000):
        job = await get_job(client, job_id)
        if job["status"] == status:
            return job
        assert job["status"] not in ("succeeded", "failed", "canceled"), job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job never reached {status}")


async def all_events(client: httpx.AsyncClient, job_id: str,
                     headers: dict[str, str] | None = None) -> list[Event]:
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [event async for event in read_events(response)]


async def hold_device(client: httpx.AsyncClient, gate: Gate, steps: int = 2) -> str:
    """Start a job that stays running (inside the gate) until the gate lets it in."""
    gate.hold()
    before = len(gate.calls)
    created = await post_job(client, steps)
    await async_wait_until(lambda: len(gate.calls) == before + 1, "the blocker to start")
    return str(created["id"])


async def test_lifecycle_and_replay_of_a_finished_job(client: httpx.AsyncClient,
                                                      gate: Gate) -> None:
    blocker = await hold_device(client, gate, steps=5)
    created = await post_job(client, steps=3)
    assert created["status"] == "queued"
    assert created["queue_position"] == 1
    assert created["id"].startswith("job_") and len(created["id"]) >= 36
    assert created["events_url"] == f"/v1/jobs/{created['id']}/events"
    queued = await get_job(client, created["id"])
    assert (queued["status"], queued["queue_position"], queued["result"]) == ("queued", 1, None)

    gate.open()
    done = await wait_for_status(client, created["id"], "succeeded")
    assert done["progress"] == {"step": 3, "total": 3}
    assert done["queue_position"] is None and done["error"] is None
    assert done["result"]["seed"] == 7
    [image] = done["result"]["images"]
    assert done["expires_at"] == image["expires_at"]
    fetched = await client.get(image["url"])
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")

    # A client arriving after the end still gets the whole story, ending in the result.
    events = await all_events(client, created["id"])
    assert [e.name for e in events] == ["queued", "started", "progress", "succeeded"]
    assert events[0].data == {"position": 1}
    assert events[2].data == {"step": 3, "total": 3}
    assert events[3].data["images"] == [image]
    assert [e.id for e in events] == sorted(e.id for e in events if e.id is not None)
    # Resuming after the progress event (Last-Event-ID) replays only what came later.
    resumed = await all_events(client, created["id"], {"Last-Event-ID": str(events[2].id)})
    assert [e.name for e in resumed] == ["succeeded"]
    # After the end has been seen, 204: an EventSource stops reconnecting.
    seen_all = await client.get(f"/v1/jobs/{created['id']}/events",
                                headers={"Last-Event-ID": str(events[-1].id)})
    assert seen_all.status_code == 204
    assert (await get_job(client, blocker))["status"] == "succeeded"


async def test_queue_positions_fall_as_jobs_ahead_finish(client: httpx.AsyncClient,
                                                         gate: Gate) -> None:
    await hold_device(client, gate, steps=5)
    # Different step counts keep the three from sharing one batch.
    ids = [(await post_job(client, steps))["id"] for steps in (2, 3, 4)]
    assert [(await get_job(client, i))["queue_position"] for i in ids] == [1, 2, 3]
    last = ids[-1]

    async def follow() -> list[Event]:
        return await all_events(client, last)

    follower = asyncio.create_task(follow())
    for started_so_far, expected in ((2, [None, 1, 2]), (3, [None, None, 1]),
                                     (4, [None, None, None])):
        gate.let_one_in()
        await async_wait_until(lambda n=started_so_far: len(gate.calls) == n,
                               "the next job to start")
        assert [(await get_job(client, i))["queue_position"] for i in ids] == expected
    gate.open()
    events = await follower
    names = [e.name for e in events]
    assert [e.data["position"] for e in events if e.name == "queued"] == [3, 2, 1]
    assert names[:4] == ["queued", "queued", "queued", "started"]
    steps = [e.data["step"] for e in events if e.name == "progress"]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    assert names[-1] == "succeeded" and set(names[4:-1]) == {"progress"}
    assert [call.num_inference_steps for call in gate.calls] == [5, 2, 3, 4]


async def test_cancel_a_queued_job_it_never_runs(client: httpx.AsyncClient, gate: Gate) -> None:
    blocker = await hold_device(client, gate, steps=5)
    queued = await post_job(client, steps=3)
    response = await client.delete(f"/v1/jobs/{queued['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert response.json()["cancel_requested"] is True
    gate.open()
    await wait_for_status(client, blocker, "succeeded")
    after = await post_job(client, steps=4)
    await wait_for_status(client, after["id"], "succeeded")
    # The device saw the blocker and the later job, never the canceled one.
    assert [call.num_inference_steps for call in gate.calls] == [5, 4]
    assert [e.name for e in await all_events(client, queued["id"])] == ["queued", "canceled"]
    again = await client.delete(f"/v1/jobs/{queued['id']}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_ended"


async def test_cancel_a_running_job_stops_at_the_next_step(client: httpx.AsyncClient,
                                                           gate: Gate) -> None:
    running = await hold_device(client, gate, steps=20)
    waiting = await post_job(client, steps=3)
    assert (await wait_for_status(client, running, "running"))["queue_position"] is None
    response = await client.delete(f"/v1/jobs/{running}")
    assert response.status_code == 202
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True
    gate.open()
    ended = await wait_for_status(client, running, "canceled")
    assert ended["result"] is None and ended["error"] is None
    # The pipeline ran one step of twenty, and the device went on to the next job.
    assert gate.calls[0].steps_run == 1
    await wait_for_status(client, waiting["id"], "succeeded")
    # The blocker may have been seen in the queue for an instant before the device took it.
    names = [e.name for e in await all_events(client, running)]
    assert names in (["started", "canceled"], ["queued", "started", "canceled"])
    again = await client.delete(f"/v1/jobs/{running}")
    assert again.status_code == 409
    assert (await get_job(client, running))["status"] == "canceled"


async def test_a_finished_job_cannot_be_canceled(client: httpx.AsyncClient) -> None:
    created = await post_job(client)
    before = await wait_for_status(client, created["id"], "succeeded")
    response = await client.delete(f"/v1/jobs/{created['id']}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_ended"
    assert await get_job(client, created["id"]) == before
    image = await client.get(before["result"]["images"][0]["url"])
    assert image.status_code == 200


async def test_idempotency_key(client: httpx.AsyncClient, server: LiveServer) -> None:
    body = job_body(2)
    first = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    # Same key, same JSON object (keys in another order): the same job, nothing new queued.
    count = len(registry(server).jobs)
    reordered = dict(reversed(list(body.items())))
    second = await client.post("/v1/jobs", json=reordered, headers={"Idempotency-Key": "k-1"})
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert len(registry(server).jobs) == count
    conflict = await client.post("/v1/jobs", json=job_body(3),
                                 headers={"Idempotency-Key": "k-1"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert conflict.json()["error"]["param"] == "Idempotency-Key"
    other = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-2"})
    assert other.json()["id"] != first.json()["id"]
    assert len(registry(server).jobs) == count + 1


def tasks_in_server(server: LiveServer) -> int:
    """How many asyncio tasks the server's event loop holds right now."""

    async def count() -> int:
        return len(asyncio.all_tasks())

    loop = server.server.servers[0].get_loop()
    return asyncio.run_coroutine_threadsafe(count(), loop).result(10)


async def test_sse_disconnect_cancels_nothing_and_leaks_nothing(client: httpx.AsyncClient,
                                                               gate: Gate,
                                                               server: LiveServer) -> None:
    running = await hold_device(client, gate, steps=3)
    jobs = registry(server)
    await wait_for_status(client, running, "running")
    baseline = tasks_in_server(server)
    assert jobs.subscriber_count() == 0
    for _ in range(3):
        async with client.stream("GET", f"/v1/jobs/{running}/events") as response:
            first = await anext(read_events(response))
            assert first.name in ("queued", "started")
            assert jobs.subscriber_count() == 1
    await async_wait_until(lambda: jobs.subscriber_count() == 0, "the subscriber to go")
    await async_wait_until(lambda: tasks_in_server(server) == baseline,
                           "the stream's tasks to end")
    gate.open()
    assert (await wait_for_status(client, running, "succeeded"))["cancel_requested"] is False
    assert gate.calls[-1].steps_run == 3


async def test_sync_request_disconnect_cancels_nothing_and_leaks_nothing(
        client: httpx.AsyncClient, gate: Gate, server: LiveServer) -> None:
    services = app_of(server).state.services
    baseline = tasks_in_server(server)
    stored = (await services.store.stats()).count
    gate.hold()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as leaving:
        body = {"prompt": PROMPT, "size": "32x32", "num_inference_steps": 3}
        request = asyncio.create_task(leaving.post("/v1/images/generations", json=body))
        await async_wait_until(lambda: len(gate.calls) == 1, "the request to reach the device")
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    gate.open()
    # The generation ran to its end and was stored as usual; nothing is left behind.
    await async_wait_until(lambda: tasks_in_server(server) == baseline,
                           "the request's tasks to end")
    assert gate.calls[0].steps_run == 3
    assert services.engine.queue_depth() == 0
    assert (await services.store.stats()).count == stored + 1


async def test_a_job_from_an_init_image(client: httpx.AsyncClient, gate: Gate) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    init = base64.b64encode(buffer.getvalue()).decode()
    created = await post_job(client, steps=4, init_image=init, strength=0.5)
    done = await wait_for_status(client, created["id"], "succeeded")
    # Strength 0.5 redraws half the schedule: two of the four steps.
    assert done["progress"] == {"step": 2, "total": 2}
    assert gate.calls[-1].steps_run == 2
    assert init not in str(done)


async def test_previews_when_asked_and_only_then(client: httpx.AsyncClient, gate: Gate,
                                                 server: LiveServer) -> None:
    jobs = registry(server)
    blocker = await hold_device(client, gate, steps=2)
    with_previews = await post_job(client, steps=3, previews=True)
    without = await post_job(client, steps=4)
    followers = [asyncio.create_task(all_events(client, created["id"]))
                 for created in (with_previews, without)]
    await async_wait_until(lambda: jobs.subscriber_count() == 2, "both streams to subscribe")
    gate.open()
    live_with, live_without = [await follower for follower in followers]

    previews = [e.data.get("preview") for e in live_with if e.name == "progress"]
    assert previews and all(previews)
    header, data = str(previews[-1]).split(",", 1)
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (64, 64)
    assert [e for e in live_without if "preview" in e.data] == []
    # A replay after the end carries no preview: the images themselves are there.
    replay = await all_events(client, with_previews["id"])
    assert [e.name for e in replay] == ["queued", "started", "progress", "succeeded"]
    assert "preview" not in replay[2].data
    await wait_for_status(client, blocker, "succeeded")


async def test_record_holds_no_prompt_and_expires_with_its_images(
        client: httpx.AsyncClient, server: LiveServer, clock: OffsetClock) -> None:
    secret = "a small purple diamond at the top"
    response = await client.post("/v1/jobs", json={**job_body(2), "prompt": secret,
                                                   "ttl_seconds": 30},
                                 headers={"Idempotency-Key": "expiring"})
    job_id = response.json()["id"]
    done = await wait_for_status(client, job_id, "succeeded")
    jobs = registry(server)
    held = jobs.jobs[job_id]
    assert held.ticket is None
    assert secret not in repr(held) and secret not in str(done)
    image_url = done["result"]["images"][0]["url"]
    assert done["expires_at"] - done["ended_at"] == pytest.approx(30, abs=1)

    clock.offset += 31
    try:
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
            gone = await client.get(path)
            assert gone.status_code == 404 and gone.json()["error"]["code"] == "job_not_found"
        assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 404
        assert (await client.get(image_url)).status_code == 404
        # The watcher forgets the record, and the key that named it, within one idle tick.
        await async_wait_until(lambda: job_id not in jobs.jobs, "the record to be purged")
        assert all(value[0] != job_id for value in jobs.idempotency.values())
    finally:
        clock.offset -= 31


async def test_queue_full_is_429_and_leaves_no_record(client: httpx.AsyncClient, gate: Gate,
                                                      server: LiveServer) -> None:
    await hold_device(client, gate, steps=2)
    for steps in range(3, 3 + QUEUE_SIZE):
        await post_job(client, steps)
    count = len(registry(server).jobs)
    full = await client.post("/v1/jobs", json=job_body(10))
    assert full.status_code == 429
    assert full.headers["retry-after"] == "2"
    assert full.json()["error"]["code"] == "queue_full"
    assert len(registry(server).jobs) == count


@pytest.mark.parametrize(("change", "param"), [
    ({"output": "data_url"}, "output"),
    ({"previews": "yes"}, "previews"),
    ({"width": 33}, "width"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": "zzz qqq"}, "prompt"),
])
async def test_bad_input_names_the_field(client: httpx.AsyncClient, change: dict[str, Any],
                                         param: str) -> None:
    response = await client.post("/v1/jobs", json={**job_body(), **change})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert "zzz" not in response.text


async def test_unknown_model_and_job(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/jobs", json={**job_body(), "model": "nope"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    for method, path in (("GET", "/v1/jobs/job_x"), ("DELETE", "/v1/jobs/job_x"),
                         ("GET", "/v1/jobs/job_x/events")):
        missing = await client.request(method, path)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    too_long = {"Idempotency-Key": "k" * 256}
    bad_key = await client.post("/v1/jobs", json=job_body(), headers=too_long)
    assert bad_key.status_code == 400
    assert bad_key.json()["error"]["param"] == "Idempotency-Key"


def test_record_replay_keeps_the_latest_event_of_each_kind() -> None:
    record = JobRecord(id="job_a", model="shapes", created_at=100.0, ttl_seconds=60.0)
    assert [e.name for e in record.queued(2) + record.queued(2) + record.queued(1)] == [
        "queued", "queued"]
    # A first step seen before the start is noticed starts the job too.
    assert [e.name for e in record.progressed(1, 3, "data:p1")] == ["started", "progress"]
    record.progressed(2, 3, "data:p2")
    assert [(e.name, e.data) for e in record.history] == [
        ("queued", {"position": 1}), ("started", {}),
        ("progress", {"step": 2, "total": 3, "preview": "data:p2"})]
    assert [e.seq for e in record.history] == [2, 3, 5]
    [ended] = record.canceled(now=110.0)
    assert (ended.name, ended.seq, record.expires_at) == ("canceled", 6, 170.0)
    # The end drops previews from the replay; nothing changes an ended record.
    assert record.history[2].data == {"step": 2, "total": 3}
    assert record.failed("x", "y", now=111.0) + record.progressed(3, 3, None) == []
    assert record.started() + record.queued(1) == []
    assert (record.status, record.expired(169.9), record.expired(170.0)) == (
        JobStatus.CANCELED, False, True)


def test_a_succeeded_record_expires_with_its_first_image() -> None:
    record = JobRecord(id="job_b", model="shapes", created_at=100.0, ttl_seconds=60.0)
    generated = Generated(
        request_id="req_b", seed=5, usage=Usage.of(0.123456, 1.0), queue_seconds=0.0,
        micro_batch_size=2, ignored_words=0, created=102,
        images=[OutputImage(None, "image/png", "u1", 161.0),
                OutputImage(None, "image/png", "u2", 162.0)])
    [event] = record.succeeded(generated, now=102.0)
    images = [{"url": "u1", "expires_at": 161.0}, {"url": "u2", "expires_at": 162.0}]
    assert event.data == {"images": images, "seed": 5,
                          "usage": {"device_seconds": 0.1235, "cost": 0.1235},
                          "expires_at": 161.0}
    assert record.view()["status"] == "succeeded" and record.view()["ended_at"] == 102.0
