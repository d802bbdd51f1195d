"""Benchmark: an async job followed over SSE / the same synchronous request.

    python -m bench.jobs_vs_sync [--rounds 20] [--size 32] [--steps 8] [--previews]

One sequential client against a real uvicorn process (`imagegen serve`). Sync is
POST /v1/images/generations until the response; job is POST /v1/jobs, then its
event stream until the `succeeded` event (so it includes the job's extra request
and every progress event). The two alternate, so a noisy machine slows both alike.
Also prints the size of a preview event when asked for previews.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import httpx

from bench.harness import (
    PROMPT,
    generation_body,
    imagegen_server,
    median,
    service_call,
    use_threads,
)


def job_call(client: httpx.Client, body: dict[str, Any]) -> tuple[float, list[int]]:
    """Seconds until the `succeeded` event, and the byte size of each progress event's data."""
    started = time.perf_counter()
    created = client.post("/v1/jobs", json=body)
    created.raise_for_status()
    sizes: list[int] = []
    event = ""
    with client.stream("GET", created.json()["events_url"]) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                if event == "progress":
                    sizes.append(len(line) - len("data: "))
                elif event in ("failed", "canceled"):
                    raise RuntimeError(f"job {event}: {json.loads(line[6:])}")
                elif event == "succeeded":
                    return time.perf_counter() - started, sizes
    raise RuntimeError("the stream ended without an end event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--previews", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    args = parser.parse_args()
    env = use_threads(args.threads)
    sync_body = generation_body(args.size, args.size, args.steps, 3.0)
    job_body = {"prompt": PROMPT, "width": args.size, "height": args.size,
                "num_inference_steps": args.steps, "guidance_scale": 3.0,
                "previews": args.previews}
    sync: list[float] = []
    jobs: list[float] = []
    sizes: list[int] = []
    with imagegen_server(env=env) as (url, _), httpx.Client(base_url=url, timeout=600) as client:
        for _ in range(args.warmup):
            service_call(client, sync_body)
            job_call(client, job_body)
        for index in range(args.rounds):
            sync.append(service_call(client, {**sync_body, "seed": index}))
            seconds, event_sizes = job_call(client, {**job_body, "seed": index})
            jobs.append(seconds)
            sizes.extend(event_sizes)
    print(f"embedded model, {args.size}x{args.size}, {args.steps} steps, {args.rounds} rounds, "
          f"one sequential client, previews {'on' if args.previews else 'off'}")
    print(f"sync request     median {median(sync) * 1000:8.1f} ms")
    print(f"job + SSE        median {median(jobs) * 1000:8.1f} ms")
    print(f"job / sync       {median(jobs) / median(sync):.3f}")
    print(f"progress event   median {median(sizes):.0f} bytes of data, max {max(sizes)}")


if __name__ == "__main__":
    main()
