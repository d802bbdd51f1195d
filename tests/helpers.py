"""Test helpers: the real app on the real tiny pipeline, driven over HTTP; a fake clock."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from service.settings import Settings
from web.app import create_app
from web.server import uvicorn_config

ADMIN_TOKEN = "test-admin-token-0123456789"
CANARY = "zebracanary7319"


class FakeClock:
    """A wall clock the test moves by hand (cachetools style)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def make_settings(**changes: Any) -> Settings:
    """Small and fast: the embedded model, an admin token, no env influence."""
    base: dict[str, Any] = {"admin_token": ADMIN_TOKEN, "sweep_interval": 0.2}
    base.update(changes)
    return Settings.load(environ={}, **base)


@contextlib.asynccontextmanager
async def running_app(settings: Settings | None = None, **create_kwargs: Any
                      ) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an HTTP client bound to it."""
    app = create_app(settings or make_settings(), **create_kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     timeout=60) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server


@contextlib.contextmanager
def live_server(settings: Settings | None = None, **create_kwargs: Any) -> Iterator[LiveServer]:
    """A real uvicorn on 127.0.0.1 in a background thread."""
    port = free_port()
    settings = (settings or make_settings()).with_changes(port=port)
    config = uvicorn_config(create_app(settings, **create_kwargs), settings, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", server=server)
    finally:
        server.should_exit = True
        thread.join(30)
