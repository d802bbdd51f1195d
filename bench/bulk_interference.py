"""How much a running batch slows interactive requests: p50 latency with and without one.

Interactive requests arrive one at a time, after seeded random pauses (so they
land anywhere within a bulk line), first on an idle service, then while a
200-line batch runs in the BULK lane (a bulk line on the device yields at its
next step to a request queued behind it). Prints figures and ratios, asserts
nothing.

    python -m bench.bulk_interference [--lines 200] [--requests 20] [--rounds 2] [--steps 20]
        [--size 64] [--pause 0.05] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

import httpx
import torch

from service.bulk.files import default_batch_dir
from service.settings import Settings
from web.app import create_app

PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow star")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=200, help="lines in the batch")
    parser.add_argument("--requests", type=int, default=20,
                        help="interactive requests per round and side")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--pause", type=float, default=0.05,
                        help="mean seconds between interactive requests")
    # One intra-op thread: on a small shared CPU more threads oversubscribe it (10x slower).
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU")
    return parser.parse_args()


async def interactive_latencies(client: httpx.AsyncClient, args: argparse.Namespace,
                                seed: int) -> list[float]:
    pauses = random.Random(seed)
    latencies = []
    for index in range(args.requests):
        await asyncio.sleep(pauses.expovariate(1 / args.pause))
        body = {"prompt": PROMPTS[index % len(PROMPTS)], "seed": index, "width": args.size,
                "height": args.size, "num_inference_steps": args.steps}
        started = time.perf_counter()
        response = await client.post("/v1/inference/shapes", json=body)
        latencies.append(time.perf_counter() - started)
        response.raise_for_status()
    return latencies


async def submit_batch(client: httpx.AsyncClient, args: argparse.Namespace) -> str:
    lines = [{"custom_id": f"line-{i}",
              "body": {"prompt": PROMPTS[i % len(PROMPTS)], "seed": 10_000 + i,
                       "width": args.size, "height": args.size,
                       "num_inference_steps": args.steps}} for i in range(args.lines)]
    body = "\n".join(json.dumps(line) for line in lines)
    response = await client.post("/v1/batches", content=body,
                                 headers={"content-type": "application/jsonl"})
    response.raise_for_status()
    return str(response.json()["id"])


async def batch_status(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    return dict((await client.get(f"/v1/batches/{batch_id}")).json())


async def with_a_batch(client: httpx.AsyncClient, args: argparse.Namespace,
                       seed: int) -> tuple[list[float], int, bool]:
    """Latencies while a fresh batch runs; lines it ran meanwhile; whether it still ran."""
    batch_id = await submit_batch(client, args)
    while (await batch_status(client, batch_id))["status"] != "running":
        await asyncio.sleep(0.01)
    latencies = await interactive_latencies(client, args, seed)
    during = await batch_status(client, batch_id)
    await client.delete(f"/v1/batches/{batch_id}")
    while (await batch_status(client, batch_id))["status"] == "running":
        await asyncio.sleep(0.01)
    counts = during["counts"]
    return latencies, counts["done"] + counts["failed"], during["status"] == "running"


async def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    settings = Settings.load(port=48123, queue_size=max(32, args.requests))
    app = create_app(settings)
    alone: list[float] = []
    with_batch: list[float] = []
    lines_run = 0
    always_running = True
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     timeout=600) as client:
            await interactive_latencies(client, args, seed=0)  # warm-up
            # Alternating rounds, so drift in a shared machine's load hits both sides.
            for round_number in range(1, args.rounds + 1):
                alone += await interactive_latencies(client, args, seed=round_number)
                latencies, lines, running = await with_a_batch(client, args, round_number)
                with_batch += latencies
                lines_run += lines
                always_running = always_running and running
    # Shutdown drops every batch, then removes the default directory (nothing left behind).
    assert not default_batch_dir(settings).exists()
    report(args, alone, with_batch, lines_run, always_running)


def report(args: argparse.Namespace, alone: list[float], with_batch: list[float],
           lines_run: int, always_running: bool) -> None:
    p50_alone, p50_batch = statistics.median(alone), statistics.median(with_batch)
    print(f"{args.rounds} rounds of {args.requests} interactive requests each way, "
          f"{args.size}x{args.size}, {args.steps} steps, mean pause {args.pause} s; "
          f"batches of {args.lines} lines, same parameters")
    print(f"interactive p50 alone:            {p50_alone * 1000:8.1f} ms")
    print(f"interactive p50 with batch:       {p50_batch * 1000:8.1f} ms")
    print(f"ratio (with batch / alone):       {p50_batch / p50_alone:8.2f}")
    print(f"interactive p90 ratio:            {_p90(with_batch) / _p90(alone):8.2f}")
    print(f"bulk lines run beside them:       {lines_run} "
          f"(batch running throughout: {always_running})")


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


if __name__ == "__main__":
    asyncio.run(run(parse_args()))
