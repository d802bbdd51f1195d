"""Bad input gets a clear 4xx naming the field: never a 500, never an echo of the prompt."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import CANARY, make_settings, running_app

GOOD = {"prompt": f"a red circle {CANARY}", "size": "32x32", "num_inference_steps": 2}

CASES = [
    ({"size": "32x32"}, 400, "prompt"),
    ({**GOOD, "prompt": ""}, 400, "prompt"),
    ({**GOOD, "prompt": "   "}, 400, "prompt"),
    ({**GOOD, "prompt": 42}, 400, "prompt"),
    ({**GOOD, "prompt": "x" * 4001}, 400, "prompt"),
    ({**GOOD, "n": 0}, 400, "n"),
    ({**GOOD, "n": 100}, 400, "n"),
    ({**GOOD, "n": "two"}, 400, "n"),
    ({**GOOD, "n": 1.5}, 400, "n"),
    ({**GOOD, "n": True}, 400, "n"),
    ({**GOOD, "size": "999x999"}, 400, "size"),
    ({**GOOD, "size": "big"}, 400, "size"),
    ({**GOOD, "size": 32}, 400, "size"),
    ({**GOOD, "model": "nope"}, 404, "model"),
    ({**GOOD, "model": 7}, 400, "model"),
    ({**GOOD, "response_format": "gif"}, 400, "response_format"),
    ({**GOOD, "output_format": "bmp"}, 400, "output_format"),
    ({**GOOD, "seed": -1}, 400, "seed"),
    ({**GOOD, "seed": "abc"}, 400, "seed"),
    ({**GOOD, "num_inference_steps": 0}, 400, "num_inference_steps"),
    ({**GOOD, "num_inference_steps": 10_000}, 400, "num_inference_steps"),
    ({**GOOD, "guidance_scale": "high"}, 400, "guidance_scale"),
    ({**GOOD, "guidance_scale": 1e9}, 400, "guidance_scale"),
    ({**GOOD, "negative_prompt": ["a"]}, 400, "negative_prompt"),
    ({**GOOD, "ttl_seconds": 0}, 400, "ttl_seconds"),
    ({**GOOD, "ttl_seconds": 10**12}, 400, "ttl_seconds"),
]


@pytest.mark.parametrize(("body", "status", "param"), CASES)
async def test_openai_field_errors(client: httpx.AsyncClient, body: dict[str, object],
                                   status: int, param: str) -> None:
    response = await client.post("/v1/images/generations", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert param in error["message"]
    assert CANARY not in response.text


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "a red circle", "width": 33, "height": 32}, "width"),
    ({"prompt": "a red circle", "num_images": 9}, "num_images"),
    ({"prompt": "a red circle", "output": "file"}, "output"),
    ({"width": 32}, "prompt"),
])
async def test_native_field_errors(client: httpx.AsyncClient, body: dict[str, object],
                                   param: str) -> None:
    response = await client.post("/v1/inference/shapes", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_native_unknown_model(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/inference/nope", json={"prompt": "a red circle"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_body_shape_errors(client: httpx.AsyncClient) -> None:
    url = "/v1/images/generations"
    json_type = {"content-type": "application/json"}
    not_json = await client.post(url, content=b"{nope", headers=json_type)
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    array = await client.post(url, json=[1, 2])
    assert array.status_code == 400
    text = await client.post(url, content=b"prompt=x", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    binary = await client.post(url, content=b"\xff\xfe\x00", headers={
        "content-type": "application/json"})
    assert binary.status_code == 400


async def test_huge_body_is_413_without_reading_it_all() -> None:
    async with running_app(make_settings(max_body_bytes=1024)) as client:
        big = b'{"prompt": "' + b"a" * 4096 + b'"}'
        declared = await client.post("/v1/images/generations", content=big,
                                     headers={"content-type": "application/json"})
        assert declared.status_code == 413

        async def stream():  # no content-length: the cap must hold while streaming
            for _ in range(64):
                yield b"a" * 1024

        streamed = await client.post("/v1/images/generations", content=stream(),
                                     headers={"content-type": "application/json"})
        assert streamed.status_code == 413


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"message": "Not found.", "type": "invalid_request_error",
                                        "param": None, "code": "not_found"}}
    wrong = await client.get("/v1/images/generations")
    assert wrong.status_code == 405
    assert wrong.json() == {"error": {"message": "Method not allowed.",
                                      "type": "invalid_request_error", "param": None,
                                      "code": "method_not_allowed"}}
    assert wrong.headers["allow"] == "POST"


async def test_a_method_static_files_refuse_names_what_they_take(
        client: httpx.AsyncClient) -> None:
    refused = await client.post("/static/demo.css")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"
    assert refused.json()["error"]["code"] == "method_not_allowed"
    assert (await client.head("/static/demo.css")).status_code == 200


@pytest.mark.parametrize(("method", "path", "message", "code"), [
    ("GET", "/v1/jobs/job_nope", "The job does not exist or has expired.", "job_not_found"),
    ("DELETE", "/v1/jobs/job_nope", "The job does not exist or has expired.", "job_not_found"),
    ("GET", "/v1/batches/batch_nope", "This batch does not exist or its retention has ended.",
     "batch_not_found"),
    ("DELETE", "/v1/loras/nope", "The adapter does not exist or has expired.",
     "lora_not_found"),
])
async def test_domain_errors_answer_their_whole_error_object(
        client: httpx.AsyncClient, method: str, path: str, message: str, code: str) -> None:
    # Raised by the service as domain errors; the error table gives the status and type,
    # the error itself its message and code.
    response = await client.request(method, path)
    assert response.status_code == 404
    assert response.json() == {"error": {"message": message, "type": "invalid_request_error",
                                         "param": None, "code": code}}


async def test_expired_or_unknown_image_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/i/notatoken.png")).status_code == 404
    assert (await client.get("/i/notatoken.gif")).status_code == 404
    assert (await client.delete("/i/notatoken.png")).status_code == 404


async def test_nothing_stored_survives_bad_requests(client: httpx.AsyncClient) -> None:
    good = await client.post("/v1/images/generations", json=GOOD)
    url = good.json()["data"][0]["url"]
    before = (await client.get(url)).content
    for body, _, _ in CASES:
        await client.post("/v1/images/generations", json=body)
    assert (await client.get(url)).content == before
