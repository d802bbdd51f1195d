"""Slow, stalled and greedy clients are cut off; memory held for bodies stays bounded.

A real uvicorn (web.server's configuration) on 127.0.0.1, driven over raw
sockets so a test can trickle, stall and abandon requests as an attacker would.
Every socket read has a timeout, so a server that failed to cut a client fails
the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import LiveServer, live_server, make_settings
from web.request_log import JsonLineFormatter

CLIENT_TIMEOUT = 1.0
READ_LIMIT = 15.0  # seconds a test waits for the server before failing


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    settings = make_settings(client_timeout=CLIENT_TIMEOUT, max_body_bytes=1024 * 1024,
                             max_buffered_body_bytes=2 * 1024 * 1024, max_receiving_bodies=3)
    with live_server(settings) as running:
        yield running


@contextlib.contextmanager
def connection(server: LiveServer) -> Iterator[socket.socket]:
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_LIMIT)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or READ_LIMIT passes)."""
    received = b""
    deadline = time.monotonic() + READ_LIMIT
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk
    raise AssertionError("the server kept the connection open")


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def post_head(length: int, path: str = "/v1/jobs") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {length}\r\n\r\n").encode()


def test_trickled_body_is_cut_with_408(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(post_head(1000))
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(100):
                sock.sendall(b" ")
                time.sleep(CLIENT_TIMEOUT / 5)
        response = read_until_closed(sock)
    assert status_of(response) == 408
    assert b"request_timeout" in response


def test_stalled_body_is_cut_with_408(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(post_head(1000) + b'{"prompt": ')
        response = read_until_closed(sock)
    assert status_of(response) == 408


def test_trickled_headers_are_cut(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(OSError):
            for _ in range(100):
                sock.sendall(b"x-slow: 1\r\n")
                time.sleep(CLIENT_TIMEOUT / 5)
        response = read_until_closed(sock)
    assert status_of(response) == 408


def test_silent_connection_is_closed(server: LiveServer) -> None:
    with connection(server) as sock:
        assert status_of(read_until_closed(sock)) == 408


def test_bodies_beyond_the_byte_budget_get_503(server: LiveServer) -> None:
    """Two stalled 1 MiB uploads hold the 2 MiB budget: a third waits its turn (503)."""
    with connection(server) as first, connection(server) as second:
        for sock in (first, second):
            sock.sendall(post_head(1024 * 1024) + b"{" * 1000)
        time.sleep(0.3)  # both are being received now
        response = httpx.post(f"{server.url}/v1/jobs", content=b"{}" * 10,
                              headers={"content-type": "application/json"}, timeout=READ_LIMIT)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "server_busy"
        # Requests without a body, /healthz among them, are not held up.
        assert httpx.get(f"{server.url}/healthz", timeout=READ_LIMIT).status_code == 200
        for sock in (first, second):
            assert status_of(read_until_closed(sock)) == 408
    # The stalled uploads were cut: their budget is free again.
    response = httpx.post(f"{server.url}/v1/jobs", content=b"[]",
                          headers={"content-type": "application/json"}, timeout=READ_LIMIT)
    assert response.status_code == 400


def test_too_many_receiving_requests_get_503(server: LiveServer) -> None:
    with connection(server) as a, connection(server) as b, connection(server) as c:
        for sock in (a, b, c):
            sock.sendall(post_head(100) + b"{")
        time.sleep(0.3)
        response = httpx.post(f"{server.url}/v1/jobs", content=b"{}",
                              headers={"content-type": "application/json"}, timeout=READ_LIMIT)
        assert response.status_code == 503
        assert "retry-after" in response.headers


def test_oversized_declared_body_is_refused_and_closed(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(post_head(64 * 1024 * 1024) + b"{" * 1000)
        response = read_until_closed(sock)
    assert status_of(response) in (413, 503)
    assert b"connection: close" in response.lower()


def test_client_leaving_mid_upload_is_an_info_line(server: LiveServer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with connection(server) as sock:
        sock.sendall(post_head(10_000) + b'{"prompt": "a red')
        time.sleep(0.2)
    deadline = time.monotonic() + READ_LIMIT
    while time.monotonic() < deadline and not any(
            r.getMessage() == "client disconnected" for r in caplog.records):
        time.sleep(0.05)
    disconnects = [r for r in caplog.records if r.getMessage() == "client disconnected"]
    assert disconnects and all(r.levelno == logging.INFO for r in disconnects)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "a red" not in json.dumps([r.getMessage() for r in caplog.records])
    # The request's own line follows, with nginx's 499 (client closed request), and both
    # lines carry the request's id.
    while time.monotonic() < deadline and not any(
            r.getMessage() == "request" for r in caplog.records):
        time.sleep(0.05)
    lines = [json.loads(JsonLineFormatter().format(r)) for r in caplog.records
             if r.name == "imagegen.request"]
    left, request = lines[-2:]
    assert (left["event"], left["level"]) == ("client disconnected", "info")
    assert (request["route"], request["status"]) == ("/v1/jobs", 499)
    assert left["request_id"] == request["request_id"]
    assert str(request["request_id"]).startswith("req_")
