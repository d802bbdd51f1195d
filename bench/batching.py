"""Benchmark 2: 8 concurrent clients: service throughput / raw throughput at its best batch.

    python -m bench.batching [--clients 8] [--requests 48] [--size 128] [--steps 20]

Raw: the pipeline in this process, called in a warm loop at each batch size.
Service: a real `imagegen serve` process; `--clients` clients each send one
image per request and the next request as soon as the last returns, so the
service must form batches from concurrent requests itself. The raw sweep runs
before and after the service run and is averaged. Goal: >= 0.9 of raw at its
best batch size; the ratio to raw batch 1 shows what batching buys.
"""

from __future__ import annotations

import argparse
import time

from bench.harness import (
    batch_totals,
    closed_loop,
    generation_body,
    imagegen_server,
    raw_call,
    use_threads,
)
from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import embedded_spec, load_pipeline


def raw_throughput(pipeline: TextToImagePipeline, batch: int, images: int,
                   call: tuple[int, int, int, float]) -> float:
    """Images per second at `batch` images per call, over about `images` images."""
    calls = max(1, images // batch)
    started = time.perf_counter()
    for index in range(calls):
        raw_call(pipeline, batch, *call, seed=index * batch)
    return calls * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `imagegen serve` argument (repeatable)")
    args = parser.parse_args()
    env = use_threads(args.threads)
    spec = embedded_spec()
    pipeline = load_pipeline(spec)
    call = (args.size, args.size, args.steps, spec.default_guidance)
    for batch in args.batches:  # warm every shape once
        raw_call(pipeline, batch, *call)
    before = {b: raw_throughput(pipeline, b, args.requests, call) for b in args.batches}
    with imagegen_server(*args.server_arg, env=env) as (url, _):
        body = generation_body(*call)
        closed_loop(url, body, args.clients, args.clients)  # warm-up
        totals = batch_totals(url)
        service = closed_loop(url, body, args.clients, args.requests)
        served = batch_totals(url) - totals
    after = {b: raw_throughput(pipeline, b, args.requests, call) for b in args.batches}
    raw = {b: (before[b] + after[b]) / 2 for b in args.batches}
    best = max(raw, key=raw.__getitem__)
    print(f"embedded model, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.threads} torch thread(s)")
    for batch in args.batches:
        print(f"raw batch {batch:<3}        {raw[batch]:7.2f} images/s "
              f"(runs: {before[batch]:.2f}, {after[batch]:.2f})")
    print(f"service, {args.clients} clients  {service.images_per_second:7.2f} images/s "
          f"({service.images} images, mean batch {served.mean_batch:.2f}, "
          f"device busy {served.device_seconds / service.seconds:.0%} of the time)")
    print(f"service / raw best (batch {best})  {service.images_per_second / raw[best]:.3f}"
          "   (goal >= 0.9)")
    print(f"service / raw batch 1      {service.images_per_second / raw[1]:.3f}")


if __name__ == "__main__":
    main()
