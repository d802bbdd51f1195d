"""Benchmark 1: one sequential client, the embedded model: service latency / raw latency.

    python -m bench.service_vs_raw [--rounds 20] [--size 128] [--steps 20]

Raw is the pipeline called in a warm loop in this process, exactly as the
worker calls it (one image, its own generator). Service is a real uvicorn
process (`imagegen serve`) answering POST /v1/images/generations with a URL:
HTTP, queue, worker, PNG encoding and the store put included. The two are
measured alternately, so a noisy machine slows both alike. Goal: <= 1.05.
"""

from __future__ import annotations

import argparse

import httpx

from bench.harness import (
    generation_body,
    imagegen_server,
    median,
    raw_call,
    service_call,
    use_threads,
)
from imagegen.registry import embedded_spec, load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    args = parser.parse_args()
    env = use_threads(args.threads)
    spec = embedded_spec()
    pipeline = load_pipeline(spec)
    call = (args.size, args.size, args.steps, spec.default_guidance)
    body = generation_body(*call)
    raw: list[float] = []
    service: list[float] = []
    with imagegen_server(env=env) as (url, _), httpx.Client(base_url=url, timeout=600) as client:
        for _ in range(args.warmup):
            raw_call(pipeline, 1, *call)
            service_call(client, body)
        for index in range(args.rounds):
            raw.append(raw_call(pipeline, 1, *call, seed=index))
            service.append(service_call(client, {**body, "seed": index}))
    print(f"embedded model, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.rounds} rounds, one sequential client, {args.threads} torch thread(s)")
    print(f"raw pipeline     median {median(raw) * 1000:8.1f} ms")
    print(f"service (HTTP)   median {median(service) * 1000:8.1f} ms")
    print(f"service / raw    {median(service) / median(raw):.3f}   (goal <= 1.05)")


if __name__ == "__main__":
    main()
