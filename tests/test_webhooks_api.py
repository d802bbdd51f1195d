"""Webhooks through the app: jobs and batches notify a receiver on 127.0.0.1, signed.

Every test runs under a guard that fails any connection or lookup leaving loopback;
the receiver is reachable only because IMAGEGEN_WEBHOOK_ALLOW names 127.0.0.1/32.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

from service.settings import Settings, SettingsError
from service.webhooks import new_secret
from tests.helpers import ADMIN_TOKEN, CANARY, make_settings, running_app
from tests.test_faults import Faults
from tests.webhook_support import Answer, LoopbackOnly, Receiver, loopback_only, running_receiver

FAST = {"width": 32, "height": 32, "num_inference_steps": 4}
PROMPT = f"a red circle on a blue background {CANARY}"


@pytest.fixture(autouse=True)
def guard() -> Iterator[LoopbackOnly]:
    with loopback_only() as g:
        yield g


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(webhook_allow="127.0.0.1/32", batch_dir=tmp_path / "batches")
    async with running_app(settings) as c:
        yield c


async def secret_of(client: httpx.AsyncClient) -> str:
    response = await client.get("/v1/webhooks/secret")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    secret: str = response.json()["secret"]
    return secret


async def job_until_ended(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        view: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if view["status"] in ("succeeded", "failed", "canceled"):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not end")


def verified(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    hook = standardwebhooks.Webhook(secret)
    return [hook.verify(r.body, r.headers) for r in receiver.received]


async def test_a_job_notifies_started_and_completed_signed_and_thin(
        client: httpx.AsyncClient) -> None:
    secret = await secret_of(client)
    with running_receiver() as receiver:
        response = await client.post("/v1/jobs", json={
            "prompt": PROMPT, **FAST, "seed": 7,
            "webhook": {"url": receiver.url, "events": ["started", "completed"]}})
        assert response.status_code == 202
        job_id = response.json()["id"]
        await receiver.wait_for(2)
        view = await job_until_ended(client, job_id)
    notices = verified(receiver, secret)
    assert [n["type"] for n in notices] == ["job.started", "job.completed"]
    done = notices[1]["data"]
    assert done["id"] == job_id and done["status"] == "succeeded" and done["seed"] == 7
    assert done["usage"]["device_seconds"] > 0
    (image,) = done["images"]
    assert image["url"].startswith("http://testserver/i/") and image["expires_at"] > 0
    for received in receiver.received:
        assert CANARY.encode() not in received.body
    assert set(done) <= {"id", "status", "images", "seed", "usage", "error", "expires_at"}
    deliveries = view["webhook"]["deliveries"]
    assert [(d["event"], d["status"]) for d in deliveries] == [
        ("job.started", 200), ("job.completed", 200)]
    metrics = (await client.get("/metrics")).text
    assert 'imagegen_webhook_attempts_total{result="2xx"} 2.0' in metrics
    assert 'imagegen_webhook_deliveries_total{outcome="delivered"} 2.0' in metrics


async def test_a_job_notice_is_retried_through_500s(client: httpx.AsyncClient) -> None:
    secret = await secret_of(client)
    with running_receiver([Answer(500), Answer(502), Answer(200)]) as receiver:
        response = await client.post("/v1/jobs", json={
            "prompt": PROMPT, **FAST, "webhook": {"url": receiver.url}})
        job_id = response.json()["id"]
        await receiver.wait_for(3)
        await job_until_ended(client, job_id)
        for _ in range(100):
            view = (await client.get(f"/v1/jobs/{job_id}")).json()
            if len(view["webhook"]["deliveries"]) == 3:
                break
            await asyncio.sleep(0.05)
    notices = verified(receiver, secret)
    assert [n["type"] for n in notices] == ["job.completed"] * 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert [d["status"] for d in view["webhook"]["deliveries"]] == [500, 502, 200]


async def test_a_failed_job_notifies_completed_with_its_status_and_error(
        tmp_path: Path) -> None:
    faults = Faults()
    settings = make_settings(webhook_allow="127.0.0.1/32", batch_dir=tmp_path / "batches")
    async with running_app(settings, wrap_pipeline=faults) as client:
        secret = await secret_of(client)
        faults.pipeline.raise_error = True
        with running_receiver() as receiver:
            response = await client.post("/v1/jobs", json={
                "prompt": PROMPT, **FAST, "webhook": {"url": receiver.url}})
            await receiver.wait_for(1)
    (notice,) = verified(receiver, secret)
    assert notice["type"] == "job.completed"
    assert notice["data"]["id"] == response.json()["id"]
    assert notice["data"]["status"] == "failed"
    assert notice["data"]["error"]["code"] == "pipeline_failed"
    assert CANARY.encode() not in receiver.received[0].body


@pytest.mark.parametrize("url", ["http://10.0.0.1/hook", "http://169.254.169.254/latest",
                                 "http://[::ffff:192.168.0.1]/hook", "http://127.0.0.2:9/hook",
                                 "ftp://example.com/hook"])
async def test_disallowed_webhook_urls_are_refused_at_submit(
        client: httpx.AsyncClient, guard: LoopbackOnly, url: str) -> None:
    response = await client.post("/v1/jobs", json={"prompt": PROMPT, **FAST,
                                                   "webhook": {"url": url}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "webhook.url"
    assert guard.connects == [] and guard.refused == []


async def test_bad_webhook_fields_are_400s_naming_them(client: httpx.AsyncClient) -> None:
    for webhook, param in [({"url": "http://127.0.0.1:9/", "events": ["done"]},
                            "webhook.events.0"),
                           ({"events": ["completed"]}, "webhook.url"),
                           ({"url": "http://127.0.0.1:9/", "secret": "x"}, "webhook")]:
        response = await client.post("/v1/jobs", json={"prompt": PROMPT, **FAST,
                                                       "webhook": webhook})
        assert response.status_code == 400, webhook
        assert response.json()["error"]["param"].startswith(param)


async def test_a_batch_notifies_batch_completed(client: httpx.AsyncClient) -> None:
    secret = await secret_of(client)
    lines = "\n".join(json.dumps({"custom_id": f"l{i}", "body": {"prompt": PROMPT, **FAST}})
                      for i in range(2))
    with running_receiver() as receiver:
        response = await client.post(
            "/v1/batches", content=lines, headers={"content-type": "application/jsonl"},
            params={"webhook_url": receiver.url, "webhook_events": "started,completed"})
        assert response.status_code == 202
        batch_id = response.json()["id"]
        await receiver.wait_for(2)
        for _ in range(100):
            view = (await client.get(f"/v1/batches/{batch_id}")).json()
            if len(view["webhook"]["deliveries"]) == 2:
                break
            await asyncio.sleep(0.05)
    assert [d["status"] for d in view["webhook"]["deliveries"]] == [200, 200]
    notices = verified(receiver, secret)
    assert [n["type"] for n in notices] == ["batch.started", "batch.completed"]
    done = notices[1]["data"]
    assert done["id"] == batch_id and done["status"] == "completed"
    assert done["counts"] == {"total": 2, "done": 2, "failed": 0}
    assert CANARY.encode() not in receiver.received[1].body


async def test_a_batch_webhook_to_a_private_address_is_refused(
        client: httpx.AsyncClient) -> None:
    line = json.dumps({"custom_id": "a", "body": {"prompt": PROMPT, **FAST}})
    response = await client.post("/v1/batches", content=line,
                                 headers={"content-type": "application/jsonl"},
                                 params={"webhook_url": "http://192.168.1.1/hook"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "webhook_url"


async def test_the_operators_secret_signs_when_auth_is_off() -> None:
    chosen = new_secret()
    async with running_app(make_settings(webhook_secret=chosen)) as client:
        assert await secret_of(client) == chosen


def test_bad_webhook_settings_stop_start_up_naming_them() -> None:
    secret = "whsec_c2hvcnQ="
    with pytest.raises(SettingsError, match="IMAGEGEN_WEBHOOK_SECRET") as bad_secret:
        Settings.load(environ={"IMAGEGEN_WEBHOOK_SECRET": secret})
    assert secret not in str(bad_secret.value)
    with pytest.raises(SettingsError, match="IMAGEGEN_WEBHOOK_ALLOW"):
        Settings.load(environ={"IMAGEGEN_WEBHOOK_ALLOW": "10.0.0.0/33"})
    with pytest.raises(SettingsError, match="IMAGEGEN_WEBHOOK_RETRY_SECONDS"):
        Settings.load(environ={"IMAGEGEN_WEBHOOK_RETRY_SECONDS": "0"})


async def test_with_api_keys_each_key_has_its_own_secret(tmp_path: Path) -> None:
    settings = make_settings(auth="keys", keys_file=tmp_path / "keys.json",
                             webhook_secret=new_secret())
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with running_app(settings) as client:
        assert (await client.get("/v1/webhooks/secret")).status_code == 401
        secrets = []
        for name in ("alice", "bob"):
            key = (await client.post("/admin/keys", headers=admin, json={"name": name})).json()
            auth = {"Authorization": f"Bearer {key['key']}"}
            first = (await client.get("/v1/webhooks/secret", headers=auth)).json()["secret"]
            again = (await client.get("/v1/webhooks/secret", headers=auth)).json()["secret"]
            assert first == again and first.startswith("whsec_")
            secrets.append(first)
    # Two keys, two secrets; the operator's secret is only for a service without keys.
    assert len(set(secrets)) == 2 and settings.webhook_secret not in secrets
