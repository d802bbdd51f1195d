"""One JSON line per request with metadata only."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from tests.helpers import CANARY, free_port, make_settings, running_app
from tests.test_faults import Faults, batch_behind_gate
from tests.test_privacy import wrap_with_errors
from web.app import create_app
from web.log_buffer import BatchingStreamHandler
from web.request_log import ALLOWED_FIELDS, JsonLineFormatter, configure_logging, new_request_id


async def test_one_line_with_metadata(client: httpx.AsyncClient,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    before = time.perf_counter()
    response = await client.post("/v1/images/generations", json={
        "prompt": "a red circle", "size": "32x32", "num_inference_steps": 2, "seed": 4})
    after = time.perf_counter()
    image_url = response.json()["data"][0]["url"]
    await client.get(image_url)
    records = [r for r in caplog.records if r.name == "imagegen.request"]
    lines = [json.loads(JsonLineFormatter().format(r)) for r in records]
    generation, fetch = lines[-2:]
    assert {key: generation[key] for key in ("level", "logger", "event", "method")} == {
        "level": "info", "logger": "imagegen.request", "event": "request", "method": "POST"}
    # Seconds since the epoch to the millisecond, as the record was made.
    assert abs(generation["time"] - records[-2].created) <= 0.0005
    # One id for the request: its header, its line, and the body the generation path made.
    assert generation["request_id"] == response.headers["x-request-id"]
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert generation["route"] == "/v1/images/generations" and generation["status"] == 200
    # Milliseconds, from the request's arrival to its answer: at least the device time in it,
    # at most what the client waited (both sides rounded).
    assert (generation["device_seconds"] * 1000 <= generation["duration_ms"] + 0.1
            <= (after - before) * 1000 + 0.2)
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


def json_lines(records: list[logging.LogRecord]) -> list[dict[str, object]]:
    return [json.loads(JsonLineFormatter().format(r)) for r in records]


async def test_an_unhandled_error_is_a_500_and_a_line_with_its_type_and_request_id(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # "square" makes the pipeline's prompt check raise on the event loop, with the prompt
    # in the message: no domain error handler catches it, the middleware does.
    async with running_app(wrap_pipeline=wrap_with_errors) as client:
        response = await client.post("/v1/images/generations", json={
            "prompt": f"two green squares {CANARY}", "size": "32x32", "num_inference_steps": 2})
    assert response.status_code == 500
    assert response.json() == {"error": {"message": "Internal error.", "type": "server_error",
                                         "param": None, "code": "internal_error"}}
    request_id = response.headers["x-request-id"]
    failure, line = json_lines([r for r in caplog.records if r.name == "imagegen.request"])
    assert failure.pop("time")
    assert failure == {"level": "error", "logger": "imagegen.request", "event": "unhandled error",
                       "error_type": "RuntimeError", "request_id": request_id}
    assert line["level"] == "info" and line["request_id"] == request_id
    assert (line["method"], line["route"], line["status"]) == (
        "POST", "/v1/images/generations", 500)
    assert CANARY not in caplog.text


async def test_an_out_of_memory_retry_is_a_warning_with_the_batch_size(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    faults = Faults()
    async with running_app(make_settings(), wrap_pipeline=faults) as client:
        faults.pipeline.oom_above = 2
        responses = await batch_behind_gate(client, faults.pipeline,
                                            [{"seed": seed} for seed in range(4)])
    assert [r.status_code for r in responses] == [200] * 4
    retries = [line for line in json_lines(caplog.records)
               if line["event"] == "out of memory; retrying at a smaller batch"]
    assert [(line["level"], line["batch_size"]) for line in retries] == [("warning", 4)]


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """A stand-in for the process's stdout and stderr; the logging set-up is put back after.

    configure_logging changes process-wide logging, and handlers write to the streams as
    they were when made: the test redirects both to this buffer then (pytest swaps them at
    each phase).
    """
    buffer = io.StringIO()
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "apscheduler", "httpx",
             "httpcore"]
    loggers = [logging.getLogger(name or None) for name in names]
    saved = [(lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    switches = (logging._srcfile, logging.logThreads, logging.logProcesses,
                logging.logMultiprocessing)
    yield buffer
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchingStreamHandler):
            handler.close()  # stops its flush thread
    for lg, (handlers, level, propagate, disabled) in zip(loggers, saved, strict=True):
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled
    (logging._srcfile, logging.logThreads, logging.logProcesses,
     logging.logMultiprocessing) = switches


def test_configure_logging_takes_a_level_by_name_and_refuses_an_unknown_one(
        output: io.StringIO) -> None:
    with contextlib.redirect_stderr(output):
        configure_logging("debug")
    root = logging.getLogger()
    first = root.handlers[0]
    assert root.level == logging.DEBUG
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging("loud")
    first.close()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_configured_logging_is_json_lines_on_stderr_and_takes_over_uvicorns(
        output: io.StringIO, level: str) -> None:
    port = free_port()
    # Making a uvicorn Config sets up uvicorn's own logging, as the `uvicorn` command does
    # before it loads an app: plain-text handlers on stderr, and an access log on stdout
    # that prints whole URLs, capability tokens included. Ours is configured after it.
    with contextlib.redirect_stderr(output), contextlib.redirect_stdout(output):
        config = uvicorn.Config(create_app(make_settings(port=port)), host="127.0.0.1",
                                port=port, lifespan="on")
        configure_logging(level)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            created = http.post("/v1/images/generations", json={
                "prompt": "a red circle", "size": "32x32", "num_inference_steps": 2})
            image_url = created.json()["data"][0]["url"]
            assert http.get(image_url).status_code == 200
    finally:
        server.should_exit = True
        thread.join(30)
    logging.getLogger().handlers[0].flush()
    printed = output.getvalue()
    lines = [json.loads(line) for line in printed.splitlines()]  # every line is one JSON object
    token = image_url.rsplit("/", 1)[1].split(".")[0]
    assert token not in printed
    requests = [(line["level"], line["method"], line["route"], line["status"]) for line in lines
                if line["logger"] == "imagegen.request"]
    generation = ("info", "POST", "/v1/images/generations", 200)
    fetch = ("debug", "GET", "/i/{token}.{ext}", 200)  # only at DEBUG
    assert requests == ([generation, fetch] if level == "DEBUG" else [generation])
    assert lines[[line["logger"] for line in lines].index("imagegen.request")][
        "request_id"] == created.headers["x-request-id"]
    # uvicorn's start-up lines come through our handler, once each.
    running = [line for line in lines if line["event"].startswith("Uvicorn running on")]
    assert [(line["logger"], line["level"]) for line in running] == [("uvicorn.error", "info")]
    # Left out even at DEBUG: APScheduler's line per sweep (every few seconds), and the URL
    # of every call httpx makes (webhook URLs are their subscribers' secrets), here the
    # test's own calls.
    assert not [line for line in lines
                if str(line["logger"]).startswith(("apscheduler", "httpx", "httpcore"))]
