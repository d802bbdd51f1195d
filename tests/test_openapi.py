"""GET /openapi.json describes exactly the routes the app serves."""

from __future__ import annotations

import httpx
from starlette.routing import Mount, Route


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
