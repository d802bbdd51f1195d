"""No content and no capability in logs on the async-job path the demo page uses.

POST /v1/jobs, its event stream, its status and its cancel, with the root logger
at DEBUG: no prompt (a DEBUG line is as much a leak as an INFO one), no raw job
id (it is a capability, like an image URL: the log carries its hash), no image
token, no idempotency key.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.helpers import CANARY, running_app
from tests.privacy.support import captured_logs, encode, solid
from tests.test_privacy import wrap_with_errors

PROMPT = f"a red circle on a blue background {CANARY}"
FAST = {"width": 32, "height": 32, "num_inference_steps": 2}
IDEMPOTENCY_KEY = f"key-{CANARY}"


def events_of(stream: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a finished text/event-stream body."""
    events = []
    for block in stream.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines()
                     if ": " in line and not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_jobs_and_their_event_streams_log_no_content_and_no_job_id(
        capfd: pytest.CaptureFixture[str]) -> None:
    init = base64.b64encode(encode(solid((30, 170, 60)), "PNG", with_canary=True)).decode()
    bodies = [
        {"prompt": PROMPT, **FAST, "negative_prompt": f"blue {CANARY}", "previews": True},
        {"prompt": PROMPT, **FAST, "init_image": init, "strength": 0.5},
    ]
    # Fails in the worker, quoting the prompt; alone, since it fails the batch it is in.
    failing = {"prompt": f"a big diamond {CANARY}", **FAST}
    with captured_logs() as logs:
        async with running_app(wrap_pipeline=wrap_with_errors) as client:
            created = [await client.post("/v1/jobs", json=body) for body in bodies]
            replayed = await client.post("/v1/jobs", json=bodies[0],
                                         headers={"Idempotency-Key": IDEMPOTENCY_KEY})
            replayed_again = await client.post("/v1/jobs", json=bodies[0],
                                               headers={"Idempotency-Key": IDEMPOTENCY_KEY})
            refused = await client.post("/v1/jobs", json={"prompt": PROMPT, "width": CANARY})
            ids = [response.json()["id"] for response in [*created, replayed]]
            streams = [await client.get(f"/v1/jobs/{job_id}/events") for job_id in ids]
            created.append(await client.post("/v1/jobs", json=failing))
            ids.append(created[-1].json()["id"])
            streams.append(await client.get(f"/v1/jobs/{ids[-1]}/events"))
            views = [await client.get(f"/v1/jobs/{job_id}") for job_id in ids]
            cancels = [await client.delete(f"/v1/jobs/{job_id}") for job_id in ids]
            unknown = await client.get(f"/v1/jobs/{CANARY}/events")
    out, err = capfd.readouterr()

    assert [r.status_code for r in [*created, replayed, replayed_again, refused]] == [
        202, 202, 202, 202, 202, 400]
    assert replayed_again.json()["id"] == ids[2]
    ends = [events_of(stream)[-1][0] for stream in streams]
    assert ends == ["succeeded", "succeeded", "succeeded", "failed"]
    assert any(name == "progress" for name, _ in events_of(streams[0]))
    assert [r.status_code for r in views] == [200] * 4
    assert [r.status_code for r in cancels] == [409] * 4
    assert unknown.status_code == 404
    urls = [image["url"] for view in views if view.json()["result"]
            for image in view.json()["result"]["images"]]
    tokens = [url.rsplit("/", 1)[1].split(".")[0] for url in urls]
    assert len(tokens) == 3

    secrets = [CANARY, IDEMPOTENCY_KEY, *ids, *tokens]
    leaks = [(secret, text) for text in logs.texts for secret in secrets if secret in text]
    assert leaks == []
    assert not [secret for secret in secrets if secret in out or secret in err]
    # The capture saw every request and the failure, so it would have seen a leak.
    request_lines = [getattr(r, "fields", {}) for r in logs.records
                     if r.name == "imagegen.request" and r.msg == "request"]
    job_routes = [fields["route"] for fields in request_lines
                  if fields["route"].startswith("/v1/jobs")]
    assert len(job_routes) == 6 + 3 * len(ids) + 1
    assert {getattr(r, "error_type", None) for r in logs.records} >= {"RuntimeError"}
    assert [fields for fields in request_lines if "job_id_hash" in fields]  # hashes, not ids
