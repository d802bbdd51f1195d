"""Two replicas sharing one Redis: the topology of deploy/compose.yaml, run as processes.

A real redis-server on loopback (a free port, persistence off) and two real
uvicorn replicas (`python -m web.cli serve --store redis`). What one replica
mints, the other serves; a retention change made on one applies on both;
expiry holds everywhere; losing Redis gives quick 503s, never a hang, and the
replicas recover on their own when it is back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from store.redis import DEFAULT_PREFIX
from store.tokens import artifact_id
from tests.components import missing, which

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(which("redis-server") is None, reason="needs redis-server"),
]

REPO = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "replica-test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROMPT = "a red circle"
DEFAULT_TTL = 60
SWEEP_INTERVAL = 0.5
# As deploy/compose.yaml runs Redis: persistence off, no @dangerous commands.
DEPLOYED_REDIS_FLAGS = ["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
                        "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-@dangerous"]
# A request that needs a lost store must answer within this (it takes about a second).
FAIL_FAST_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until condition holds; return how long it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


class RedisServer:
    """redis-server on loopback with persistence off; it can crash, hang and come back."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self.client = redis.Redis(port=port, socket_timeout=2)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), *DEPLOYED_REDIS_FLAGS],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, 10, "redis-server to start")

    def crash(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            self.process.wait(10)

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False


class Replica:
    """One `imagegen serve` process on the shared Redis store."""

    def __init__(self, name: str, redis_url: str, log_path: Path,
                 settings: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
        env["IMAGEGEN_ADMIN_TOKEN"] = ADMIN_TOKEN
        env.update(settings or {})
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "web.cli", "serve", "--port", str(self.port),
                 "--store", "redis", "--redis-url", redis_url, "--ttl", str(DEFAULT_TTL),
                 "--max-ttl", "600", "--sweep-interval", str(SWEEP_INTERVAL)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    def wait_ready(self, timeout: float) -> None:
        wait_until(self.ready, timeout, f"replica {self.name} to be ready")

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"replica {self.name} exited: {self.log_path.read_text()[-2000:]}")
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    logs = tmp_path_factory.mktemp("replica-logs")
    started = [Replica(name, redis_server.url, logs / f"{name}.log") for name in ("a", "b")]
    try:
        for replica in started:  # both load their model at the same time
            replica.wait_ready(90)
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture(scope="module")
def minted() -> list[str]:
    """Every capability token handed out in this module, to look for in the logs."""
    return []


@pytest.fixture
def a(replicas: tuple[Replica, Replica]) -> httpx.Client:
    return replicas[0].http


@pytest.fixture
def b(replicas: tuple[Replica, Replica]) -> httpx.Client:
    return replicas[1].http


@pytest.fixture
def restore_retention(a: httpx.Client, b: httpx.Client) -> Iterator[None]:
    original = a.get("/admin/retention", headers=ADMIN).json()
    yield
    assert a.put("/admin/retention", headers=ADMIN, json=original).status_code == 200
    wait_until(lambda: b.get("/admin/retention", headers=ADMIN).json() == original, 10,
               "replica b to see the restored policy")


def generate(client: httpx.Client, minted: list[str], **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/images/generations", json={
        "prompt": PROMPT, "size": "32x32", "num_inference_steps": 2, "seed": 1, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    minted.append(token_of(image_path(body)))
    return body


def image_path(body: dict[str, Any]) -> str:
    """The path of the first image URL: the same on every replica."""
    return urlsplit(body["data"][0]["url"]).path


def token_of(path: str) -> str:
    return path.removeprefix("/i/").rsplit(".", 1)[0]


def artifact_key(path: str) -> str:
    return f"{DEFAULT_PREFIX}artifact:{artifact_id(token_of(path))}"


def stored_policy(server: RedisServer) -> dict[str, Any]:
    stored = server.client.get(f"{DEFAULT_PREFIX}retention")
    return {} if stored is None else dict(json.loads(stored))


def fails_fast(request: Callable[[], httpx.Response]) -> httpx.Response:
    """The response of a request that needs the lost store: a 503, well before any hang."""
    start = time.monotonic()
    response = request()
    print(f"503 after {time.monotonic() - start:.2f} s")
    assert response.status_code == 503
    return response


def expect_store_unavailable(client: httpx.Client, path: str) -> None:
    response = fails_fast(lambda: client.get(path, timeout=FAIL_FAST_SECONDS))
    assert response.json()["error"]["code"] == "store_unavailable"
    ready = fails_fast(lambda: client.get("/readyz", timeout=FAIL_FAST_SECONDS)).json()
    assert ready["ready"] is False
    assert ready["checks"]["store_reachable"] is False


def test_an_image_minted_on_a_is_served_by_b(
    a: httpx.Client, b: httpx.Client, minted: list[str]
) -> None:
    path = image_path(generate(a, minted))

    on_a, on_b = a.get(path), b.get(path)

    assert on_a.status_code == on_b.status_code == 200
    assert on_b.headers["content-type"] == "image/png"
    assert on_b.content == on_a.content
    # Deleting through either replica deletes it for both.
    assert b.delete(path).status_code == 204
    assert a.get(path).status_code == 404


def test_a_retention_change_on_b_applies_to_new_images_on_a(
    a: httpx.Client, b: httpx.Client, minted: list[str], restore_retention: None
) -> None:
    changed = b.put("/admin/retention", headers=ADMIN, json={"default_ttl_seconds": 123})
    assert changed.status_code == 200

    # Published through Redis; A applies it as soon as the message arrives.
    waited = wait_until(
        lambda: a.get("/admin/retention", headers=ADMIN).json()["default_ttl_seconds"] == 123,
        10, "replica a to see the new policy")
    print(f"policy reached the other replica after {waited:.2f} s")
    body = generate(a, minted)

    lifetime = body["data"][0]["expires_at"] - body["created"]
    assert 121 <= lifetime <= 124  # `created` is whole seconds, taken just after the put
    assert a.get("/v1/privacy").json()["outputs"]["default_ttl_seconds"] == 123


def test_an_expired_image_is_gone_from_both(
    a: httpx.Client, b: httpx.Client, minted: list[str], redis_server: RedisServer
) -> None:
    body = generate(a, minted, ttl_seconds=3)
    path, expires_at = image_path(body), body["data"][0]["expires_at"]
    assert b.get(path).status_code == 200

    time.sleep(max(0.0, expires_at - time.time()) + 0.1)

    assert a.get(path).status_code == 404
    assert b.get(path).status_code == 404
    # Physically gone: Redis dropped the bytes itself, and a sweep cleared the index.
    assert redis_server.client.exists(artifact_key(path)) == 0
    wait_until(lambda: redis_server.client.zscore(f"{DEFAULT_PREFIX}expiry",
                                                  artifact_id(token_of(path))) is None,
               4 * SWEEP_INTERVAL + 5, "a sweep to clear the expiry index")


def test_a_hung_redis_gives_fast_503s_and_nothing_is_served_past_expiry(
    a: httpx.Client, b: httpx.Client, minted: list[str], redis_server: RedisServer
) -> None:
    long_path = image_path(generate(b, minted))
    short = generate(a, minted, ttl_seconds=3)
    short_path, short_expiry = image_path(short), short["data"][0]["expires_at"]
    assert b.get(short_path).status_code == 200

    redis_server.pause()  # like a partition: connections open, no answers
    try:
        expect_store_unavailable(a, long_path)
        expect_store_unavailable(b, short_path)
        fails_fast(lambda: b.post("/v1/images/generations", timeout=FAIL_FAST_SECONDS + 30,
                                  json={"prompt": PROMPT, "size": "32x32",
                                        "num_inference_steps": 2}))
        # The short image expires while Redis cannot act on anything.
        time.sleep(max(0.0, short_expiry - time.time()) + 0.1)
    finally:
        redis_server.resume()

    for client in (a, b):
        assert client.get(short_path).status_code == 404
        assert client.get(long_path).status_code == 200


def test_after_a_redis_crash_and_restart_the_replicas_recover_by_themselves(
    replicas: tuple[Replica, Replica], minted: list[str], redis_server: RedisServer,
    restore_retention: None,
) -> None:
    a, b = (replica.http for replica in replicas)
    assert b.put("/admin/retention", headers=ADMIN, json={"default_ttl_seconds": 45}).is_success
    wait_until(lambda: a.get("/admin/retention", headers=ADMIN).json()["default_ttl_seconds"]
               == 45, 10, "replica a to see the new policy")
    before = image_path(generate(a, minted))

    redis_server.crash()
    expect_store_unavailable(a, before)
    expect_store_unavailable(b, before)
    redis_server.start()  # same port, empty: persistence is off

    for replica in replicas:
        waited = wait_until(replica.ready, 20, f"replica {replica.name} to recover")
        print(f"replica {replica.name} ready again {waited:.2f} s after the restart")
    # Redis forgot every image, so their URLs are dead on both replicas...
    assert a.get(before).status_code == b.get(before).status_code == 404
    # ...while new ones work across replicas, and the operator's policy survived:
    # the replicas wrote their copy back into the empty Redis.
    body = generate(a, minted)
    assert b.get(image_path(body)).status_code == 200
    assert 43 <= body["data"][0]["expires_at"] - body["created"] <= 46
    assert b.get("/admin/retention", headers=ADMIN).json()["default_ttl_seconds"] == 45
    wait_until(lambda: stored_policy(redis_server).get("default_ttl_seconds") == 45, 10,
               "the policy to be written back to redis")


NGINX = which("nginx")


@pytest.fixture
def load_balancer(replicas: tuple[Replica, Replica], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """deploy/nginx.conf in front of the two replicas; yields its URL and its log file."""
    if NGINX is None:
        missing("nginx")
    port = free_port()
    config = (REPO / "deploy" / "nginx.conf").read_text()
    for name, replica in zip(("imagegen-a", "imagegen-b"), replicas, strict=True):
        config = config.replace(f"server {name}:8000", f"server 127.0.0.1:{replica.port}")
    config = config.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    config = config.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
    (tmp_path / "nginx.conf").write_text(config)
    log_path = tmp_path / "nginx.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-e", "stderr", "-c", str(tmp_path / "nginx.conf"),
             "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: port_open(port), 10, "nginx to listen")
    yield url, log_path
    process.terminate()
    process.wait(10)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.nginx
def test_the_load_balancer_spreads_requests_keeps_jobs_together_and_logs_no_url(
    replicas: tuple[Replica, Replica], minted: list[str], load_balancer: tuple[str, Path]
) -> None:
    url, log_path = load_balancer
    with httpx.Client(base_url=url, timeout=60) as client:
        path = image_path(generate(client, minted))
        fetched = [client.get(path).status_code for _ in range(4)]
        job = client.post("/v1/jobs", json={"prompt": PROMPT, "width": 32, "height": 32,
                                            "num_inference_steps": 2})
        polled = [client.get(f"/v1/jobs/{job.json()['id']}").status_code for _ in range(4)]

    assert fetched == [200] * 4
    # A job lives on the replica that took it; the client's polls all reach that one.
    assert job.status_code == 202
    assert polled == [200] * 4
    # nginx writes a request's log line after its response: the last may still be on its way.
    wait_until(lambda: len(log_path.read_text().splitlines()) >= 10, 10, "nginx's log lines")
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    assert len(lines) == 10
    assert {line["upstream"] for line in lines[1:5]} == {
        f"127.0.0.1:{replica.port}" for replica in replicas}
    assert len({line["upstream"] for line in lines[5:]}) == 1
    assert token_of(path) not in log_path.read_text()
    assert job.json()["id"] not in log_path.read_text()


def test_replica_logs_carry_no_capability_token_and_no_prompt(
    replicas: tuple[Replica, Replica], minted: list[str]
) -> None:
    assert minted  # the tests above ran and handed out URLs
    for replica in replicas:
        log = replica.log_path.read_text()
        assert '"route":"/i/{token}.{ext}"' in log  # it logged the image requests it served
        assert PROMPT not in log
        for token in minted:
            assert token not in log
