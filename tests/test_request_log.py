"""One JSON line per request with metadata only."""

from __future__ import annotations

import json
import logging
import os
import re

import httpx
import pytest

from web.request_log import ALLOWED_FIELDS, JsonLineFormatter, new_request_id


async def test_one_line_with_metadata(client: httpx.AsyncClient,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = await client.post("/v1/images/generations", json={
        "prompt": "a red circle", "size": "32x32", "num_inference_steps": 2, "seed": 4})
    image_url = response.json()["data"][0]["url"]
    await client.get(image_url)
    lines = [json.loads(JsonLineFormatter().format(r)) for r in caplog.records
             if r.name == "imagegen.request"]
    generation, fetch = lines[-2:]
    assert generation["request_id"] == response.headers["x-request-id"]
    assert generation["route"] == "/v1/images/generations" and generation["status"] == 200
    assert generation["model"] == "shapes" and generation["seed"] == 4
    assert generation["steps"] == 2 and generation["width"] == 32
    assert generation["device_seconds"] > 0 and generation["cost"] > 0
    assert set(generation) <= ALLOWED_FIELDS | {"time", "level", "logger", "event", "request_id",
                                                "method", "route", "status", "duration_ms"}
    # The image path holds the capability token: only its route template is logged.
    token = image_url.rsplit("/", 1)[1].split(".")[0]
    assert fetch["route"] == "/i/{token}.{ext}"
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert all(token not in r.getMessage() and token not in str(r.__dict__)
               for r in server_records)


async def test_fields_outside_the_whitelist_are_refused() -> None:
    from starlette.requests import Request

    from web.request_log import log_fields

    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    with pytest.raises(ValueError, match="not loggable"):
        log_fields(request, prompt="secret")


async def test_successful_image_fetches_are_logged_at_debug_and_failures_at_info(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = await client.post("/v1/images/generations", json={
        "prompt": "a red circle", "size": "32x32", "num_inference_steps": 2})
    url = response.json()["data"][0]["url"]
    await client.get(url)
    await client.delete(url)
    await client.get(url)
    lines = [(r.levelname, r.__dict__["fields"]) for r in caplog.records
             if r.name == "imagegen.request"]
    levels = [(fields["method"], fields["status"], level) for level, fields in lines
              if "/i/" in fields["route"]]
    assert levels == [("GET", 200, "DEBUG"), ("DELETE", 204, "INFO"), ("GET", 404, "INFO")]


def test_request_ids_are_unique_also_across_forked_workers() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # a worker forked from this process: its ids must not repeat ours
        os.write(writer, new_request_id().encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    from_child = os.read(reader, 100).decode()
    os.close(reader)
    assert re.fullmatch(r"req_[0-9a-f]{24}", from_child)
    assert from_child != new_request_id()
