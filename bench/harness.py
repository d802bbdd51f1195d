"""What the benchmarks share: a real server process, clients, the raw pipeline call, RSS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import torch

from imagegen.pipelines.base import TextToImagePipeline

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red circle on a blue background"


def use_threads(threads: int) -> dict[str, str]:
    """Give this process and the server the same torch thread count; returns the server's env.

    On a machine shared with other work, torch's default (one thread per core)
    makes each op wait for the slowest, descheduled thread: one thread is often
    many times faster. Both sides get the same count, so ratios stay fair.
    """
    torch.set_num_threads(threads)
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int | None = None) -> int:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@contextlib.contextmanager
def server(command: Sequence[str], env: dict[str, str] | None = None,
           ready_path: str = "/readyz") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `command` (which gets --port appended) and yield its base URL once it is ready.

    Its stderr (the request log) goes to a temporary file, shown if it fails to start.
    """
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, *command, "--port", str(port)], cwd=ROOT,
            env={**os.environ, "IMAGEGEN_LOG_LEVEL": "WARNING", **(env or {})},
            stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_ready(url + ready_path, process, log)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(url: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    log.seek(0)
    tail = log.read()[-3000:].decode(errors="replace")
    raise RuntimeError(f"server did not start:\n{tail}")


def imagegen_server(*args: str, env: dict[str, str] | None = None
                    ) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
    return server(["-m", "web.cli", "serve", *args], env)


def generation_body(width: int, height: int, steps: int, guidance: float,
                    model: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": PROMPT, "size": f"{width}x{height}",
                            "num_inference_steps": steps, "guidance_scale": guidance, **extra}
    if model is not None:
        body["model"] = model
    return body


def raw_call(pipeline: TextToImagePipeline, batch: int, width: int, height: int,
             steps: int, guidance: float, seed: int = 0) -> float:
    """One warm pipeline call of `batch` images, as the worker makes it; returns seconds."""
    started = time.perf_counter()
    with torch.inference_mode():
        pipeline([PROMPT] * batch, negative_prompts=[None] * batch,
                 generators=[torch.Generator(device=pipeline.device).manual_seed(seed + i)
                             for i in range(batch)],
                 width=width, height=height, num_inference_steps=steps,
                 guidance_scale=guidance)
    if pipeline.device.type == "cuda":
        torch.cuda.synchronize(pipeline.device)
    return time.perf_counter() - started


def service_call(client: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = client.post("/v1/images/generations", json=body)
    response.raise_for_status()
    return time.perf_counter() - started


@dataclass
class LoadResult:
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


async def _closed_loop(url: str, body: dict[str, Any], clients: int, requests: int
                       ) -> LoadResult:
    """`clients` clients, each sending its next request as soon as the last one returns."""
    remaining = requests
    limits = httpx.Limits(max_connections=clients)

    async def client_loop(client: httpx.AsyncClient, index: int) -> int:
        nonlocal remaining
        done = 0
        while remaining > 0:
            remaining -= 1
            response = await client.post("/v1/images/generations",
                                         json={**body, "seed": index * 100_000 + done})
            response.raise_for_status()
            done += len(response.json()["data"])
        return done

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        counts = await asyncio.gather(*(client_loop(client, i) for i in range(clients)))
        return LoadResult(sum(counts), time.perf_counter() - started)


def closed_loop(url: str, body: dict[str, Any], clients: int, requests: int) -> LoadResult:
    return asyncio.run(_closed_loop(url, body, clients, requests))


@dataclass
class BatchTotals:
    """Cumulative pipeline-call figures from a server's /metrics."""

    images: float
    calls: float
    device_seconds: float

    def __sub__(self, other: BatchTotals) -> BatchTotals:
        return BatchTotals(self.images - other.images, self.calls - other.calls,
                           self.device_seconds - other.device_seconds)

    def __add__(self, other: BatchTotals) -> BatchTotals:
        return BatchTotals(self.images + other.images, self.calls + other.calls,
                           self.device_seconds + other.device_seconds)

    @property
    def mean_batch(self) -> float:
        return self.images / self.calls if self.calls else 0.0


def batch_totals(url: str) -> BatchTotals:
    from prometheus_client.parser import text_string_to_metric_families

    values = {sample.name: sample.value
              for family in text_string_to_metric_families(httpx.get(url + "/metrics").text)
              for sample in family.samples}
    return BatchTotals(values.get("imagegen_batch_size_sum", 0.0),
                       values.get("imagegen_batch_size_count", 0.0),
                       values.get("imagegen_batch_device_seconds_sum", 0.0))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
