"""What reading a request body costs, and whether hostile bodies delay other clients.

1. Per request, in process: parse + validate a typical generation body, and a
   native body carrying a 1 MiB base64 image, with what the service does
   (web.strict_json + the pydantic request model), pydantic in one pass
   (model_validate_json), msgspec (if installed; not a dependency) and, as the
   floor, json.loads with no validation. Ratios are against json.loads.
2. On a real server: /healthz latency while 16 MiB junk bodies (a batch of
   junk lines, a junk job) are sent and refused, against /healthz when idle.

    .venv/bin/python -m bench.request_parsing [--repeat 2000]
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx

from bench.harness import imagegen_server, median
from web import strict_json
from web.request_models import ImageGenerationRequest, InferenceRequest, validate

try:  # for comparison only
    import msgspec
    from msgspec import Meta
except ImportError:
    msgspec = None
else:
    class SmallStruct(msgspec.Struct):
        prompt: Annotated[str, Meta(min_length=1, max_length=4000, pattern=r"\S")]
        model: str | None = None
        n: Annotated[int, Meta(ge=1, le=8)] | None = None
        size: Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")] | None = None
        response_format: str | None = None
        num_inference_steps: Annotated[int, Meta(ge=1)] | None = None
        guidance_scale: Annotated[float, Meta(ge=0, le=30)] | None = None
        seed: Annotated[int, Meta(ge=0, le=2**32 - 1)] | None = None

    class LargeStruct(msgspec.Struct):
        prompt: str
        width: int | None = None
        height: int | None = None
        init_image: str | None = None

SMALL = {"prompt": "a red circle on a blue background", "size": "128x128", "n": 2,
         "num_inference_steps": 20, "guidance_scale": 1.5, "seed": 42,
         "response_format": "url", "user": "someone"}
LARGE = {"prompt": "a red circle", "width": 128, "height": 128,
         "init_image": base64.b64encode(bytes(range(256)) * 4096).decode()}


def per_call_us(work: Callable[[], Any], repeat: int) -> float:
    work()
    started = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - started) / repeat * 1e6


def msgspec_decoders() -> dict[str, Callable[[bytes], Any]]:
    """msgspec's decoders of the same bodies, with the same constraints (when installed)."""
    if msgspec is None:
        return {}
    return {"small": msgspec.json.Decoder(SmallStruct).decode,
            "large": msgspec.json.Decoder(LargeStruct).decode}


def bench_parsing(repeat: int) -> None:
    decoders = msgspec_decoders()
    print("per request: parse + validate (microseconds; ratio to json.loads alone)")
    for label, body, model in (("small", SMALL, ImageGenerationRequest),
                               ("large", LARGE, InferenceRequest)):
        raw = json.dumps(body).encode()
        times = {
            "json.loads (no validation)": per_call_us(lambda raw=raw: json.loads(raw), repeat),
            "service: strict_json + pydantic": per_call_us(
                lambda raw=raw, model=model: validate(model, strict_json.parse(raw)), repeat),
            "pydantic model_validate_json": per_call_us(
                lambda raw=raw, model=model: model.model_validate_json(raw), repeat),
        }
        if label in decoders:
            times["msgspec Struct decode"] = per_call_us(
                lambda raw=raw, decode=decoders[label]: decode(raw), repeat)
        floor = times["json.loads (no validation)"]
        print(f"  {label} body ({len(raw)} bytes)")
        for name, us in times.items():
            print(f"    {name:34s} {us:10.1f} us  {us / floor:6.2f}x")


def healthz_latencies(url: str, stop: threading.Event) -> list[float]:
    latencies = []
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get(f"{url}/healthz")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    return latencies


def bench_hostile(url: str) -> None:
    junk_lines = (b'{"custom_id": "x", "body": {"prompt": [' + b"1," * 8000 + b"1]}}\n") * 1000
    junk_lines = junk_lines[:16 * 1024 * 1024 - 1]
    junk_job = b'{"prompt": "a red circle", "init_image": "' + b"A" * (16 * 1024 * 1024 - 64) \
        + b'"}'
    idle = _healthz_during(url, None)
    print(f"\n/healthz median when idle: {median(idle) * 1000:.1f} ms")
    for label, path, content_type, body in (
            ("16 MiB junk batch", "/v1/batches", "application/jsonl", junk_lines),
            ("16 MiB junk job", "/v1/jobs", "application/json", junk_job)):
        answers: list[tuple[int, float]] = []

        def send(path: str = path, content_type: str = content_type, body: bytes = body,
                 answers: list[tuple[int, float]] = answers) -> None:
            started = time.perf_counter()
            response = httpx.post(f"{url}{path}", content=body, timeout=60,
                                  headers={"content-type": content_type})
            answers.append((response.status_code, time.perf_counter() - started))

        during = _healthz_during(url, send)
        status, seconds = answers[0]
        print(f"{label}: answered {status} in {seconds:.2f} s; /healthz meanwhile: "
              f"max {max(during) * 1000:.1f} ms, median {median(during) * 1000:.1f} ms "
              f"({max(during) / median(idle):.1f}x the idle median)")


def _healthz_during(url: str, work: Callable[[], None] | None) -> list[float]:
    stop = threading.Event()
    result: list[list[float]] = []
    watcher = threading.Thread(target=lambda: result.append(healthz_latencies(url, stop)))
    watcher.start()
    if work is None:
        time.sleep(1.0)
    else:
        time.sleep(0.1)
        work()
    stop.set()
    watcher.join()
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    bench_parsing(args.repeat)
    with imagegen_server() as (url, _):
        bench_hostile(url)


if __name__ == "__main__":
    main()
