"""A real webhook receiver on 127.0.0.1, a stub resolver, a guard that keeps tests on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.webhooks.addresses import IPAddress
from tests.helpers import free_port


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic


class Receiver:
    """Answers each POST with the next scripted answer (the last one repeats)."""

    def __init__(self, answers: list[Answer] | None = None) -> None:
        self.answers = list(answers or [Answer()])
        self.received: list[Received] = []
        self.url = ""

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(Received(dict(request.headers), body, time.monotonic()))
        answer = self.answers[min(len(self.received), len(self.answers)) - 1]
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return Response(status_code=answer.status, headers=answer.headers)

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} deliveries arrived")
            await asyncio.sleep(0.02)
        return self.received


@contextlib.contextmanager
def running_receiver(answers: list[Answer] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(answers)
    port = free_port()
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False,
                            log_config=None, lifespan="off", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the receiver did not start")
        time.sleep(0.02)
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(10)


class StubResolver:
    """Names the test chose, resolved to the addresses it chose; no DNS traffic."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "unknown name")
        return [ipaddress.ip_address(a) for a in self.names[host]]


def _loopback(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class LoopbackOnly:
    """Any connection or name lookup that would leave the machine fails, and is recorded.

    Installed around tests that name private or public addresses, so that even
    code under test that is wrong never sends a packet off loopback.
    """

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.connects: list[str] = []

    def connect(self, original: Any) -> Any:
        guard = self

        def guarded(sock: socket.socket, address: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard.connects.append(str(address[0]))
                if not _loopback(address):
                    guard.refused.append(str(address[0]))
                    raise ConnectionRefusedError("test guard: only loopback may be reached")
            return original(sock, address)

        return guarded

    def getaddrinfo(self, original: Any) -> Any:
        guard = self

        def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host not in (None, "localhost") and not _loopback(host):
                guard.refused.append(str(host))
                raise socket.gaierror(socket.EAI_NONAME, "test guard: no DNS")
            return original(host, *args, **kwargs)

        return guarded


@contextlib.contextmanager
def loopback_only() -> Iterator[LoopbackOnly]:
    guard = LoopbackOnly()
    originals = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)
    socket.socket.connect = guard.connect(originals[0])  # type: ignore[method-assign]
    socket.socket.connect_ex = guard.connect(originals[1])  # type: ignore[method-assign]
    socket.getaddrinfo = guard.getaddrinfo(originals[2])
    try:
        yield guard
    finally:
        socket.socket.connect, socket.socket.connect_ex = originals[0], originals[1]  # type: ignore[method-assign]
        socket.getaddrinfo = originals[2]
