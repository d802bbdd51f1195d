"""Load: 200 concurrent requests against a queue of 32 on a real uvicorn process (loopback).

Every answer is 200, or 429 with Retry-After; never a 5xx. The server's
memory (its RSS, from /proc) comes back near where it was before the burst.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from bench.harness import imagegen_server, rss_bytes

CLIENTS = 200
QUEUE_SIZE = 32
BODY = {"prompt": "a red circle on a blue background", "size": "32x32",
        "num_inference_steps": 2}
# Not a timing bound: room for allocator slack and a few hundred small stored images.
RSS_MARGIN_BYTES = 96 * 1024 * 1024


@pytest.fixture
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    # One torch thread: on a machine shared with other work, one per core makes every op
    # wait for a descheduled thread, and the test crawls.
    with imagegen_server("--queue-size", str(QUEUE_SIZE), env={"OMP_NUM_THREADS": "1"}) as running:
        yield running


async def burst(url: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return list(await asyncio.gather(
            *(client.post("/v1/images/generations", json={**BODY, "seed": i})
              for i in range(count))))


async def test_200_concurrent_requests_get_200_or_429_and_memory_returns(
        server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, process = server
    await burst(url, QUEUE_SIZE)  # warm the pipeline and the allocator before the baseline
    baseline = rss_bytes(process.pid)

    responses = await burst(url, CLIENTS)

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] >= QUEUE_SIZE  # at least a queue's worth got through
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["error"]["code"] == "queue_full"
        else:
            assert response.json()["data"][0]["url"].startswith(url + "/i/")
    assert process.poll() is None
    assert (httpx.get(url + "/readyz")).status_code == 200
    after = rss_bytes(process.pid)
    print(f"\nstatuses {dict(statuses)}; RSS {baseline / 2**20:.0f} MiB -> "
          f"{after / 2**20:.0f} MiB")
    assert after - baseline < RSS_MARGIN_BYTES
