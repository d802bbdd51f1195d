"""Benchmark: an OpenAI image stream with partial images / the same plain request.

    python -m bench.stream_vs_plain [--rounds 20] [--size 64] [--steps 8] [--partials 3]

One sequential client against a real uvicorn process (`imagegen serve`). Plain is
POST /v1/images/generations with response_format b64_json until the response;
stream is the same body with `stream: true, partial_images: N`, read until its
`image_generation.completed` event (so it includes making, encoding and sending
every partial image). The two alternate, so a noisy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import httpx

from bench.harness import generation_body, imagegen_server, median, use_threads


def plain_call(client: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    client.post("/v1/images/generations", json=body).raise_for_status()
    return time.perf_counter() - started


def stream_call(client: httpx.Client, body: dict[str, Any]) -> tuple[float, int]:
    """Seconds until the completed event, and how many partial images came before it."""
    started = time.perf_counter()
    partials = 0
    with client.stream("POST", "/v1/images/generations", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: "):])
            if event["type"] == "image_generation.partial_image":
                partials += 1
            elif event["type"] == "image_generation.completed":
                return time.perf_counter() - started, partials
            else:
                raise RuntimeError(f"stream failed: {event}")
    raise RuntimeError("the stream ended without a completed event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--partials", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    args = parser.parse_args()
    env = use_threads(args.threads)
    plain_body = {**generation_body(args.size, args.size, args.steps, 3.0),
                  "response_format": "b64_json"}
    stream_body = {**plain_body, "stream": True, "partial_images": args.partials}
    plain: list[float] = []
    streams: list[float] = []
    partial_counts: list[int] = []
    with imagegen_server(env=env) as (url, _), httpx.Client(base_url=url, timeout=600) as client:
        for _ in range(args.warmup):
            plain_call(client, plain_body)
            stream_call(client, stream_body)
        for index in range(args.rounds):
            plain.append(plain_call(client, {**plain_body, "seed": index}))
            seconds, partials = stream_call(client, {**stream_body, "seed": index})
            streams.append(seconds)
            partial_counts.append(partials)
    print(f"embedded model, {args.size}x{args.size}, {args.steps} steps, {args.rounds} rounds, "
          f"one sequential client, {max(partial_counts)} partial images per stream")
    print(f"plain b64_json   median {median(plain) * 1000:8.1f} ms")
    print(f"stream           median {median(streams) * 1000:8.1f} ms")
    print(f"stream / plain   {median(streams) / median(plain):.3f}")


if __name__ == "__main__":
    main()
