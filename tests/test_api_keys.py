"""API keys: minted by the operator, shown once, stored as a hash, checked on every /v1 call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegen.registry import EMBEDDED_MODEL_DIR
from service.tenancy.keys import hash_key
from tests.helpers import ADMIN_TOKEN, FakeClock, make_settings, running_app
from web.request_log import JsonLineFormatter

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GENERATION = {"prompt": "a red circle", "size": "32x32", "num_inference_steps": 2}
REPO = Path(__file__).resolve().parent.parent


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_key(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/admin/keys", headers=ADMIN, json={"name": "alice", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(auth="keys", keys_file=tmp_path / "keys.json")) as c:
        yield c


async def test_without_keys_the_local_tool_needs_none(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/models")).status_code == 200
    usage = await client.get("/v1/usage")
    assert usage.status_code == 200
    assert usage.json()["key_id"] == "anonymous"


async def test_with_keys_a_call_without_a_valid_key_is_401(keyed: httpx.AsyncClient) -> None:
    missing = await keyed.get("/v1/models")
    wrong_scheme = await keyed.get("/v1/models", headers={"Authorization": "Basic abc"})
    made_up = await keyed.get("/v1/models", headers=bearer("ig_0123456789abcdef_" + "x" * 43))
    not_ours = await keyed.get("/v1/models", headers=bearer("sk-something"))

    for response in (missing, wrong_scheme, made_up, not_ours):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
    # Routes outside /v1 are not behind keys: health, images, the operator's own token.
    assert (await keyed.get("/healthz")).status_code == 200


async def test_a_created_key_is_shown_once_and_listed_without_secrets(
    keyed: httpx.AsyncClient, tmp_path: Path
) -> None:
    created = await create_key(keyed, models=["shapes"], requests_per_minute=30,
                               max_concurrent=2, device_seconds_per_day=100.5)
    key = created["key"]

    assert key.startswith("ig_") and len(key) == 3 + 16 + 1 + 43
    assert created["id"] == "key_" + key[3:19]
    assert created["models"] == ["shapes"]
    assert (created["requests_per_minute"], created["max_concurrent"],
            created["device_seconds_per_day"]) == (30, 2, 100.5)
    listed = (await keyed.get("/admin/keys", headers=ADMIN)).json()["data"]
    assert [entry["id"] for entry in listed] == [created["id"]]
    assert "key" not in listed[0] and "sha256" not in listed[0]
    assert key not in json.dumps(listed)
    # On disk: the hash only, in a file only its owner may read.
    keys_file = tmp_path / "keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert key not in keys_file.read_text()
    assert hash_key(key) in keys_file.read_text()
    assert (await keyed.get("/v1/models", headers=bearer(key))).status_code == 200


async def test_a_wrong_secret_for_a_real_key_id_is_401(keyed: httpx.AsyncClient) -> None:
    key = (await create_key(keyed))["key"]
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")

    assert (await keyed.get("/v1/models", headers=bearer(forged))).status_code == 401


@pytest.mark.parametrize(("body", "param"), [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "a", "models": []}, "models"),
    ({"name": "a", "models": ["no-such-model"]}, "models"),
    ({"name": "a", "expires_at": 1000}, "expires_at"),
    ({"name": "a", "expires_at": "yesterday"}, "expires_at"),
    ({"name": "a", "requests_per_minute": 0}, "requests_per_minute"),
    ({"name": "a", "max_concurrent": 1.5}, "max_concurrent"),
    ({"name": "a", "device_seconds_per_day": -1}, "device_seconds_per_day"),
    ({"name": "a", "colour": "red"}, None),
])
async def test_a_bad_key_request_is_400_naming_the_field(
    keyed: httpx.AsyncClient, body: dict[str, Any], param: str | None
) -> None:
    response = await keyed.post("/admin/keys", headers=ADMIN, json=body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert (await keyed.get("/admin/keys", headers=ADMIN)).json()["data"] == []


async def test_key_admin_needs_the_admin_token(keyed: httpx.AsyncClient) -> None:
    key = (await create_key(keyed))["key"]

    assert (await keyed.post("/admin/keys", json={"name": "x"})).status_code == 401
    assert (await keyed.get("/admin/keys", headers=bearer(key))).status_code == 403
    assert (await keyed.get("/admin/usage", headers=bearer(key))).status_code == 403


async def test_a_revoked_key_is_refused_at_once(keyed: httpx.AsyncClient) -> None:
    created = await create_key(keyed)
    assert (await keyed.get("/v1/models", headers=bearer(created["key"]))).status_code == 200

    revoked = await keyed.delete(f"/admin/keys/{created['id']}", headers=ADMIN)

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    refused = await keyed.get("/v1/models", headers=bearer(created["key"]))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "key_revoked"
    assert (await keyed.delete("/admin/keys/key_0000000000000000", headers=ADMIN)
            ).status_code == 404


async def test_a_key_past_its_expiry_is_403(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(auth="keys", keys_file=tmp_path / "keys.json")
    async with running_app(settings, clock=clock) as client:
        created = await create_key(client, expires_at=clock.now + 60)
        assert (await client.get("/v1/models", headers=bearer(created["key"]))).status_code == 200

        clock.tick(60)

        refused = await client.get("/v1/models", headers=bearer(created["key"]))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "key_expired"


async def test_expires_at_may_be_an_iso_date(keyed: httpx.AsyncClient) -> None:
    created = await create_key(keyed, expires_at="2999-01-02T03:04:05Z")

    assert created["expires_at"] == datetime(2999, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


async def test_requests_per_minute_answers_429_with_ratelimit_headers(
    keyed: httpx.AsyncClient
) -> None:
    key = (await create_key(keyed, requests_per_minute=2))["key"]

    statuses = [(await keyed.post("/v1/images/generations", headers=bearer(key),
                                  json=GENERATION)).status_code for _ in range(2)]
    refused = await keyed.post("/v1/images/generations", headers=bearer(key), json=GENERATION)

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["ratelimit-policy"] == '"requests";q=2;w=60'
    assert refused.headers["ratelimit"] == f'"requests";r=0;t={retry_after}'
    # Reads are not work: polling and listing never run into the limit.
    assert (await keyed.get("/v1/models", headers=bearer(key))).status_code == 200


async def test_keys_survive_a_restart_through_the_keys_file(tmp_path: Path) -> None:
    settings = make_settings(auth="keys", keys_file=tmp_path / "keys.json")
    async with running_app(settings) as first:
        kept = await create_key(first, name="kept")
        gone = await create_key(first, name="gone")
        assert (await first.delete(f"/admin/keys/{gone['id']}", headers=ADMIN)).is_success

    async with running_app(settings) as second:
        assert (await second.get("/v1/models", headers=bearer(kept["key"]))).status_code == 200
        refused = await second.get("/v1/models", headers=bearer(gone["key"]))
        assert refused.status_code == 403
        listed = (await second.get("/admin/keys", headers=ADMIN)).json()["data"]
        assert [entry["name"] for entry in listed] == ["kept", "gone"]


def run_cli(*args: str, keys_file: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    env["IMAGEGEN_KEYS_FILE"] = str(keys_file)
    done = subprocess.run([sys.executable, "-m", "web.cli", "keys", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_the_cli_creates_and_revokes_keys_a_running_server_honours(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    async with running_app(make_settings(auth="keys", keys_file=keys_file)) as client:
        created = run_cli("create", "--name", "from-shell", "--models", "shapes",
                          "--requests-per-minute", "5", keys_file=keys_file)
        assert created["models"] == ["shapes"] and created["requests_per_minute"] == 5
        key = created["key"]
        assert (await client.get("/v1/models", headers=bearer(key))).status_code == 200
        assert [k["id"] for k in run_cli("list", keys_file=keys_file)["data"]] == [created["id"]]

        run_cli("revoke", created["id"], keys_file=keys_file)

        assert (await client.get("/v1/models", headers=bearer(key))).status_code == 403
    assert key not in keys_file.read_text()


def test_the_cli_refuses_bad_limits_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    env["IMAGEGEN_KEYS_FILE"] = str(tmp_path / "keys.json")
    done = subprocess.run([sys.executable, "-m", "web.cli", "keys", "create", "--name", "x",
                           "--max-concurrent", "0"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "imagegen: max_concurrent must be a positive integer"


async def test_with_keys_metrics_need_the_admin_token(keyed: httpx.AsyncClient) -> None:
    key = (await create_key(keyed))["key"]

    assert (await keyed.get("/metrics")).status_code == 401
    assert (await keyed.get("/metrics", headers=bearer(key))).status_code == 403
    assert (await keyed.get("/metrics", headers=ADMIN)).status_code == 200


class Lines(logging.Handler):
    """Every log line as the service writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonLineFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_log_lines_carry_the_key_id_never_the_key(keyed: httpx.AsyncClient) -> None:
    lines = Lines()
    root = logging.getLogger()
    root.addHandler(lines)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        created = await create_key(keyed)
        key = created["key"]
        await keyed.post("/v1/images/generations", headers=bearer(key), json=GENERATION)
        await keyed.get("/v1/models", headers=bearer(key[:-2]))
        await keyed.delete(f"/admin/keys/{created['id']}", headers=ADMIN)
        await keyed.get("/v1/models", headers=bearer(key))
    finally:
        root.removeHandler(lines)
        root.setLevel(old_level)

    text = "\n".join(lines.lines)
    assert key not in text and key[:-2] not in text and key[19:] not in text
    requests = [json.loads(line) for line in lines.lines if '"event":"request"' in line]
    assert [line.get("key_id") for line in requests if line["route"] == "/v1/images/generations"
            ] == [created["id"]]
    refusals = [(line["status"], line.get("key_id")) for line in requests
                if line["status"] in (401, 403)]
    assert refusals == [(401, None), (403, created["id"])]
    assert '"event":"api key created"' in text and '"event":"api key revoked"' in text


async def test_with_keys_the_demo_page_acts_as_the_demo_principal(tmp_path: Path) -> None:
    settings = make_settings(auth="keys", keys_file=tmp_path / "keys.json",
                             demo_limits="requests_per_minute=1")
    async with running_app(settings) as client:
        page = await client.get("/models/shapes")
        assert page.status_code == 200
        assert "imagegen_demo=1" in page.headers["set-cookie"]
        assert "httponly" in page.headers["set-cookie"].lower()
        # The client now holds the page's cookie, as a browser would.
        usage = await client.get("/v1/usage")
        assert usage.status_code == 200 and usage.json()["key_id"] == "demo"
        first = await client.post("/v1/images/generations", json=GENERATION)
        second = await client.post("/v1/images/generations", json=GENERATION)

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limited"


async def test_the_demo_can_be_turned_off(tmp_path: Path) -> None:
    settings = make_settings(auth="keys", keys_file=tmp_path / "keys.json", demo="off")
    async with running_app(settings) as client:
        assert (await client.get("/")).status_code == 404
        assert (await client.get("/models/shapes")).status_code == 404
        client.cookies.set("imagegen_demo", "1")
        assert (await client.get("/v1/models")).status_code == 401


@pytest.fixture
def priced_models(tmp_path: Path) -> Path:
    """A second model (the embedded weights again) at 2.5 per device second."""
    path = tmp_path / "models.toml"
    path.write_text(f"""
[models.pricey]
path = "{EMBEDDED_MODEL_DIR}"
family = "shapes"
sizes = ["32x32"]
default_steps = 2
price_per_second = 2.5
""")
    return path


async def test_usage_counts_each_generation_once_at_the_models_price(
    tmp_path: Path, priced_models: Path
) -> None:
    settings = make_settings(auth="keys", keys_file=tmp_path / "keys.json", models=priced_models)
    async with running_app(settings) as client:
        key = (await create_key(client))["key"]
        other = (await create_key(client, name="bob"))["key"]
        plain = await client.post("/v1/images/generations", headers=bearer(key),
                                  json={**GENERATION, "n": 2})
        priced = await client.post("/v1/inference/pricey", headers=bearer(key),
                                   json={"prompt": "a red circle"})
        inline = await client.post("/v1/images/generations", headers=bearer(key),
                                   json={**GENERATION, "response_format": "b64_json"})
        refused = await client.post("/v1/images/generations", headers=bearer(key),
                                    json={**GENERATION, "size": "33x33"})
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()
        everyone = (await client.get("/admin/usage", headers=ADMIN)).json()["data"]
        bob = (await client.get("/v1/usage", headers=bearer(other))).json()

    assert plain.status_code == priced.status_code == inline.status_code == 200
    assert refused.status_code == 400
    plain_usage, inline_usage = plain.json()["usage"], inline.json()["usage"]
    assert plain_usage["cost"] == plain_usage["device_seconds"]  # the default price is 1
    priced_cost = priced.json()["inference_status"]["cost"]
    rows = {row["model"]: row for row in usage["data"]}
    assert set(rows) == {"shapes", "pricey"}
    assert (rows["shapes"]["requests"], rows["shapes"]["images"]) == (2, 3)
    assert rows["shapes"]["cost"] == pytest.approx(
        plain_usage["cost"] + inline_usage["cost"], abs=1e-5)
    assert (rows["pricey"]["requests"], rows["pricey"]["images"]) == (1, 1)
    assert rows["pricey"]["cost"] == pytest.approx(priced_cost, abs=1e-5)
    assert rows["pricey"]["cost"] == pytest.approx(rows["pricey"]["device_seconds"] * 2.5,
                                                   rel=1e-3)
    assert {row["day"] for row in usage["data"]} == {time.strftime("%Y-%m-%d", time.gmtime())}
    assert usage["key_id"] != bob["key_id"] and bob["data"] == []
    assert {row["key_id"] for row in everyone} == {usage["key_id"]}


async def test_a_key_scoped_to_some_models_gets_403_for_others(
    tmp_path: Path, priced_models: Path
) -> None:
    settings = make_settings(auth="keys", keys_file=tmp_path / "keys.json", models=priced_models)
    async with running_app(settings) as client:
        key = (await create_key(client, models=["pricey"]))["key"]
        allowed = await client.post("/v1/inference/pricey", headers=bearer(key),
                                    json={"prompt": "a red circle"})
        refused = await client.post("/v1/images/generations", headers=bearer(key),
                                    json=GENERATION)
        job = await client.post("/v1/jobs", headers=bearer(key),
                                json={"prompt": "a red circle", "model": "shapes"})

    assert allowed.status_code == 200
    for response in (refused, job):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "model_not_allowed"
        assert response.json()["error"]["param"] == "model"


async def test_a_daily_device_second_quota_answers_429_until_midnight(
    keyed: httpx.AsyncClient
) -> None:
    key = (await create_key(keyed, device_seconds_per_day=0.001))["key"]

    first = await keyed.post("/v1/images/generations", headers=bearer(key), json=GENERATION)
    refused = await keyed.post("/v1/images/generations", headers=bearer(key), json=GENERATION)

    assert first.status_code == 200  # admitted while the day's use was below the quota
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    to_midnight = 86400 - time.time() % 86400
    assert abs(int(refused.headers["retry-after"]) - to_midnight) < 5
    assert refused.headers["ratelimit-policy"] == '"device_seconds";q=1;w=86400'
    assert refused.headers["ratelimit"].startswith('"device_seconds";r=0;t=')


async def test_max_concurrent_refuses_a_second_generation_while_one_runs(
    keyed: httpx.AsyncClient
) -> None:
    key = (await create_key(keyed, max_concurrent=1))["key"]
    slow = {"prompt": "a red circle", "size": "128x128", "num_inference_steps": 20}

    first, second = await asyncio.gather(
        keyed.post("/v1/images/generations", headers=bearer(key), json=slow),
        keyed.post("/v1/images/generations", headers=bearer(key), json=GENERATION))
    after = await keyed.post("/v1/images/generations", headers=bearer(key), json=GENERATION)

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limited"
    assert second.headers["ratelimit-policy"] == '"concurrency";q=1'
    assert second.headers["retry-after"] == "1"
    assert after.status_code == 200  # the slot came back when the first ended


async def test_a_streamed_generation_is_counted_once_and_frees_its_slot(
    keyed: httpx.AsyncClient
) -> None:
    created = await create_key(keyed, max_concurrent=1)
    headers = bearer(created["key"])

    for _ in range(2):  # the second would be refused had the first kept its slot
        streamed = await keyed.post("/v1/images/generations", headers=headers,
                                    json={**GENERATION, "stream": True, "partial_images": 1})
        assert streamed.status_code == 200
        assert "image_generation.completed" in streamed.text

    (row,) = (await keyed.get("/v1/usage", headers=headers)).json()["data"]
    assert (row["requests"], row["images"]) == (2, 2)


async def test_jobs_and_idempotency_keys_belong_to_their_key(keyed: httpx.AsyncClient) -> None:
    alice = bearer((await create_key(keyed, name="alice"))["key"])
    bob = bearer((await create_key(keyed, name="bob"))["key"])
    body = {"prompt": "a red circle", "width": 32, "height": 32, "num_inference_steps": 2}

    made = await keyed.post("/v1/jobs", headers={**alice, "Idempotency-Key": "k1"}, json=body)
    job_id = made.json()["id"]
    # Bob replays Alice's key with her body: he gets a job of his own, not hers.
    replayed = await keyed.post("/v1/jobs", headers={**bob, "Idempotency-Key": "k1"}, json=body)
    # Carol sends Alice's key with another body: no 409 telling her the key is in use.
    carol = bearer((await create_key(keyed, name="carol"))["key"])
    other_body = await keyed.post("/v1/jobs", headers={**carol, "Idempotency-Key": "k1"},
                                  json={**body, "seed": 9})

    assert made.status_code == 202
    assert replayed.status_code == 202 and replayed.json()["id"] != job_id
    assert "idempotent-replayed" not in replayed.headers
    assert other_body.status_code == 202
    assert other_body.json()["id"] not in (job_id, replayed.json()["id"])
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/events"),
                         ("DELETE", f"/v1/jobs/{job_id}")):
        refused = await keyed.request(method, path, headers=bob)
        assert refused.status_code == 404, (method, path)
        assert refused.json()["error"]["code"] == "job_not_found"
    again = await keyed.post("/v1/jobs", headers={**alice, "Idempotency-Key": "k1"}, json=body)
    assert again.json()["id"] == job_id and again.headers["idempotent-replayed"] == "true"
    assert (await keyed.get(f"/v1/jobs/{job_id}", headers=alice)).status_code == 200


async def test_batches_belong_to_their_key(keyed: httpx.AsyncClient) -> None:
    alice = bearer((await create_key(keyed, name="alice"))["key"])
    bob = bearer((await create_key(keyed, name="bob"))["key"])
    line = {"custom_id": "one", "body": {"prompt": "a red circle", "width": 32, "height": 32,
                                         "num_inference_steps": 2}}

    made = await keyed.post("/v1/batches", headers={**alice, "content-type": "application/jsonl"},
                            content=json.dumps(line) + "\n")
    batch_id = made.json()["id"]

    assert made.status_code == 202
    for method, path in (("GET", f"/v1/batches/{batch_id}"),
                         ("GET", f"/v1/batches/{batch_id}/output"),
                         ("DELETE", f"/v1/batches/{batch_id}")):
        refused = await keyed.request(method, path, headers=bob)
        assert refused.status_code == 404, (method, path)
    assert (await keyed.get(f"/v1/batches/{batch_id}", headers=alice)).status_code == 200


async def test_a_job_holds_its_keys_concurrent_slot_until_it_ends(
    keyed: httpx.AsyncClient
) -> None:
    headers = bearer((await create_key(keyed, max_concurrent=1))["key"])
    body = {"prompt": "a red circle", "width": 32, "height": 32, "num_inference_steps": 2}

    job = (await keyed.post("/v1/jobs", headers=headers, json=body)).json()
    refused = await keyed.post("/v1/jobs", headers=headers, json=body)
    async with keyed.stream("GET", f"/v1/jobs/{job['id']}/events", headers=headers) as events:
        async for line in events.aiter_lines():
            if line.startswith("event: succeeded"):
                break
    after = await keyed.post("/v1/jobs", headers=headers, json=body)

    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert after.status_code == 202
    # The job's generation was counted as the key's, in the one path.
    (row,) = (await keyed.get("/v1/usage", headers=headers)).json()["data"]
    assert row["requests"] >= 1 and row["images"] == row["requests"]


async def test_a_batch_line_for_a_model_out_of_scope_fails_alone(
    tmp_path: Path, priced_models: Path
) -> None:
    # A batch directory of its own: the default one is per port, shared with every app of a
    # concurrent test run on this machine, whose start-up would remove this batch's files.
    settings = make_settings(auth="keys", keys_file=tmp_path / "keys.json", models=priced_models,
                             batch_dir=tmp_path / "batches")
    async with running_app(settings) as client:
        headers = bearer((await create_key(client, models=["pricey"]))["key"])
        lines = [{"custom_id": "in", "body": {"prompt": "a red circle", "model": "pricey"}},
                 {"custom_id": "out", "body": {"prompt": "a red circle", "model": "shapes",
                                               "width": 32, "height": 32}}]
        made = await client.post("/v1/batches",
                                 headers={**headers, "content-type": "application/jsonl"},
                                 content="".join(json.dumps(line) + "\n" for line in lines))
        batch_id = made.json()["id"]
        for _ in range(600):
            batch = (await client.get(f"/v1/batches/{batch_id}", headers=headers)).json()
            if batch["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        output = (await client.get(f"/v1/batches/{batch_id}/output", headers=headers)).text
        (row,) = (await client.get("/v1/usage", headers=headers)).json()["data"]

    results = {line["custom_id"]: line for line in map(json.loads, output.splitlines())}
    assert results["in"]["error"] is None
    assert results["out"]["error"]["code"] == "model_not_allowed"
    assert (row["model"], row["requests"]) == ("pricey", 1)
