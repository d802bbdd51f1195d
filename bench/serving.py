"""Benchmark 3: GET of a 200 KB image from the store vs the same bytes from a bare Starlette route.

    python -m bench.serving [--seconds 5] [--connections 16] [--runs 3]

Both are real uvicorn processes with the same options; the store one is the
whole app (`create_app`, request-log middleware, logging as `imagegen serve`
configures it) with the image put into its memory store at start-up. wrk
(Debian's `wrk`) drives each in turn, alternating; without wrk an async httpx
client does. Prints requests per second and store / bare (goal: >= 0.9), and
each server's CPU time per request (from /proc), which a busy machine
disturbs less than the rate does.

`python -m bench.serving --serve store|bare --port N --token-file F` is one server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.harness import median, server

IMAGE_BYTES = 200 * 1024
# Seeded random bytes, the same in both servers: neither looks inside, nothing compresses them.
PAYLOAD = random.Random(0).randbytes(IMAGE_BYTES)


def bare_app() -> Starlette:
    async def image(request: Request) -> Response:
        return Response(PAYLOAD, media_type="image/png")

    async def ready(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/image.png", image), Route("/readyz", ready)])


def store_app(token_file: Path) -> Starlette:
    """The real app, with one 200 KB PNG artifact put into its store once it has started."""
    from service.settings import Settings
    from web.app import create_app
    from web.request_log import configure_logging

    settings = Settings.load()
    configure_logging(settings.log_level)
    app = create_app(settings)
    started = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with started(app):
            token, _ = await app.state.services.store.put(PAYLOAD, "image/png", 3600)
            token_file.write_text(token)
            yield

    app.router.lifespan_context = lifespan
    return app


def serve(kind: str, port: int, token_file: Path) -> None:
    import uvicorn

    app = store_app(token_file) if kind == "store" else bare_app()
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_config=None,
                server_header=False)


def wrk(url: str, seconds: int, connections: int) -> tuple[float, int]:
    """(requests per second, requests done)."""
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True, text=True, check=True)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    done = re.search(r"(\d+) requests in", result.stdout)
    if rate is None or done is None or "Non-2xx" in result.stdout:
        raise RuntimeError("wrk saw errors:\n" + result.stdout)
    return float(rate.group(1)), int(done.group(1))


async def httpx_load(url: str, seconds: int, connections: int) -> tuple[float, int]:
    limits = httpx.Limits(max_connections=connections)
    done = 0
    async with httpx.AsyncClient(limits=limits) as client:
        stop = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                response = await client.get(url)
                response.raise_for_status()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        return done / (time.perf_counter() - started), done


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, pid: int, args: argparse.Namespace) -> tuple[float, float]:
    """(requests per second, the server's CPU microseconds per request)."""
    cpu_before = cpu_seconds(pid)
    if args.client == "wrk":
        rate, done = wrk(url, args.seconds, args.connections)
    else:
        rate, done = asyncio.run(httpx_load(url, args.seconds, args.connections))
    return rate, (cpu_seconds(pid) - cpu_before) / done * 1e6


def compare(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        token_file = Path(workdir) / "token"
        bare: list[tuple[float, float]] = []
        stored: list[tuple[float, float]] = []
        command = ["-m", "bench.serving", "--token-file", str(token_file), "--serve"]
        env = {"IMAGEGEN_LOG_LEVEL": args.log_level}
        with server([*command, "bare"], env) as (bare_url, bare_process), \
                server([*command, "store"], env, ready_path="/healthz") as (store_url,
                                                                           store_process):
            while not token_file.exists() or not token_file.read_text():
                time.sleep(0.05)
            image_url = f"{store_url}/i/{token_file.read_text()}.png"
            assert httpx.get(image_url).content == httpx.get(bare_url + "/image.png").content
            for _ in range(args.runs):
                bare.append(measure(bare_url + "/image.png", bare_process.pid, args))
                stored.append(measure(image_url, store_process.pid, args))
    print(f"GET of a {IMAGE_BYTES // 1024} KB image, {args.connections} connections, "
          f"{args.seconds} s x {args.runs} runs each, alternating, client {args.client}, "
          f"service log level {args.log_level}")
    for name, runs in (("bare Starlette route", bare), ("store (whole app)", stored)):
        rates = [rate for rate, _ in runs]
        print(f"{name:<21} median {median(rates):9.0f} req/s  "
              f"(runs: {', '.join(f'{r:.0f}' for r in rates)}), "
              f"server CPU {median([cpu for _, cpu in runs]):.1f} us/request")
    rate_ratio = median([r for r, _ in stored]) / median([r for r, _ in bare])
    cpu_ratio = median([c for _, c in bare]) / median([c for _, c in stored])
    print(f"store / bare          {rate_ratio:.3f}   (goal >= 0.9); "
          f"by server CPU per request (bare / store): {cpu_ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--client", choices=["wrk", "httpx"],
                        default="wrk" if shutil.which("wrk") else "httpx")
    parser.add_argument("--log-level", default=os.environ.get("IMAGEGEN_LOG_LEVEL", "INFO"),
                        help="the service's (INFO, the default, logs a line per request)")
    parser.add_argument("--serve", choices=["store", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.token_file)
    else:
        compare(args)


if __name__ == "__main__":
    main()
