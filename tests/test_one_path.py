"""Every surface behaves as the one generation path does, through the real app: per-model
retention binds batches and reaches job records, a refused request stores nothing, and a
job never shows the URL of an image that is gone."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.helpers import ADMIN_TOKEN, FakeClock, make_settings, running_app

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
NATIVE = {"prompt": "a red circle", "width": 32, "height": 32, "num_inference_steps": 2,
          "seed": 11}
JSONL = {"content-type": "application/jsonl"}
GUARD_SECONDS = 120  # a guard against hanging, not a timing assertion


async def until_ended(client: httpx.AsyncClient, path: str, ended: tuple[str, ...]
                      ) -> dict[str, Any]:
    give_up = time.monotonic() + GUARD_SECONDS
    while time.monotonic() < give_up:
        body = (await client.get(path)).json()
        if body["status"] in ended:
            return dict(body)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} did not end")


async def shorten_model(client: httpx.AsyncClient, seconds: int, apply: bool) -> None:
    response = await client.put("/admin/retention", headers=ADMIN, json={
        "models": {"shapes": {"default_ttl_seconds": seconds, "max_ttl_seconds": seconds}},
        "apply_to_existing": apply})
    assert response.status_code == 200, response.text


def path_of(url: str) -> str:
    return urlsplit(url).path


async def test_a_request_refused_for_store_room_leaves_nothing_stored() -> None:
    async with running_app() as client:
        inline = await client.post("/v1/images/generations", json={
            "prompt": "a red circle", "size": "32x32", "num_inference_steps": 2, "seed": 5,
            "n": 2, "response_format": "b64_json"})
        sizes = [len(base64.b64decode(d["b64_json"])) for d in inline.json()["data"]]
    # Room for the first of the two images, not for both.
    async with running_app(make_settings(store_max_bytes=sizes[0] + sizes[1] - 1)) as client:
        refused = await client.post("/v1/images/generations", json={
            "prompt": "a red circle", "size": "32x32", "num_inference_steps": 2, "seed": 5,
            "n": 2})
        stats = (await client.get("/admin/stats", headers=ADMIN)).json()
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_full"
    assert (stats["store"]["count"], stats["store"]["bytes"]) == (0, 0)


async def test_a_models_retention_binds_batch_lines_and_refuses_a_longer_ask(
        tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(batch_dir=tmp_path / "batches", ttl=3600, sweep_interval=3600)
    async with running_app(settings, clock=clock) as client:
        await shorten_model(client, 30, apply=False)
        longer = {"custom_id": "b", "body": {**NATIVE, "ttl_seconds": 60}}
        refused = await client.post("/v1/batches", headers=JSONL, content=json.dumps(longer))
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "lines"
        assert "line 1 (body.ttl_seconds)" in refused.json()["error"]["message"]

        line = {"custom_id": "a", "body": NATIVE}
        created = await client.post("/v1/batches", headers=JSONL, content=json.dumps(line))
        assert created.status_code == 202, created.text
        batch = f"/v1/batches/{created.json()['id']}"
        await until_ended(client, batch, ("completed", "failed", "canceled"))
        [record] = [json.loads(text) for text in
                    (await client.get(f"{batch}/output")).text.splitlines()]
        sync = await client.post("/v1/inference/shapes", json=NATIVE)
    response = record["response"]
    assert response["expires_at"] == clock.now + 30
    assert set(response["usage"]) == {"device_seconds", "cost"}
    assert sync.json()["expires_at"] == clock.now + 30  # the same policy as the sync path


async def test_apply_to_existing_shortens_a_models_images_and_its_job_records() -> None:
    clock = FakeClock()
    async with running_app(make_settings(ttl=3600, sweep_interval=3600), clock=clock) as client:
        created = await client.post("/v1/jobs", json={**NATIVE, "num_images": 2})
        job = f"/v1/jobs/{created.json()['id']}"
        done = await until_ended(client, job, ("succeeded", "failed", "canceled"))
        assert done["status"] == "succeeded"
        assert done["expires_at"] == clock.now + 3600

        await shorten_model(client, 5, apply=True)
        shortened = (await client.get(job)).json()
        assert shortened["expires_at"] == clock.now + 5
        assert {i["expires_at"] for i in shortened["result"]["images"]} == {clock.now + 5}

        kept, deleted = (path_of(i["url"]) for i in shortened["result"]["images"])
        assert (await client.delete(deleted)).status_code == 204
        shown = (await client.get(job)).text + (await client.get(f"{job}/events")).text
        assert deleted not in shown and kept in shown

        clock.tick(5)
        assert (await client.get(job)).status_code == 404
        assert (await client.get(kept)).status_code == 404
