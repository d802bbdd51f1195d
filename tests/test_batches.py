"""Bulk generation: many requests in one call, encrypted while held, gone after retention."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import secrets
import string
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from imagegen.pipelines.base import Cancelled, PipelineOutput, TextToImagePipeline
from service.bulk.files import default_batch_dir, prepare_batch_dir
from service.bulk.runner import BulkRunner
from service.bulk.state import Batch
from service.settings import Settings, SettingsError
from tests.helpers import ADMIN_TOKEN, CANARY, FakeClock, free_port, make_settings, running_app
from web.request_log import JsonLineFormatter

TINY = {"width": 32, "height": 32, "num_inference_steps": 2}
PROMPTS = ("a red circle", "a blue square", "a green triangle")
ENDED = ("completed", "failed", "canceled")
JSONL = {"content-type": "application/jsonl"}


def line(number: int, prompt: str = "a red circle", **body: Any) -> dict[str, Any]:
    return {"custom_id": f"req-{number:03d}",
            "body": {"prompt": prompt, "seed": 1000 + number, **TINY, **body}}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in lines)


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    # A long sweep interval: the tests sweep by hand, on their own clock.
    return make_settings(store="disk", store_dir=tmp_path / "store",
                         batch_dir=tmp_path / "batches", sweep_interval=3600, **changes)


def runner_of(client: httpx.AsyncClient) -> BulkRunner:
    runner = client.app.state.services.bulk  # type: ignore[attr-defined]
    assert isinstance(runner, BulkRunner)
    return runner


def batch_of(client: httpx.AsyncClient, batch_id: str) -> Batch:
    return runner_of(client).batches[batch_id]


async def submit(client: httpx.AsyncClient, lines: list[Any]) -> dict[str, Any]:
    response = await client.post("/v1/batches", content=jsonl(lines), headers=JSONL)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def wait_until_ended(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120  # a guard against hanging, not a timing assertion
    while time.monotonic() < deadline:
        status = (await client.get(f"/v1/batches/{batch_id}")).json()
        if status["status"] in ENDED:
            return dict(status)
        await asyncio.sleep(0.02)
    raise AssertionError("the batch did not end")


async def output_of(client: httpx.AsyncClient, batch_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/batches/{batch_id}/output")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jsonl")
    assert response.headers["cache-control"] == "no-store"
    return [json.loads(text) for text in response.text.splitlines()]


async def image_at(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.get(urlsplit(url).path)


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


class Gate:
    """Holds pipeline calls from the `hold_from`-th on until released: a batch mid-line."""

    def __init__(self, hold_from: int = 1) -> None:
        self.hold_from = hold_from
        self.calls = 0
        self.held = threading.Event()
        self.released = threading.Event()

    def wrap(self, name: str, pipeline: TextToImagePipeline) -> TextToImagePipeline:
        return GatedPipeline(pipeline, self)

    async def wait_held(self) -> None:
        # In a thread: the batch runner needs this event loop to reach the device.
        assert await asyncio.to_thread(self.held.wait, 60), "no pipeline call arrived"


class WrappedPipeline:
    def __init__(self, inner: TextToImagePipeline) -> None:
        self.inner = inner
        self.device = inner.device
        self.dtype = inner.dtype

    def check_prompt(self, prompt: str) -> int:
        return self.inner.check_prompt(prompt)


class GatedPipeline(WrappedPipeline):
    def __init__(self, inner: TextToImagePipeline, gate: Gate) -> None:
        super().__init__(inner)
        self.gate = gate

    def __call__(self, prompts: list[str], **kwargs: Any) -> PipelineOutput:
        self.gate.calls += 1
        if self.gate.calls >= self.gate.hold_from:
            self.gate.held.set()
            self.gate.released.wait(60)
        return self.inner(prompts, **kwargs)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Gate, FakeClock]]:
    gate, clock = Gate(), FakeClock()
    async with running_app(settings_for(tmp_path), clock=clock,
                           wrap_pipeline=gate.wrap) as client:
        try:
            yield client, gate, clock
        finally:
            gate.released.set()  # before shutdown, which waits for the device


def files_under(*roots: Path, since: float = 0.0) -> list[Path]:
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                try:
                    if path.is_file() and not path.is_symlink() and path.stat().st_mtime >= since:
                        found.append(path)
                except OSError:
                    continue  # removed while we walked
    return found


def holding(paths: list[Path], needle: bytes) -> list[Path]:
    hits = []
    for path in paths:
        try:
            if needle in path.read_bytes():
                hits.append(path)
        except OSError:
            continue  # another process's file, or gone
    return hits


async def test_fifty_lines_end_to_end(tmp_path: Path) -> None:
    lines = [line(i, PROMPTS[i % 3]) for i in range(1, 51)]
    async with running_app(settings_for(tmp_path)) as client:
        accepted = await submit(client, lines)
        assert accepted["status"] in ("queued", "running")
        assert accepted["counts"] == {"total": 50, "done": 0, "failed": 0}
        assert accepted["id"].startswith("batch_") and len(accepted["id"]) >= 38
        ended = await wait_until_ended(client, accepted["id"])
        assert ended["status"] == "completed"
        assert ended["counts"] == {"total": 50, "done": 50, "failed": 0}
        assert ended["eta_seconds"] == 0.0
        assert ended["started_at"] is not None and ended["finished_at"] is not None
        records = await output_of(client, accepted["id"])
        assert [r["line"] for r in records] == list(range(1, 51))
        assert [r["custom_id"] for r in records] == [item["custom_id"] for item in lines]
        assert all(r["error"] is None and len(r["response"]["images"]) == 1 for r in records)
        assert [r["response"]["seed"] for r in records] == list(range(1001, 1051))

        # The same requests through the native API give the same images.
        served = {}
        for number in (1, 2, 3, 50):
            response = await image_at(client, records[number - 1]["response"]["images"][0])
            assert response.status_code == 200
            served[number] = pixels(response.content)
            native = await client.post("/v1/inference/shapes",
                                       json={**lines[number - 1]["body"], "output": "data_url"})
            assert native.status_code == 200
            assert native.json()["seed"] == 1000 + number
            data_url = native.json()["images"][0]
            assert served[number] == pixels(base64.b64decode(data_url.split(",", 1)[1]))
        assert len(set(served.values())) == 4  # each URL serves its own line's image

        # The input is gone once the batch has run; the sealed output stays.
        assert sorted(p.suffix for p in (tmp_path / "batches").iterdir()) == [".out"]


async def test_json_array_body_is_accepted(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path)) as client:
        response = await client.post("/v1/batches", json=[line(1), line(2)])
        assert response.status_code == 202
        ended = await wait_until_ended(client, response.json()["id"])
        assert ended["counts"] == {"total": 2, "done": 2, "failed": 0}


async def test_bad_lines_are_rejected_by_number(tmp_path: Path) -> None:
    secret = f"a red circle {CANARY}"
    lines = [
        json.dumps(line(1, secret)),
        json.dumps({"custom_id": "b", "body": {**TINY}}),
        json.dumps(line(3, secret)),
        json.dumps(line(4, secret, width=33)),
        '{"custom_id": "oops", "body": ',
        json.dumps({**line(6, secret), "custom_id": "req-001"}),
        json.dumps(line(7, secret, model="no-such-model")),
        json.dumps(line(8, f"nothing drawable {CANARY}")),
        json.dumps(line(9, secret, init_image="aGVsbG8=")),
        json.dumps({**line(10, secret), "extra": 1}),
    ]
    async with running_app(settings_for(tmp_path)) as client:
        response = await client.post("/v1/batches", content="\n".join(lines), headers=JSONL)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_lines" and error["param"] == "lines"
        for expected in ("line 2 (body.prompt)", "line 4 (body.width)", "line 5 (body)",
                         "line 6 (custom_id)", "line 7 (body.model)", "line 8 (body.prompt)",
                         "line 9 (body.init_image)", "line 10 (line)"):
            assert expected in error["message"]
        assert "line 1 (" not in error["message"] and "line 3 (" not in error["message"]
        assert error["message"].startswith("8 of 10 lines are invalid")
        assert CANARY not in response.text and "req-001" not in response.text
        assert runner_of(client).batches == {}
        assert list((tmp_path / "batches").iterdir()) == []


@pytest.mark.parametrize(("body", "headers", "status", "code"), [
    (b"", JSONL, 400, "empty_batch"),
    (b"\xff\xfe", JSONL, 400, "invalid_json"),
    (b"[1, 2", {"content-type": "application/json"}, 400, "invalid_json"),
    (jsonl([line(1)]), {"content-type": "text/plain"}, 415, "unsupported_media_type"),
    (jsonl([line(i) for i in range(1001)]), JSONL, 413, "batch_too_large"),
])
async def test_malformed_bodies(tmp_path: Path, body: bytes, headers: dict[str, str],
                                status: int, code: str) -> None:
    async with running_app(settings_for(tmp_path)) as client:
        response = await client.post("/v1/batches", content=body, headers=headers)
        assert response.status_code == status
        assert response.json()["error"]["code"] == code


async def test_canary_never_on_disk_and_never_logged(
    gated: tuple[httpx.AsyncClient, Gate, FakeClock], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, gate, _ = gated
    caplog.set_level(logging.DEBUG)
    started = time.time() - 1
    # Unique to this run, so no other test's files can match it.
    canary = CANARY + "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))
    needle = canary.encode()
    lines = [{"custom_id": f"{canary}-{i}", "body": {"prompt": f"a red circle {canary}",
                                                     "seed": i, **TINY}} for i in range(5)]
    batch_id = (await submit(client, lines))["id"]
    await gate.wait_held()  # mid-batch: the input is on disk, a line is on the device
    batch_dir = tmp_path / "batches"
    assert [p.suffix for p in sorted(batch_dir.iterdir())] == [".in", ".out"]
    assert os.stat(batch_dir).st_mode & 0o777 == 0o700
    assert all(os.stat(p).st_mode & 0o777 == 0o600 for p in batch_dir.iterdir())
    assert files_under(tmp_path) and holding(files_under(tmp_path), needle) == []
    gate.released.set()
    assert (await wait_until_ended(client, batch_id))["counts"]["done"] == 5
    records = await output_of(client, batch_id)
    assert [r["custom_id"] for r in records] == [item["custom_id"] for item in lines]
    assert len(files_under(tmp_path / "store")) == 5  # the images, sealed
    assert holding(files_under(tmp_path), needle) == []
    # Nothing else this process wrote to the temp root holds it either.
    assert holding(files_under(Path(tempfile.gettempdir()), since=started), needle) == []
    # The service's log lines as they are written (the test's own HTTP client is not the service).
    written = "\n".join(JsonLineFormatter().format(record) for record in caplog.records
                        if not record.name.startswith(("httpx", "httpcore")))
    assert "batch ended" in written
    assert canary not in written and batch_id not in written


async def test_dropped_key_leaves_files_unreadable(
    gated: tuple[httpx.AsyncClient, Gate, FakeClock], tmp_path: Path,
) -> None:
    client, gate, clock = gated
    batch_id = (await submit(client, [line(i, f"a red circle {CANARY}") for i in (1, 2)]))["id"]
    await gate.wait_held()
    files = batch_of(client, batch_id).files
    sealed = files.input_path.read_bytes()
    assert CANARY.encode() in (files.read_input(1) or b"")  # readable while the key lives
    clock.tick(3600)
    assert await runner_of(client).sweep() == [batch_id]
    assert list((tmp_path / "batches").iterdir()) == []
    # Even the exact sealed bytes, put back, no longer open: the key is gone.
    files.input_path.write_bytes(sealed)
    assert files.read_input(1) is None
    files.input_path.unlink()
    assert (await client.get(f"/v1/batches/{batch_id}")).status_code == 404


async def test_tampered_and_swapped_lines_fail_alone(
    gated: tuple[httpx.AsyncClient, Gate, FakeClock],
) -> None:
    client, gate, _ = gated
    batch_id = (await submit(client, [line(i) for i in range(1, 9)]))["id"]
    await gate.wait_held()  # line 1 is on the device; lines 2..8 have not been read yet
    files = batch_of(client, batch_id).files
    data = bytearray(files.input_path.read_bytes())
    (off3, len3), (off4, len4) = files.input_spans[2], files.input_spans[3]
    assert len3 == len4
    data[off3:off3 + len3], data[off4:off4 + len4] = data[off4:off4 + len4], data[off3:off3 + len3]
    off7, len7 = files.input_spans[6]
    data[off7 + len7 // 2] ^= 0x01
    files.input_path.write_bytes(bytes(data))
    gate.released.set()

    ended = await wait_until_ended(client, batch_id)
    assert ended["status"] == "completed"
    assert ended["counts"] == {"total": 8, "done": 5, "failed": 3}
    records = await output_of(client, batch_id)
    failed = {r["line"]: r for r in records if r["error"] is not None}
    assert sorted(failed) == [3, 4, 7]
    for record in failed.values():
        assert record["error"]["code"] == "input_unreadable"
        assert "failed authentication" in record["error"]["message"]
        assert record["custom_id"] is None and record["response"] is None
    assert [r["custom_id"] for r in records if r["error"] is None] == [
        "req-001", "req-002", "req-005", "req-006", "req-008"]

    # A changed result line fails alone too.
    out = bytearray(files.output_path.read_bytes())
    _, (offset, length) = files.output_spans[1]
    out[offset + length - 1] ^= 0x01
    files.output_path.write_bytes(bytes(out))
    records = await output_of(client, batch_id)
    assert [r["error"]["code"] if r["error"] else None for r in records] == [
        None, "output_unreadable", "input_unreadable", "input_unreadable", None, None,
        "input_unreadable", None]


async def test_retention_with_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    async with running_app(settings_for(tmp_path), clock=clock) as client:
        # Operators set batch retention with the rest of the policy.
        changed = await client.put("/admin/retention", json={"batch_retention_seconds": 600},
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert changed.status_code == 200
        first = await submit(client, [line(1), line(2, ttl_seconds=100)])
        second = await submit(client, [line(3)])
        assert first["expires_at"] - first["created_at"] == 600
        await wait_until_ended(client, first["id"])
        await wait_until_ended(client, second["id"])
        records = await output_of(client, first["id"])
        url, short_url = (r["response"]["images"][0] for r in records)
        assert records[0]["response"]["expires_at"] == first["expires_at"]
        assert records[1]["response"]["expires_at"] == clock.now + 100

        clock.tick(599)
        assert (await client.get(f"/v1/batches/{first['id']}")).status_code == 200
        assert (await image_at(client, url)).status_code == 200
        assert (await image_at(client, short_url)).status_code == 404  # it asked for less

        clock.tick(1)
        for path in (f"/v1/batches/{first['id']}", f"/v1/batches/{first['id']}/output"):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "batch_not_found"
        assert (await image_at(client, url)).status_code == 404
        # Reading it dropped the first; the sweep drops the second, unread.
        assert await runner_of(client).sweep() == [second["id"]]
        assert list((tmp_path / "batches").iterdir()) == []
        assert await runner_of(client).sweep() == []


async def test_cancel_stops_between_lines(
    gated: tuple[httpx.AsyncClient, Gate, FakeClock], tmp_path: Path,
) -> None:
    client, gate, _ = gated
    running = (await submit(client, [line(i) for i in range(1, 6)]))["id"]
    queued = (await submit(client, [line(i) for i in range(1, 4)]))
    await gate.wait_held()
    assert queued["status"] == "queued"

    canceled = await client.delete(f"/v1/batches/{queued['id']}")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert not batch_of(client, queued["id"]).files.input_path.exists()

    response = await client.delete(f"/v1/batches/{running}")
    assert response.status_code == 200
    assert response.json()["status"] == "running"  # the line on the device finishes
    gate.released.set()
    ended = await wait_until_ended(client, running)
    assert ended["status"] == "canceled"
    assert ended["counts"] == {"total": 5, "done": 1, "failed": 0}
    assert [r["custom_id"] for r in await output_of(client, running)] == ["req-001"]
    assert not batch_of(client, running).files.input_path.exists()
    again = await client.delete(f"/v1/batches/{running}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "batch_ended"


async def test_status_reports_counts_timings_and_time_left(tmp_path: Path) -> None:
    gate = Gate(hold_from=3)
    async with running_app(settings_for(tmp_path), wrap_pipeline=gate.wrap) as client:
        try:
            batch_id = (await submit(client, [line(i, f"a red circle {CANARY}")
                                              for i in range(1, 5)]))["id"]
            await gate.wait_held()  # lines 1 and 2 done, line 3 on the device
            response = await client.get(f"/v1/batches/{batch_id}")
            status = response.json()
            assert set(status) == {"id", "object", "status", "counts", "created_at",
                                   "started_at", "finished_at", "expires_at", "eta_seconds"}
            assert status["status"] == "running"
            assert status["counts"] == {"total": 4, "done": 2, "failed": 0}
            assert status["eta_seconds"] > 0 and status["finished_at"] is None
            assert CANARY not in response.text and "req-" not in response.text
            unknown = await client.get("/v1/batches/batch_" + "A" * 32)
            assert unknown.status_code == 404
        finally:
            gate.released.set()


async def test_shutdown_leaves_no_batch_directory_behind() -> None:
    settings = make_settings(port=free_port())  # a directory of its own (the default)
    directory = default_batch_dir(settings)
    async with running_app(settings) as client:
        batch_id = (await submit(client, [line(1)]))["id"]
        await wait_until_ended(client, batch_id)
        assert directory.is_dir()
    assert not directory.exists()


async def test_restart_mid_batch_removes_unreadable_files(
    gated: tuple[httpx.AsyncClient, Gate, FakeClock], tmp_path: Path,
) -> None:
    old, gate, _ = gated
    batch_id = (await submit(old, [line(i, f"a red circle {CANARY}") for i in (1, 2, 3)]))["id"]
    await gate.wait_held()
    batch_dir = tmp_path / "batches"
    left_behind = sorted(batch_dir.iterdir())
    assert [p.suffix for p in left_behind] == [".in", ".out"]

    # A new process on the same directory: it has no key, and removes what it finds.
    async with running_app(settings_for(tmp_path)) as new:
        assert list(batch_dir.iterdir()) == []
        assert (await new.get(f"/v1/batches/{batch_id}")).status_code == 404
        # The old one, still finishing its line, cannot bring a file back.
        gate.released.set()
        ended = await wait_until_ended(old, batch_id)
        assert ended["status"] == "failed"
        assert list(batch_dir.iterdir()) == []


class YieldProbe:
    """Records each pipeline call's prompt and end; holds the first bulk call on its first
    step until the worker says stop (which happens only when the bulk line yields)."""

    bulk_prompt = "a red circle"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.bulk_on_device = threading.Event()

    def wrap(self, name: str, pipeline: TextToImagePipeline) -> TextToImagePipeline:
        return ProbedPipeline(pipeline, self)


class ProbedPipeline(WrappedPipeline):
    def __init__(self, inner: TextToImagePipeline, probe: YieldProbe) -> None:
        super().__init__(inner)
        self.probe = probe

    def __call__(self, prompts: list[str], **kwargs: Any) -> PipelineOutput:
        probe, step_callback = self.probe, kwargs.pop("step_callback")
        first_bulk = prompts[0] == probe.bulk_prompt and not probe.bulk_on_device.is_set()

        def on_step(step: int, total: int, latents: Any) -> bool:
            if not first_bulk:
                return bool(step_callback(step, total, latents))
            probe.bulk_on_device.set()
            deadline = time.monotonic() + 30  # a guard: without a yield the line finishes
            while step_callback(step, total, latents):
                if time.monotonic() > deadline:
                    return True
                time.sleep(0.005)
            return False

        try:
            output = self.inner(prompts, step_callback=on_step, **kwargs)
        except Cancelled:
            probe.calls.append((prompts[0], "canceled"))
            raise
        probe.calls.append((prompts[0], "finished"))
        return output


async def test_a_bulk_line_yields_the_device_to_an_interactive_request(tmp_path: Path) -> None:
    probe = YieldProbe()
    async with running_app(settings_for(tmp_path), wrap_pipeline=probe.wrap) as client:
        batch_id = (await submit(client, [line(1, probe.bulk_prompt, num_inference_steps=4),
                                          line(2, probe.bulk_prompt)]))["id"]
        assert await asyncio.to_thread(probe.bulk_on_device.wait, 60)
        interactive = await client.post("/v1/inference/shapes",
                                        json={"prompt": "a blue square", **TINY})
        assert interactive.status_code == 200
        ended = await wait_until_ended(client, batch_id)
        assert ended["counts"] == {"total": 2, "done": 2, "failed": 0}
        assert probe.calls == [(probe.bulk_prompt, "canceled"), ("a blue square", "finished"),
                               (probe.bulk_prompt, "finished"), (probe.bulk_prompt, "finished")]
        # The line that yielded ran again from its seed: the same image as the native API's.
        record = (await output_of(client, batch_id))[0]
        served = await image_at(client, record["response"]["images"][0])
        native = await client.post("/v1/inference/shapes", json={
            **line(1, probe.bulk_prompt, num_inference_steps=4)["body"], "output": "data_url"})
        assert pixels(served.content) == pixels(
            base64.b64decode(native.json()["images"][0].split(",", 1)[1]))


async def test_a_bulk_line_waits_behind_interactive_work_past_the_request_timeout(
    tmp_path: Path,
) -> None:
    gate = Gate()
    settings = settings_for(tmp_path, request_timeout=1.0)
    async with running_app(settings, wrap_pipeline=gate.wrap) as client:
        try:
            interactive = asyncio.create_task(
                client.post("/v1/inference/shapes", json={"prompt": "a blue square", **TINY}))
            await gate.wait_held()  # an interactive request holds the device
            batch_id = (await submit(client, [line(1)]))["id"]
            await asyncio.sleep(1.5)  # the line waits in the queue past the request timeout
        finally:
            gate.released.set()
        await interactive
        ended = await wait_until_ended(client, batch_id)
        assert ended["counts"] == {"total": 1, "done": 1, "failed": 0}


async def test_a_line_stuck_on_the_device_fails_alone_with_a_timeout(tmp_path: Path) -> None:
    gate = Gate()
    async with running_app(settings_for(tmp_path, request_timeout=0.5),
                           wrap_pipeline=gate.wrap) as client:
        try:
            batch_id = (await submit(client, [line(1), line(2)]))["id"]
            await gate.wait_held()
            guard = time.monotonic() + 60
            while batch_of(client, batch_id).failed == 0:  # given up after timeout + grace
                assert time.monotonic() < guard, "the stuck line was never given up"
                await asyncio.sleep(0.02)
        finally:
            gate.released.set()
        ended = await wait_until_ended(client, batch_id)
        assert ended["counts"] == {"total": 2, "done": 1, "failed": 1}
        errors = [r["error"] and r["error"]["code"] for r in await output_of(client, batch_id)]
        assert errors == ["timeout", None]


def test_start_up_removes_only_batch_files_and_refuses_a_foreign_directory(
    tmp_path: Path,
) -> None:
    batch_dir = tmp_path / "batches"
    batch_dir.mkdir(mode=0o755)
    leftovers = [batch_dir / f"{'ab' * 32}.in", batch_dir / f"{'cd' * 32}.out"]
    foreign = batch_dir / "notes.txt"
    for path in (*leftovers, foreign):
        path.write_bytes(b"x")
    prepare_batch_dir(batch_dir)
    assert sorted(batch_dir.iterdir()) == [foreign]
    assert os.stat(batch_dir).st_mode & 0o777 == 0o700

    link = tmp_path / "link"
    link.symlink_to(batch_dir)
    with pytest.raises(SettingsError, match="IMAGEGEN_BATCH_DIR"):
        prepare_batch_dir(link)
    if os.getuid() == 0:  # only root can hand a directory to someone else
        other = tmp_path / "other"
        other.mkdir()
        os.chown(other, 12345, 12345)
        with pytest.raises(SettingsError, match="IMAGEGEN_BATCH_DIR"):
            prepare_batch_dir(other)
