"""API keys across two replicas on one real Redis: keys, limits, revocation and usage shared.

The same topology as tests/test_replicas.py (real redis-server, two `imagegen
serve` processes), with IMAGEGEN_AUTH=keys.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_replicas import ADMIN, PROMPT, RedisServer, Replica, free_port

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

GENERATION = {"prompt": PROMPT, "size": "32x32", "num_inference_steps": 2}


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
    started = [Replica(name, redis_server.url, logs / f"{name}.log",
                       {"IMAGEGEN_AUTH": "keys", "IMAGEGEN_LOG_LEVEL": "DEBUG"})
               for name in ("a", "b")]
    try:
        for replica in started:
            replica.wait_ready(90)
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture(scope="module")
def issued() -> list[str]:
    """Every key handed out in this module, to look for in the logs."""
    return []


def create_key(client: httpx.Client, issued: list[str], **fields: Any) -> dict[str, Any]:
    response = client.post("/admin/keys", headers=ADMIN, json={"name": "shared", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    issued.append(body["key"])
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_made_on_a_works_on_b_and_survives_in_redis(
    replicas: tuple[Replica, Replica], redis_server: RedisServer, issued: list[str]
) -> None:
    a, b = (replica.http for replica in replicas)
    created = create_key(a, issued)

    assert b.get("/v1/models", headers=bearer(created["key"])).status_code == 200
    assert [k["id"] for k in b.get("/admin/keys", headers=ADMIN).json()["data"]
            ] == [created["id"]]
    # Redis holds the hash, never the key.
    stored = b"".join(redis_server.client.hvals("imagegen:keys"))
    assert created["key"].encode() not in stored
    assert created["id"].encode() in stored


def test_a_burst_split_across_both_replicas_is_held_to_the_limit(
    replicas: tuple[Replica, Replica], issued: list[str]
) -> None:
    a, b = (replica.http for replica in replicas)
    key = create_key(a, issued, requests_per_minute=4)["key"]

    def post(client: httpx.Client) -> int:
        # An empty body still asks for work: it is counted, then refused as a 400.
        return client.post("/v1/images/generations", headers=bearer(key), json={}).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(post, [a, b] * 5))

    assert sorted(statuses) == [400] * 4 + [429] * 6


def test_a_revocation_on_a_is_refused_on_b_within_a_second(
    replicas: tuple[Replica, Replica], issued: list[str]
) -> None:
    a, b = (replica.http for replica in replicas)
    created = create_key(a, issued)
    assert b.get("/v1/models", headers=bearer(created["key"])).status_code == 200

    assert a.delete(f"/admin/keys/{created['id']}", headers=ADMIN).status_code == 200
    revoked_at = time.monotonic()
    refused = b.get("/v1/models", headers=bearer(created["key"]))

    assert time.monotonic() - revoked_at < 1.0
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "key_revoked"


def test_usage_on_both_replicas_adds_up(
    replicas: tuple[Replica, Replica], issued: list[str]
) -> None:
    a, b = (replica.http for replica in replicas)
    created = create_key(a, issued)
    headers = bearer(created["key"])
    costs = []
    for client in (a, b):
        response = client.post("/v1/images/generations", headers=headers, json=GENERATION)
        assert response.status_code == 200, response.text
        costs.append(response.json()["usage"]["cost"])

    rows = b.get("/v1/usage", headers=headers).json()["data"]

    assert len(rows) == 1
    assert (rows[0]["model"], rows[0]["requests"], rows[0]["images"]) == ("shapes", 2, 2)
    assert rows[0]["cost"] == pytest.approx(sum(costs), abs=1e-5)
    everyone = a.get("/admin/usage", headers=ADMIN).json()["data"]
    assert [row["requests"] for row in everyone if row["key_id"] == created["id"]] == [2]


def test_replica_logs_carry_key_ids_and_never_a_key(
    replicas: tuple[Replica, Replica], issued: list[str]
) -> None:
    assert issued  # the tests above ran and handed out keys
    for replica in replicas:
        log = Path(replica.log_path).read_text()
        assert '"key_id":"key_' in log
        for key in issued:
            assert key not in log
            assert key[19:] not in log  # not even the secret part alone
