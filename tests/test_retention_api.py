"""Image lifetimes through the app: expiry on read, sweeping, run-time TTL changes."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx

from tests.helpers import ADMIN_TOKEN, FakeClock, make_settings, running_app
from web.request_log import JsonLineFormatter

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAST = {"prompt": "a red circle", "size": "32x32", "num_inference_steps": 2}


async def make_image(client: httpx.AsyncClient, **fields: object) -> dict[str, float | str]:
    response = await client.post("/v1/images/generations", json={**FAST, **fields})
    assert response.status_code == 200, response.text
    item: dict[str, float | str] = response.json()["data"][0]
    return item


async def stats(client: httpx.AsyncClient) -> dict[str, int]:
    response = await client.get("/admin/stats", headers=ADMIN)
    store: dict[str, int] = response.json()["store"]
    return store


async def test_served_until_expiry_then_404_before_any_sweep() -> None:
    clock = FakeClock()
    # A sweep interval far longer than the test: only the read-time check can hide it.
    async with running_app(make_settings(ttl=60, sweep_interval=3600), clock=clock) as client:
        item = await make_image(client)
        assert item["expires_at"] == clock.now + 60
        clock.tick(59.9)
        assert (await client.get(str(item["url"]))).status_code == 200
        clock.tick(0.2)
        gone = await client.get(str(item["url"]))
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "image_not_found"
        assert (await stats(client))["count"] == 1  # still held until the sweeper runs


async def test_sweep_removes_exactly_the_expired() -> None:
    clock = FakeClock()
    async with running_app(make_settings(ttl=100, sweep_interval=3600), clock=clock) as client:
        short = [await make_image(client, ttl_seconds=10) for _ in range(2)]
        long = await make_image(client)
        clock.tick(11)
        services = client.app.state.services  # type: ignore[attr-defined]
        removed = await services.sweeper.run_once()
        assert removed == 2
        assert (await stats(client))["count"] == 1
        assert (await client.get(str(long["url"]))).status_code == 200
        for item in short:
            assert (await client.get(str(item["url"]))).status_code == 404


async def test_ttl_change_applies_to_new_images_and_never_extends_old_ones() -> None:
    clock = FakeClock()
    async with running_app(make_settings(ttl=60, sweep_interval=3600), clock=clock) as client:
        old = await make_image(client)
        changed = await client.put("/admin/retention", headers=ADMIN,
                                   json={"default_ttl_seconds": 600})
        assert changed.status_code == 200
        assert changed.json()["default_ttl_seconds"] == 600
        new = await make_image(client)
        assert new["expires_at"] == clock.now + 600
        clock.tick(61)
        assert (await client.get(str(old["url"]))).status_code == 404  # not extended
        assert (await client.get(str(new["url"]))).status_code == 200
        # Shortening back never revives the expired one either.
        await client.put("/admin/retention", headers=ADMIN, json={"default_ttl_seconds": 30})
        assert (await client.get(str(old["url"]))).status_code == 404


async def test_apply_to_existing_shortens_live_images() -> None:
    clock = FakeClock()
    async with running_app(make_settings(ttl=3600, sweep_interval=3600), clock=clock) as client:
        item = await make_image(client)
        response = await client.put("/admin/retention", headers=ADMIN,
                                    json={"default_ttl_seconds": 5, "apply_to_existing": True})
        assert response.json()["shortened"] == 1
        clock.tick(6)
        assert (await client.get(str(item["url"]))).status_code == 404


async def test_request_ttl_may_only_shorten() -> None:
    clock = FakeClock()
    async with running_app(make_settings(ttl=60), clock=clock) as client:
        item = await make_image(client, ttl_seconds=5)
        assert item["expires_at"] == clock.now + 5
        response = await client.post("/v1/images/generations", json={**FAST, "ttl_seconds": 61})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "ttl_seconds"


async def test_retention_rejects_default_above_max() -> None:
    async with running_app(make_settings(ttl=60, max_ttl=120)) as client:
        response = await client.put("/admin/retention", headers=ADMIN,
                                    json={"default_ttl_seconds": 500})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "default_ttl_seconds"
        assert response.json()["error"]["message"] == (
            "default_ttl_seconds (500) must not exceed max_ttl_seconds (120)")
        current = await client.get("/admin/retention", headers=ADMIN)
        assert current.json()["default_ttl_seconds"] == 60  # unchanged


async def test_apscheduler_sweeper_deletes_within_its_interval() -> None:
    interval = 0.3
    async with running_app(make_settings(ttl=1, sweep_interval=interval)) as client:
        await make_image(client)
        assert (await stats(client))["count"] == 1
        expired_at = time.time() + 1
        deadline = expired_at + 30  # a guard against hanging, not a timing assertion
        while (await stats(client))["count"] and time.time() < deadline:
            await asyncio.sleep(0.05)
        assert (await stats(client))["count"] == 0
        services = client.app.state.services  # type: ignore[attr-defined]
        # Physically removed by the scheduled sweep (its lag is measured on a fake clock in
        # tests/store/test_sweeper.py: a real-clock bound here would only measure the machine).
        assert services.sweeper.swept_total == 1


class AuditLines(logging.Handler):
    """The audit log as the service writes it: JSON lines."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonLineFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_a_retention_change_is_one_audit_line_with_who_old_and_new() -> None:
    audit = AuditLines()
    logger = logging.getLogger("imagegen.audit")
    logger.addHandler(audit)
    level = logger.level
    logger.setLevel(logging.INFO)  # the service's default level
    try:
        async with running_app(make_settings(ttl=60, max_ttl=120)) as client:
            response = await client.put("/admin/retention", headers=ADMIN,
                                        json={"default_ttl_seconds": 30})
            assert response.status_code == 200
            refused = await client.put("/admin/retention", headers=ADMIN,
                                       json={"default_ttl_seconds": 500})
            assert refused.status_code == 400
    finally:
        logger.removeHandler(audit)
        logger.setLevel(level)

    [line] = audit.lines  # the refused change is not audited
    assert line["logger"] == "imagegen.audit" and line["level"] == "info"
    actor = line["actor"]
    assert isinstance(actor, str) and actor.startswith("admin")
    old, new = str(line["event"]).removeprefix(f"retention changed by {actor}: old=").split(" new=")
    assert (json.loads(old)["default_ttl_seconds"], json.loads(new)["default_ttl_seconds"]) == (
        60, 30)
