"""Webhooks through the app: jobs and batches notify a receiver on 127.0.0.1, signed.

Every test runs under a guard that fails any connection or lookup leaving loopback;
the receiver is reachable only because IMAGEGEN_WEBHOOK_ALLOW names 127.0.0.1/32.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

from service.settings import Settings, SettingsError
from service.webhooks import new_secret
from tests.helpers import ADMIN_TOKEN, CANARY, make_settings, running_app
from tests.webhook_support import LoopbackOnly, Receiver, loopback_only

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
