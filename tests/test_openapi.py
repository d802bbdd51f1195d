"""GET /openapi.json describes exactly the routes the app serves."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.routing import Mount, Route

from imagegen.registry import embedded_spec
from tests.helpers import make_settings, running_app
from web.openapi import REQUEST_MODELS


def served_operations(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    operations = set()
    for route in app.routes:
        if isinstance(route, Mount):
            continue  # static files
        assert isinstance(route, Route)
        methods = set(route.methods or ())
        if "HEAD" in methods and "GET" in methods and route.path != "/i/{token}.{ext}":
            methods.discard("HEAD")  # Starlette adds HEAD to every GET
        operations |= {(route.path, method.lower()) for method in methods}
    return operations


async def test_document_matches_routes(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served_operations(client.app)  # type: ignore[attr-defined]


async def test_every_operation_has_responses(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for item in document["paths"].values():
        for operation in item.values():
            assert operation["responses"], operation["summary"]
            assert operation["summary"]


async def test_request_schemas_come_from_the_request_models(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for model in REQUEST_MODELS:
        assert set(schemas[model.__name__]["properties"]) == set(model.model_fields)


def non_null(prop: dict[str, Any]) -> dict[str, Any]:
    [branch] = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    return branch


async def test_served_limits_are_stated(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    spec = embedded_spec()
    openai = schemas["ImageGenerationRequest"]["properties"]
    assert non_null(openai["n"])["maximum"] == spec.max_n  # as served, not the API's 8
    assert non_null(openai["num_inference_steps"])["maximum"] == spec.max_steps
    assert set(non_null(openai["size"])["enum"]) == {f"{w}x{h}" for w, h in spec.sizes}
    assert non_null(openai["ttl_seconds"])["maximum"] == 3600  # the model's default TTL
    assert non_null(openai["model"])["enum"] == [spec.name]
    assert "circle" in openai["prompt"]["description"]
    native = schemas["InferenceRequest"]["properties"]
    assert non_null(native["num_images"])["maximum"] == spec.max_n
    retention = schemas["RetentionUpdate"]["properties"]
    assert non_null(retention["default_ttl_seconds"])["maximum"] == 365 * 86400
    assert non_null(retention["default_ttl_seconds"])["minimum"] == 1


async def test_keys_auth_documents_its_refusals() -> None:
    async with running_app(make_settings(auth="keys")) as client:
        document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/images/generations"]["post"]
    assert {"401", "403", "429"} <= set(operation["responses"])
    assert operation["security"] == [{"bearer": []}]
