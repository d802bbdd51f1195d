"""What the admin routes answer and audit: /admin/stats, retention changes, model moves.

Every field an operator reads is asserted by name and value, every refusal as the whole
error object (the message names the field, `param` is that field), and every change as
its one audit line, as the JSON log formatter writes it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from tests.helpers import ADMIN_TOKEN, FakeClock, make_settings, running_app
from web.request_log import JsonLineFormatter

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ACTOR = "admin@127.0.0.1"  # httpx's ASGI transport connects from 127.0.0.1
FAST = {"prompt": "a red circle", "size": "32x32", "num_inference_steps": 2}


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The audit records as the JSON formatter prints them, without their time."""
    lines = [json.loads(JsonLineFormatter().format(record)) for record in caplog.records
             if record.name == "imagegen.audit"]
    for line in lines:
        del line["time"]
    return lines


async def test_stats_report_the_store_the_sweeper_and_the_devices() -> None:
    clock = FakeClock()
    settings = make_settings(ttl=60, sweep_interval=3600, store_max_bytes=10_000_000)
    async with running_app(settings, clock=clock) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        kept = await client.post("/v1/images/generations", json=FAST)
        short = await client.post("/v1/images/generations", json={**FAST, "ttl_seconds": 10})
        clock.tick(11)
        assert (await client.get(short.json()["data"][0]["url"])).status_code == 404
        assert await services.sweeper.run_once() == 1  # one second after it expired

        response = await client.get("/admin/stats", headers=ADMIN)
        assert response.status_code == 200
        held = len((await client.get(kept.json()["data"][0]["url"])).content)
        store = (await services.store.stats()).bytes
        assert store >= held > 0  # the kept image (sealed, so a little larger)
        assert response.json() == {
            "store": {"backend": "memory", "count": 1, "bytes": store,
                      "max_bytes": 10_000_000, "expired_reads": 1, "swept": 1},
            "sweeper": {"interval_seconds": 3600, "last_sweep_at": clock.now,
                        "last_max_lag_seconds": 1.0},
            "queue_depth": 0,
            "devices": services.engine.devices(),
            "worker_healthy": True,
            # From the clock the sweeper reads, so an operator can subtract last_sweep_at.
            "time": clock.now,
        }
        assert response.json()["devices"]["cpu"]["models"]["shapes"]["state"] == "resident"


async def test_a_retention_change_answers_the_policy_and_is_one_audit_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imagegen.audit")
    clock = FakeClock()
    async with running_app(make_settings(ttl=600, max_ttl=7200), clock=clock) as client:
        await client.post("/v1/images/generations", json=FAST)
        before = (await client.get("/admin/retention", headers=ADMIN)).json()
        caplog.clear()
        changed = await client.put("/admin/retention", headers=ADMIN, json={
            "default_ttl_seconds": 30, "models": {"shapes": {"max_ttl_seconds": 60}},
            "apply_to_existing": True})
        assert changed.status_code == 200, changed.text
        new = {"default_ttl_seconds": 30.0, "max_ttl_seconds": 7200.0,
               "models": {"shapes": {"default_ttl_seconds": 30.0, "max_ttl_seconds": 60.0}},
               "batch_retention_seconds": 3600.0}
        assert changed.json() == {**new, "apply_to_existing": True, "shortened": 1}
        assert (await client.get("/admin/retention", headers=ADMIN)).json() == {
            **new, "apply_to_existing": False}

        [line] = audit_lines(caplog)
        old = {key: value for key, value in before.items() if key != "apply_to_existing"}
        assert {key: line[key] for key in ("level", "logger", "actor")} == {
            "level": "info", "logger": "imagegen.audit", "actor": ACTOR}
        who, _, values = line.pop("event").partition(": ")
        assert who == f"retention changed by {ACTOR}"
        old_text, _, new_text = values.removeprefix("old=").partition(" new=")
        assert (json.loads(old_text), json.loads(new_text)) == (old, new)
        assert set(line) == {"level", "logger", "actor"}  # and nothing else

        kept = await client.put("/admin/retention", headers=ADMIN,
                                json={"default_ttl_seconds": 20})
        assert kept.json()["apply_to_existing"] is False and kept.json()["shortened"] == 0


async def test_a_policy_naming_a_model_not_served_is_refused_and_changes_nothing(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imagegen.audit")
    before = (await client.get("/admin/retention", headers=ADMIN)).json()
    refused = await client.put("/admin/retention", headers=ADMIN, json={
        "default_ttl_seconds": 5, "models": {"shapes": {}, "nope": {"default_ttl_seconds": 5}}})
    assert refused.status_code == 400
    assert refused.json() == {"error": {
        "message": "'models' names 1 model(s) this service does not serve; "
                   "GET /v1/models lists them.",
        "type": "invalid_request_error", "param": "models", "code": "invalid_value"}}
    assert (await client.get("/admin/retention", headers=ADMIN)).json() == before
    assert audit_lines(caplog) == []


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"default_ttl_seconds": 500}, "default_ttl_seconds",
     "default_ttl_seconds (500) must not exceed max_ttl_seconds (120)"),
    ({"max_ttl_seconds": 30}, "default_ttl_seconds",
     "default_ttl_seconds (60) must not exceed max_ttl_seconds (30)"),
    ({"models": {"shapes": {"default_ttl_seconds": 100, "max_ttl_seconds": 50}}},
     "models.shapes.default_ttl_seconds",
     "models.shapes.default_ttl_seconds (100) must not exceed "
     "models.shapes.max_ttl_seconds (50)"),
])
async def test_a_policy_that_contradicts_itself_is_refused_naming_the_field(
        body: dict[str, object], param: str, message: str) -> None:
    async with running_app(make_settings(ttl=60, max_ttl=120)) as client:
        refused = await client.put("/admin/retention", headers=ADMIN, json=body)
        assert refused.status_code == 400
        assert refused.json() == {"error": {"message": message, "type": "invalid_request_error",
                                            "param": param, "code": "invalid_value"}}
        current = (await client.get("/admin/retention", headers=ADMIN)).json()
        assert (current["default_ttl_seconds"], current["max_ttl_seconds"],
                current["models"]) == (60, 120, {})


async def test_model_moves_answer_the_state_and_are_audited(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imagegen.audit")
    offloaded = await client.post("/admin/models/shapes/offload", headers=ADMIN)
    assert (offloaded.status_code, offloaded.json()) == (200, {"id": "shapes",
                                                               "state": "offloaded"})
    loaded = await client.post("/admin/models/shapes/load", headers=ADMIN)
    assert (loaded.status_code, loaded.json()) == (200, {"id": "shapes", "state": "resident"})
    assert audit_lines(caplog) == [
        {"level": "info", "logger": "imagegen.audit", "event": f"model shapes: {action} by {ACTOR}",
         "model": "shapes", "action": action, "actor": ACTOR}
        for action in ("offload", "load")]
