"""Hostile bodies (issue 14's cases) get a 4xx naming the field: never a 500, never a hang."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from imagegen.adapters import AdapterChoice
from service.bulk.state import BulkLine
from service.generation import GenerationInput
from tests.helpers import ADMIN_TOKEN, CANARY, running_app

PROMPT = f"a red circle {CANARY}"
JSON = {"content-type": "application/json"}
JSONL = {"content-type": "application/jsonl"}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}", **JSON}
HUGE_INT = "9" * 5000
NON_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", HUGE_INT, "-" + HUGE_INT]
DEEP = "[" * 20_000 + "]" * 20_000


# One app for the module: these requests are refused before any generation.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app() as c:
        yield c


def raw_object(fields: dict[str, object], name: str, raw_value: str) -> bytes:
    """A JSON object with one member written as raw text (what json.dumps cannot make)."""
    body = json.dumps({**fields, name: 0})
    return body.replace(f'"{name}": 0', f'"{name}": {raw_value}').encode()


# (path, fields of a valid body, integer fields)
SURFACES = [
    ("/v1/images/generations", {"prompt": PROMPT, "size": "32x32"},
     ["n", "seed", "num_inference_steps", "ttl_seconds"]),
    ("/v1/inference/shapes", {"prompt": PROMPT, "width": 32, "height": 32},
     ["num_images", "seed", "num_inference_steps", "ttl_seconds", "width", "height"]),
    ("/v1/jobs", {"prompt": PROMPT, "width": 32, "height": 32},
     ["num_images", "seed", "num_inference_steps", "ttl_seconds", "width", "height"]),
]
INT_CASES = [(path, fields, name, value) for path, fields, names in SURFACES
             for name in names for value in NON_NUMBERS]


@pytest.mark.parametrize(("path", "fields", "name", "value"), INT_CASES)
async def test_non_numbers_in_integer_fields(client: httpx.AsyncClient, path: str,
                                             fields: dict[str, object], name: str,
                                             value: str) -> None:
    response = await client.post(path, content=raw_object(fields, name, value), headers=JSON)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == name
    assert name in response.json()["error"]["message"]
    assert CANARY not in response.text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400"])
async def test_non_finite_guidance(client: httpx.AsyncClient, value: str) -> None:
    body = raw_object({"prompt": PROMPT}, "guidance_scale", value)
    response = await client.post("/v1/images/generations", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "guidance_scale"


@pytest.mark.parametrize(("name", "value"), [
    ("prompt", DEEP), ("n", DEEP), ("prompt", '"\\ud800"'), ("prompt", '"a \\udc80 b"'),
    ("size", '"\\u00b2x\\u00b2"'), ("size", json.dumps("١٢٨x١٢٨")), ("size", '"0032x32"'),
    ("model", '"\\ud83d"'),
])
async def test_parser_breakers_name_their_field(client: httpx.AsyncClient, name: str,
                                                value: str) -> None:
    body = raw_object({"prompt": PROMPT, "size": "32x32"}, name, value)
    response = await client.post("/v1/images/generations", content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == name


async def test_deep_nesting_in_an_unknown_field_is_a_400(client: httpx.AsyncClient) -> None:
    body = raw_object({"prompt": PROMPT}, "extra", DEEP)
    response = await client.post("/v1/images/generations", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert response.json()["error"]["param"] is None  # an unknown key is not echoed


@pytest.mark.parametrize("body", [DEEP, "[]", "null", '"x"', "1e400", HUGE_INT])
async def test_non_object_bodies(client: httpx.AsyncClient, body: str) -> None:
    response = await client.post("/v1/images/generations", content=body, headers=JSON)
    assert response.status_code == 400


@pytest.mark.parametrize("value", NON_NUMBERS + [DEEP, '"\\ud800"'])
async def test_batch_lines_name_line_and_field(client: httpx.AsyncClient, value: str) -> None:
    def line(custom_id: str) -> str:
        return json.dumps({"custom_id": custom_id, "body": {"prompt": PROMPT, "width": 32,
                                                            "height": 32}})

    bad = line("b").replace('"width": 32', f'"width": {value}')
    response = await client.post("/v1/batches", content=f"{line('a')}\n{bad}", headers=JSONL)
    assert response.status_code == 400, response.text
    assert "line 2 (body" in response.json()["error"]["message"]
    assert CANARY not in response.text


async def test_too_many_batch_lines_refused_before_parsing(client: httpx.AsyncClient) -> None:
    junk = b"{" * 4000 + b"\n"
    response = await client.post("/v1/batches", content=junk * 1001, headers=JSONL)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"


@pytest.mark.parametrize("body", [
    {"default_ttl_seconds": 1e12}, {"max_ttl_seconds": 1e12}, {"default_ttl_seconds": 5e-324},
    {"batch_retention_seconds": 0.5}, {"batch_retention_seconds": 1e12},
    {"models": {"no-such-model": {"default_ttl_seconds": 60}}},
    {"models": {"shapes": {"max_ttl_seconds": 1e12}}},
])
async def test_retention_bounds(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    before = (await client.get("/admin/retention", headers=ADMIN)).json()
    response = await client.put("/admin/retention", json=body, headers=ADMIN)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].split(".")[0] == next(iter(body))
    assert "no-such-model" not in response.text
    assert (await client.get("/admin/retention", headers=ADMIN)).json() == before


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400", HUGE_INT])
async def test_retention_non_numbers(client: httpx.AsyncClient, value: str) -> None:
    body = raw_object({}, "default_ttl_seconds", value)
    response = await client.put("/admin/retention", content=body, headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "default_ttl_seconds"


async def test_year_long_retention_still_serves_images(client: httpx.AsyncClient) -> None:
    year = 365 * 86400
    policy = {"default_ttl_seconds": year, "max_ttl_seconds": year}
    assert (await client.put("/admin/retention", json=policy, headers=ADMIN)).status_code == 200
    try:
        made = await client.post("/v1/images/generations", json={
            "prompt": "a red circle", "size": "32x32", "num_inference_steps": 2})
        assert made.status_code == 200
        image = await client.get(made.json()["data"][0]["url"])
        assert image.status_code == 200 and image.headers["expires"]
    finally:
        await client.put("/admin/retention", json={"default_ttl_seconds": 3600,
                                                   "max_ttl_seconds": 86400}, headers=ADMIN)


@pytest.mark.parametrize("last_event_id", ["²", "١٢", "é", "9" * 40, "-1"])
async def test_odd_last_event_ids(client: httpx.AsyncClient, last_event_id: str) -> None:
    made = await client.post("/v1/jobs", json={"prompt": "a red circle", "width": 32,
                                               "height": 32, "num_inference_steps": 2})
    assert made.status_code == 202
    job = made.json()["id"]
    headers = [(b"last-event-id", last_event_id.encode("utf-8"))]
    async with client.stream("GET", f"/v1/jobs/{job}/events", headers=headers) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: succeeded"):
                break


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/v1/jobs/job_x", "DELETE, GET, HEAD"),
    ("POST", "/v1/batches/batch_x", "DELETE, GET, HEAD"),
    ("POST", "/admin/retention", "GET, HEAD, PUT"),
    ("PATCH", "/i/token.png", "DELETE, GET, HEAD"),
    ("GET", "/v1/jobs", "POST"),
])
async def test_405_allow_is_truthful(client: httpx.AsyncClient, method: str, path: str,
                                     allow: str) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow


async def test_json_with_urls_is_not_cached(client: httpx.AsyncClient) -> None:
    made = await client.post("/v1/images/generations", json={
        "prompt": "a red circle", "size": "32x32", "num_inference_steps": 2})
    assert made.headers["cache-control"] == "no-store"
    job = await client.post("/v1/jobs", json={"prompt": "a red circle", "width": 32,
                                              "height": 32, "num_inference_steps": 2})
    assert job.headers["cache-control"] == "no-store"
    status = await client.get(f"/v1/jobs/{job.json()['id']}")
    assert status.headers["cache-control"] == "no-store"
    # An image keeps its own caching headers.
    image = await client.get(made.json()["data"][0]["url"])
    assert image.headers["cache-control"].startswith("private, max-age=")


async def test_batch_line_with_an_unknown_adapter_is_refused_at_submit(
        client: httpx.AsyncClient) -> None:
    line = {"custom_id": "a", "body": {"prompt": PROMPT, "width": 32, "height": 32,
                                       "loras": [{"name": "no-such-adapter", "scale": 1}]}}
    response = await client.post("/v1/batches", content=json.dumps(line), headers=JSONL)
    assert response.status_code == 400, response.text
    assert "line 1 (body.loras)" in response.json()["error"]["message"]


async def test_a_sealed_batch_line_keeps_its_adapters() -> None:
    gen = GenerationInput(model="shapes", prompt="a red circle", negative_prompt=None, n=1,
                          width=32, height=32, steps=2, guidance=1.5, seed=7, ttl_seconds=None,
                          output_format="png", response_format="url",
                          loras=(AdapterChoice("pixel", 0.5),))
    line = BulkLine("a", gen)
    assert BulkLine.from_json(line.to_json()) == line


FORM_CASES = [("stream", value) for value in ["0", "1", "yes", "on", "True", ""]] + [
    ("loras", value) for value in ["null", "{}", '"pixel"', "1", ""]]


@pytest.mark.parametrize(("name", "value"), FORM_CASES)
async def test_form_fields_take_only_what_the_document_says(client: httpx.AsyncClient,
                                                           name: str, value: str) -> None:
    """A form's booleans are "true" or "false"; its `loras` is a JSON list, never null."""
    image = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(image, format="PNG")
    response = await client.post(
        "/v1/images/edits", data={"prompt": PROMPT, "size": "32x32", name: value},
        files={"image": ("image.png", image.getvalue(), "image/png")})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == name
