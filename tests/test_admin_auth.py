"""Admin routes: off without a configured token; 401 without one, 403 with a wrong one."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.helpers import ADMIN_TOKEN, make_settings, running_app
from web.app import create_app

ROUTES = [("GET", "/admin/retention"), ("PUT", "/admin/retention"), ("GET", "/admin/stats"),
          ("POST", "/admin/models/shapes/load"), ("POST", "/admin/models/shapes/offload")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_missing_and_wrong_token(client: httpx.AsyncClient, method: str, path: str) -> None:
    body = {"default_ttl_seconds": 5}
    missing = await client.request(method, path, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = await client.request(method, path, json=body,
                                 headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403
    policy = await client.get("/admin/retention",
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert policy.json()["default_ttl_seconds"] != 5  # nothing changed


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_admin_is_off_without_a_configured_token(method: str, path: str) -> None:
    async with running_app(make_settings(admin_token=None)) as client:
        response = await client.request(method, path, json={},
                                        headers={"Authorization": "Bearer anything"})
        assert response.status_code == 404


async def test_retention_round_trip(client: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"default_ttl_seconds": 120, "max_ttl_seconds": 7200,
            "models": {"shapes": {"default_ttl_seconds": 30}}}
    put = await client.put("/admin/retention", headers=headers, json=body)
    assert put.status_code == 200
    got = (await client.get("/admin/retention", headers=headers)).json()
    assert got["default_ttl_seconds"] == 120 and got["max_ttl_seconds"] == 7200
    assert got["models"]["shapes"]["default_ttl_seconds"] == 30
    assert got["apply_to_existing"] is False
    image = await client.post("/v1/images/generations", json={
        "prompt": "a red circle", "size": "32x32", "num_inference_steps": 2})
    data = image.json()
    # created is whole seconds, taken after the image was stored.
    assert 29 <= data["data"][0]["expires_at"] - data["created"] <= 31


@pytest.mark.parametrize("body", [
    {"default_ttl_seconds": "long"}, {"default_ttl_seconds": -1}, {"nonsense": 1},
    {"models": {"shapes": {"default_ttl_seconds": 10**9}}}, {"apply_to_existing": "yes"},
])
async def test_bad_retention_bodies(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await client.put("/admin/retention", headers=headers, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(("authorization", "status"), [
    (f"Bearer {ADMIN_TOKEN[:-1]}", 403),  # a prefix of the token
    (f"Bearer {ADMIN_TOKEN[:1]}", 403),
    (f"Bearer {ADMIN_TOKEN}x", 403),  # the token and more
    (f"Bearer {ADMIN_TOKEN.upper()}", 403),
    (f"Basic {ADMIN_TOKEN}", 401),  # the right secret under another scheme
    (f"Token {ADMIN_TOKEN}", 401),
    (f"Bearerx {ADMIN_TOKEN}", 401),
    (ADMIN_TOKEN, 401),  # no scheme at all
    ("Bearer", 401),
    ("Bearer ", 401),
    ("", 401),
])
async def test_only_the_whole_token_as_a_bearer_is_admin(
        client: httpx.AsyncClient, authorization: str, status: int) -> None:
    refused = await client.get("/admin/stats", headers={"Authorization": authorization})
    changed = await client.put("/admin/retention", headers={"Authorization": authorization},
                               json={"default_ttl_seconds": 5})
    assert (refused.status_code, changed.status_code) == (status, status)
    assert refused.json() == {"error": {
        "message": "The admin token is not valid.", "type": "permission_error", "param": None,
        "code": "forbidden"} if status == 403 else {
        "message": "An admin bearer token is required.", "type": "authentication_error",
        "param": None, "code": "unauthorized"}}
    policy = await client.get("/admin/retention",
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert policy.json()["default_ttl_seconds"] != 5  # nothing changed


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_scheme_is_case_insensitive(client: httpx.AsyncClient, scheme: str) -> None:
    response = await client.get("/admin/stats",
                                headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"})
    assert response.status_code == 200


async def test_a_client_without_an_address_is_audited_as_unknown(
        caplog: pytest.LogCaptureFixture) -> None:
    # A server on a Unix socket gives no client address; the change is still made and audited.
    caplog.set_level(logging.INFO, logger="imagegen.audit")
    app = create_app(make_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=None)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            moved = await client.post("/admin/models/shapes/offload",
                                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert moved.status_code == 200
    [record] = [r for r in caplog.records if r.name == "imagegen.audit"]
    assert record.getMessage() == "model shapes: offload by admin@unknown"
