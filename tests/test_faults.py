"""Faults a CPU cannot produce on its own, injected by wrapping the real pipeline.

Out of memory, an exception, a hang, and SIGTERM with a request in flight:
each fails only what it must, answers in JSON without content, and leaves
the service serving the next request.

Run as `python -m tests.test_faults PORT` it is the server the SIGTERM test
starts: the real app under uvicorn whose pipeline waits for a line on stdin.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import torch

from imagegen.pipelines.base import PipelineOutput, TextToImagePipeline
from tests.helpers import CANARY, free_port, make_settings, running_app

PROMPT = f"a red circle on a blue background {CANARY}"
FAST = {"size": "32x32", "num_inference_steps": 2, "response_format": "b64_json"}
WAIT = 30.0  # bound on every wait for the worker thread; never reached when things work


class FaultyPipeline:
    """The real pipeline, with faults switched on and off by the test.

    `gate` (when set) holds the next call until released, so a test can queue
    requests behind it and know they form one batch.
    """

    def __init__(self, inner: TextToImagePipeline) -> None:
        self.inner = inner
        self.oom_above: int | None = None  # images per call above which the device "runs out"
        self.raise_error = False
        self.step_delay = 0.0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.calls: list[int] = []  # images per call, in order

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def hold_next_call(self) -> threading.Event:
        self.gate = threading.Event()
        self.entered.clear()
        return self.gate

    def __call__(self, prompts: list[str], **kwargs: Any) -> PipelineOutput:
        self.calls.append(len(prompts))
        gate, self.gate = self.gate, None
        self.entered.set()
        if gate is not None and not gate.wait(WAIT):
            raise AssertionError("the test never released the gate")
        if self.oom_above is not None and len(prompts) > self.oom_above:
            raise torch.OutOfMemoryError(f"CUDA out of memory while drawing {prompts[0]}")
        if self.raise_error:
            raise RuntimeError(f"the model choked on {prompts[0]}")
        if self.step_delay:
            kwargs["step_callback"] = self._slow(kwargs["step_callback"])
        return self.inner(prompts, **kwargs)

    def _slow(self, callback: Callable[[int, int, torch.Tensor], bool]
              ) -> Callable[[int, int, torch.Tensor], bool]:
        def slow_step(step: int, total: int, latents: torch.Tensor) -> bool:
            time.sleep(self.step_delay)
            return callback(step, total, latents)
        return slow_step


class Faults:
    """Passed as create_app's wrap_pipeline; keeps the wrapped pipeline for the test."""

    pipeline: FaultyPipeline

    def __call__(self, name: str, pipeline: TextToImagePipeline) -> TextToImagePipeline:
        self.pipeline = FaultyPipeline(pipeline)
        return self.pipeline  # type: ignore[return-value]


async def post(client: httpx.AsyncClient, **fields: object) -> httpx.Response:
    return await client.post("/v1/images/generations", json={"prompt": PROMPT, **FAST, **fields})


async def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def queue_depth(client: httpx.AsyncClient) -> int:
    return int(client.app.state.services.engine.queue_depth())  # type: ignore[attr-defined]


async def batch_behind_gate(client: httpx.AsyncClient, pipeline: FaultyPipeline,
                            bodies: list[dict[str, object]]) -> list[httpx.Response]:
    """Hold the worker on a first request, queue `bodies`, release: they run as batches."""
    gate = pipeline.hold_next_call()
    first = asyncio.create_task(post(client))
    await asyncio.to_thread(pipeline.entered.wait, WAIT)
    queued = [asyncio.create_task(post(client, **body)) for body in bodies]
    await wait_until(lambda: queue_depth(client) == len(bodies))
    gate.set()
    assert (await first).status_code == 200
    return list(await asyncio.gather(*queued))


def assert_json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert response.headers["x-request-id"].startswith("req_")
    assert CANARY not in response.text


async def test_out_of_memory_is_retried_once_at_a_smaller_batch() -> None:
    faults = Faults()
    async with running_app(make_settings(), wrap_pipeline=faults) as client:
        pipeline = faults.pipeline
        pipeline.oom_above = 2
        responses = await batch_behind_gate(client, pipeline, [{"seed": s} for s in range(4)])
        assert [r.status_code for r in responses] == [200] * 4
        assert pipeline.calls == [1, 4, 2, 2]
        # Each request still gets its own seed's image.
        seeds = [r.json()["seed"] for r in responses]
        assert seeds == [0, 1, 2, 3]
        assert len({r.json()["data"][0]["b64_json"] for r in responses}) == 4


async def test_out_of_memory_fails_only_its_batch_with_503_and_the_worker_keeps_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults()
    async with running_app(make_settings(), wrap_pipeline=faults) as client:
        pipeline = faults.pipeline
        pipeline.oom_above = 1
        # Four 32x32 images form one batch, still too big after one split;
        # a 64x64 request is its own batch of one and fits.
        bodies: list[dict[str, object]] = [{"seed": s} for s in range(4)]
        bodies.append({"size": "64x64"})
        with caplog.at_level(logging.DEBUG):
            *failed, other = await batch_behind_gate(client, pipeline, bodies)
        for response in failed:
            assert_json_error(response, 503, "out_of_memory")
            assert "retry-after" in response.headers
        assert len({r.headers["x-request-id"] for r in failed}) == 4
        assert other.status_code == 200
        assert pipeline.calls == [1, 4, 2, 2, 1]
        assert CANARY not in caplog.text
        pipeline.oom_above = None
        assert (await post(client)).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_pipeline_exception_is_a_500_without_content_and_the_next_request_works(
        caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults()
    async with running_app(make_settings(), wrap_pipeline=faults) as client:
        faults.pipeline.raise_error = True
        with caplog.at_level(logging.DEBUG):
            response = await post(client)
            native = await client.post("/v1/inference/shapes", json={
                "prompt": PROMPT, "width": 32, "height": 32, "num_inference_steps": 2})
        assert_json_error(response, 500, "pipeline_failed")
        assert_json_error(native, 500, "pipeline_failed")
        assert "choked" not in response.text
        assert CANARY not in caplog.text and "choked" not in caplog.text
        faults.pipeline.raise_error = False
        assert (await post(client)).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_slow_steps_hit_the_deadline_with_504() -> None:
    faults = Faults()
    async with running_app(make_settings(request_timeout=2), wrap_pipeline=faults) as client:
        faults.pipeline.step_delay = 1.0
        response = await post(client, num_inference_steps=20)
        assert_json_error(response, 504, "timeout")
        faults.pipeline.step_delay = 0.0
        assert (await post(client)).status_code == 200


async def test_a_hung_pipeline_times_out_readiness_goes_false_then_recovers() -> None:
    faults = Faults()
    async with running_app(make_settings(request_timeout=2), wrap_pipeline=faults) as client:
        pipeline = faults.pipeline
        gate = pipeline.hold_next_call()  # never steps: only the request deadline frees it
        response = await post(client)
        assert_json_error(response, 504, "timeout")
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["worker_healthy"] is False
        # A request queued behind the stuck batch waits; once the pipeline
        # comes back, it is served and readiness returns.
        behind = asyncio.create_task(post(client, seed=1))
        await wait_until(lambda: queue_depth(client) == 1)
        gate.set()
        assert (await behind).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await post(client)).status_code == 200


# --- SIGTERM against a real uvicorn process -------------------------------------------------


class StdinGatedPipeline(FaultyPipeline):
    """Says "entered" on stdout, then waits for a line on stdin before drawing."""

    def __call__(self, prompts: list[str], **kwargs: Any) -> PipelineOutput:
        print("entered", flush=True)
        sys.stdin.readline()
        return self.inner(prompts, **kwargs)


def serve(port: int) -> None:
    import uvicorn

    from web.app import create_app
    from web.request_log import configure_logging

    configure_logging("INFO")
    app = create_app(make_settings(port=port),
                     wrap_pipeline=lambda name, p: StdinGatedPipeline(p))  # type: ignore[arg-type,return-value]
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_config=None)


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


async def wait_for_server(url: str, process: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, "server exited during start-up"
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise AssertionError("server did not start")


async def test_sigterm_finishes_the_request_in_flight_and_refuses_new_connections() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.test_faults", str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={**os.environ, "OMP_NUM_THREADS": "1"})  # fast on a machine shared with others
    assert process.stdin is not None and process.stdout is not None
    try:
        await wait_for_server(url, process)
        async with httpx.AsyncClient(base_url=url, timeout=WAIT) as client:
            in_flight = asyncio.create_task(post(client))
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), WAIT)
            assert line.strip() == "entered"
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + WAIT
            while not refuses_connections(port):
                assert time.monotonic() < deadline, "still accepting after SIGTERM"
                await asyncio.sleep(0.05)
            process.stdin.write("go\n")
            process.stdin.flush()
            response = await in_flight
        assert response.status_code == 200
        assert response.json()["data"][0]["b64_json"]
        # uvicorn re-raises the signal once it has drained, so the exit status is SIGTERM's.
        _, log = await asyncio.to_thread(process.communicate, None, WAIT)
        assert process.returncode == -signal.SIGTERM
        assert "Application shutdown complete." in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
