"""The privacy promises of DESIGN.md, each proven through the running app.

docs/privacy.md maps every promise to its test here. The detectors (audit
hook, log capture, network guard, metadata walkers) are in
tests/privacy/support.py, and tests/privacy/test_detectors.py shows each one
catching a violation.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imagegen.pipelines.base import PipelineOutput, TextToImagePipeline
from tests.helpers import ADMIN_TOKEN, CANARY, FakeClock, free_port, make_settings, running_app
from tests.privacy.support import (
    WRITES,
    NetworkGuard,
    big_png,
    captured_logs,
    encode,
    metadata_in,
    solid,
)

PROMPT = f"a red circle on a blue background {CANARY}"
FAST = {"size": "32x32", "num_inference_steps": 2}
NATIVE_FAST = {"width": 32, "height": 32, "num_inference_steps": 2}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REPO = Path(__file__).resolve().parent.parent
GENERATIONS = "/v1/images/generations"
NATIVE = "/v1/inference/shapes"
FORM = {"content-type": "multipart/form-data; boundary=privacy-boundary"}
JSON = {"content-type": "application/json"}


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def edit_files(image: bytes, mask: bytes | None = None) -> dict[str, Any]:
    files = {"image": ("image.png", image, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return files


def edit_fields(**fields: object) -> dict[str, str]:
    return {key: str(value) for key, value in {"prompt": PROMPT, **FAST, **fields}.items()}


async def post_edit(client: httpx.AsyncClient, image: bytes, mask: bytes | None = None,
                    **fields: object) -> httpx.Response:
    return await client.post("/v1/images/edits", data=edit_fields(**fields),
                             files=edit_files(image, mask))


def small_canary_png() -> bytes:
    return encode(solid((30, 170, 60)), "PNG", with_canary=True)


# -- 1. Inputs never touch disk ---------------------------------------------------------------


async def test_no_input_is_written_to_disk_during_generation_and_edits() -> None:
    big = big_png()
    width, height = Image.open(io.BytesIO(big)).size
    mask = encode(solid((255,), (width, height), "L"), "PNG")
    async with running_app() as client:
        # Every path once before recording, so lazy imports and pools already exist.
        warm_up = [await post_edit(client, small_canary_png()),
                   await client.post(NATIVE, json={"prompt": PROMPT, **NATIVE_FAST,
                                                   "init_image": data_url(small_canary_png())})]
        assert [r.status_code for r in warm_up] == [200, 200]
        with WRITES.recording() as writes:
            text = await client.post(GENERATIONS, json={"prompt": PROMPT, **FAST})
            edit = await post_edit(client, big, mask)
            native = await client.post("/v1/inference/shapes", json={
                "prompt": PROMPT, **NATIVE_FAST, "init_image": base64.b64encode(big).decode(),
                "mask_image": data_url(mask), "strength": 0.5})
            served = await client.get(text.json()["data"][0]["url"])
    assert [text.status_code, edit.status_code, native.status_code, served.status_code] == [
        200, 200, 200, 200]
    assert len(big) >= 5 * 1024 * 1024
    assert writes == []


# -- 3. No content in logs --------------------------------------------------------------------


class ContentInErrors:
    """The real pipeline, except that some prompts make it raise with the prompt in the message.

    "diamond" fails in the worker thread (sampling); "square" fails on the event
    loop (check_prompt), where no domain error handler catches it.
    """

    def __init__(self, inner: TextToImagePipeline) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def check_prompt(self, prompt: str) -> int:
        if "square" in prompt:
            raise RuntimeError(f"cannot check {prompt!r}")
        return self.inner.check_prompt(prompt)

    def __call__(self, prompts: list[str], **kwargs: Any) -> PipelineOutput:
        if any("diamond" in prompt for prompt in prompts):
            raise RuntimeError(f"sampling failed on {prompts!r}")
        return self.inner(prompts, **kwargs)


def wrap_with_errors(name: str, pipeline: TextToImagePipeline) -> TextToImagePipeline:
    return ContentInErrors(pipeline)  # type: ignore[return-value]


def multipart(parts: list[tuple[str, bytes]], boundary: str = "privacy-boundary") -> bytes:
    """A hand-made form body, so malformed ones can be built too."""
    chunks = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
              + data + b"\r\n" for name, data in parts]
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


# (method, path, request kwargs, expected status): the canary in every place a client can put it.
CONTENT_REQUESTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("POST", GENERATIONS, {"json": {"prompt": PROMPT, **FAST}}, 200),
    ("POST", GENERATIONS, {"json": {"prompt": "a red circle", "negative_prompt": f"blue {CANARY}",
                                    **FAST}}, 200),
    ("POST", "/v1/images/edits", {"data": edit_fields(), "files": edit_files(small_canary_png())},
     200),
    ("POST", NATIVE, {"json": {"prompt": PROMPT, **NATIVE_FAST,
                               "init_image": data_url(small_canary_png())}}, 200),
    # Malformed bodies and bad values that quote the canary.
    ("POST", GENERATIONS, {"content": f'{{"prompt": "{CANARY}", "size": '.encode(),
                           "headers": JSON}, 400),
    ("POST", GENERATIONS, {"json": {"prompt": PROMPT, "size": CANARY}}, 400),
    ("POST", GENERATIONS, {"json": {"prompt": CANARY}}, 400),
    ("POST", GENERATIONS, {"json": {"prompt": [CANARY]}}, 400),
    ("POST", GENERATIONS, {"json": {"prompt": PROMPT, "model": CANARY}}, 404),
    ("POST", GENERATIONS, {"json": {"prompt": PROMPT, "seed": CANARY}}, 400),
    ("POST", f"/v1/inference/{CANARY}", {"json": {"prompt": PROMPT}}, 404),
    ("POST", NATIVE, {"json": {"prompt": PROMPT, "init_image": f"{CANARY}!"}}, 400),
    ("POST", NATIVE, {"json": {"prompt": PROMPT, "init_image": data_url(CANARY.encode(),
                                                                        "text/plain")}}, 415),
    ("POST", "/v1/images/edits", {"data": edit_fields(),
                                  "files": edit_files(f"not an image {CANARY}".encode())}, 415),
    ("POST", "/v1/images/edits", {"content": multipart([("prompt", PROMPT.encode())])[:-4],
                                  "headers": FORM}, 400),
    ("POST", "/v1/images/edits", {"content": multipart([(CANARY, CANARY.encode() * 9000)]),
                                  "headers": FORM}, 413),
    ("POST", "/v1/images/edits", {"content": multipart([(CANARY, b"1"), (CANARY, b"2")]),
                                  "headers": FORM}, 400),
    ("POST", "/v1/images/edits", {"content": multipart([("prompt", b"\xff" + CANARY.encode())]),
                                  "headers": FORM}, 400),
    ("POST", "/v1/images/edits", {"data": edit_fields(n=CANARY),
                                  "files": edit_files(small_canary_png())}, 400),
    # Exceptions whose message holds the prompt: in the worker thread, and on the event loop.
    ("POST", GENERATIONS, {"json": {"prompt": f"a big diamond {CANARY}", **FAST}}, 500),
    ("POST", GENERATIONS, {"json": {"prompt": f"two green squares {CANARY}", **FAST}}, 500),
    # The canary in a URL path and a query string.
    ("GET", f"/i/{CANARY}.png", {}, 404),
    ("GET", f"/v1/models?q={CANARY}", {}, 200),
]


async def test_no_content_in_logs_output_or_error_responses(
        capfd: pytest.CaptureFixture[str]) -> None:
    with captured_logs() as logs:
        async with running_app(wrap_pipeline=wrap_with_errors) as client:
            responses = [await client.request(method, path, **kwargs)
                         for method, path, kwargs, _ in CONTENT_REQUESTS]
    out, err = capfd.readouterr()
    assert [r.status_code for r in responses] == [status for *_, status in CONTENT_REQUESTS]
    assert [r.url.path for r in responses if CANARY in r.text] == []
    assert [text for text in logs.texts if CANARY in text] == []
    assert CANARY not in out
    assert CANARY not in err
    # The capture saw both kinds of failure and every request, so it would have seen a leak.
    assert {getattr(r, "error_type", None) for r in logs.records} >= {"RuntimeError"}
    request_lines = [r for r in logs.records if r.name == "imagegen.request" and r.msg == "request"]
    assert len(request_lines) == len(CONTENT_REQUESTS)


def test_a_real_server_prints_no_content_and_no_token(tmp_path: Path) -> None:
    port = free_port()
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    env = {**os.environ, "IMAGEGEN_LOG_LEVEL": "DEBUG", "PYTHONPATH": str(REPO)}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=err)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            wait_until_ready(client, server)
            text = client.post(GENERATIONS, json={"prompt": PROMPT, **FAST})
            url = text.json()["data"][0]["url"]
            token = url.rsplit("/", 1)[1].split(".")[0]
            statuses = [
                text.status_code,
                client.get(url).status_code,
                client.post(GENERATIONS, json={"prompt": "a red circle",
                                               "negative_prompt": CANARY, **FAST}).status_code,
                client.post("/v1/images/edits", data=edit_fields(),
                            files=edit_files(small_canary_png())).status_code,
                client.post(GENERATIONS, content=f'{{"prompt": "{CANARY}"'.encode(),
                            headers=JSON).status_code,
                client.post("/v1/images/edits", data=edit_fields(),
                            files=edit_files(CANARY.encode())).status_code,
                client.get(f"/i/{CANARY}.png?{CANARY}").status_code,
                client.delete(url).status_code,
            ]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    assert statuses == [200, 200, 200, 200, 400, 415, 404, 204]
    printed = out_path.read_text() + err_path.read_text()
    assert CANARY not in printed
    assert token not in printed
    # DEBUG logging was on and every request was logged: the check looked at real output.
    assert printed.count('"event":"request"') >= len(statuses) + 1


def wait_until_ready(client: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited during start-up"
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server never became ready")


# -- 4. No outbound calls ---------------------------------------------------------------------


async def test_no_outbound_connection_from_start_up_to_generation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    guard = NetworkGuard()
    guard.install(monkeypatch)
    async with running_app() as client:  # the lifespan loads the model under the guard
        responses = [
            await client.post(GENERATIONS, json={"prompt": PROMPT, **FAST}),
            await post_edit(client, small_canary_png()),
            await client.post(NATIVE, json={"prompt": PROMPT, **NATIVE_FAST,
                                            "init_image": data_url(small_canary_png())}),
            await client.get("/v1/privacy"),
            await client.get("/readyz"),
        ]
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert guard.attempts == []


def test_hub_access_is_switched_off_by_importing_imagegen() -> None:
    """Even an operator environment that turns the hub on is overridden in code."""
    switches = ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_IMPLICIT_TOKEN",
                "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE", "DO_NOT_TRACK")
    env = {key: value for key, value in os.environ.items() if key not in switches}
    env.update({"HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "0",
                "PYTHONPATH": str(REPO)})
    script = (
        "import json, os, imagegen, diffusers\n"
        "from huggingface_hub import constants\n"
        f"print(json.dumps({{'env': {{k: os.environ.get(k) for k in {switches!r}}},\n"
        "  'offline': constants.HF_HUB_OFFLINE,\n"
        "  'telemetry_off': constants.HF_HUB_DISABLE_TELEMETRY}))"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"env": dict.fromkeys(switches, "1"), "offline": True,
                      "telemetry_off": True}


def test_a_hub_download_fails_without_touching_the_network(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    guard = NetworkGuard()
    guard.install(monkeypatch)
    with pytest.raises(Exception):  # noqa: B017  (offline mode; any error will do)
        huggingface_hub.hf_hub_download("imagegen-tests/absent", "config.json",
                                        cache_dir=tmp_path)
    assert guard.attempts == []


# -- 6. No metadata in outputs ----------------------------------------------------------------


async def test_outputs_carry_no_metadata_even_from_inputs_that_did() -> None:
    mask = encode(solid((255, 255, 255, 0), mode="RGBA"), "PNG", with_canary=True)
    outputs: list[tuple[str, bytes]] = []
    async with running_app() as client:
        for fmt, pillow_format, media_type in (("png", "PNG", "image/png"),
                                               ("webp", "WEBP", "image/webp"),
                                               ("jpeg", "JPEG", "image/jpeg")):
            init = encode(solid((30, 170, 60)), pillow_format, with_canary=True)
            assert CANARY.encode() in init  # the input really carries it
            text = await client.post(GENERATIONS, json={"prompt": PROMPT, **FAST,
                                                        "output_format": fmt})
            inline = await client.post(GENERATIONS, json={
                "prompt": PROMPT, **FAST, "output_format": fmt, "response_format": "b64_json"})
            edit = await client.post("/v1/images/edits", data=edit_fields(output_format=fmt),
                                     files={"image": ("i", init, media_type),
                                            "mask": ("m", mask, "image/png")})
            native = await client.post(NATIVE, json={
                "prompt": PROMPT, **NATIVE_FAST, "output_format": fmt, "output": "data_url",
                "init_image": data_url(init, media_type), "mask_image": data_url(mask)})
            outputs += [
                (fmt, (await client.get(text.json()["data"][0]["url"])).content),
                (fmt, base64.b64decode(inline.json()["data"][0]["b64_json"])),
                (fmt, (await client.get(edit.json()["data"][0]["url"])).content),
                (fmt, base64.b64decode(native.json()["images"][0].split(",", 1)[1])),
            ]
    assert len(outputs) == 12
    for fmt, data in outputs:
        assert Image.open(io.BytesIO(data)).format.lower() == fmt  # type: ignore[union-attr]
        assert metadata_in(data) == [], fmt
        assert CANARY.encode() not in data, fmt


# -- 2 and 5. The encrypted disk backend, through the app -------------------------------------


def windows(data: bytes, width: int = 32) -> list[bytes]:
    """Overlapping slices of data: any run of plaintext on disk would contain one."""
    return [data[i:i + width] for i in range(0, max(1, len(data) - width), width // 2)]


async def test_disk_store_holds_only_ciphertext_and_still_serves(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    init = small_canary_png()
    async with running_app(make_settings(store="disk", store_dir=directory)) as client:
        manifest = (await client.get("/v1/privacy")).json()["store"]
        made = [
            await client.post(GENERATIONS, json={"prompt": PROMPT, **FAST, "n": 2}),
            await post_edit(client, init),
        ]
        urls = [item["url"] for response in made for item in response.json()["data"]]
        served = [await client.get(url) for url in urls]
        files = sorted(directory.iterdir())
        stored = b"".join(path.read_bytes() for path in files)
        deleted = await client.delete(urls[0])
        left_after_delete = len(list(directory.iterdir()))
    assert manifest["backend"] == "disk" and manifest["writes_to_disk"] is True
    assert [r.status_code for r in served] == [200, 200, 200]
    assert len(files) == len(urls) == 3
    assert CANARY.encode() not in stored
    for plaintext in [r.content for r in served] + [init]:
        assert not any(window in stored for window in windows(plaintext))
    assert deleted.status_code == 204 and left_after_delete == 2
    assert list(directory.iterdir()) == []  # shut down: keys dropped, files removed


# -- The live manifest ------------------------------------------------------------------------


async def test_privacy_manifest_reports_the_live_configuration() -> None:
    settings = make_settings(ttl=600, max_ttl=3600, batch_retention=1200)
    with captured_logs() as logs:
        async with running_app(settings) as client:
            before = (await client.get("/v1/privacy")).json()
            await client.post(GENERATIONS, json={"prompt": PROMPT, **FAST})
            change = await client.put("/admin/retention", headers=ADMIN, json={
                "default_ttl_seconds": 60, "max_ttl_seconds": 120,
                "models": {"shapes": {"default_ttl_seconds": 30, "max_ttl_seconds": 90}}})
            after = (await client.get("/v1/privacy")).json()
    assert before["inputs"]["written_to_disk"] is False
    assert before["outbound_calls"] is False
    assert (before["outputs"]["default_ttl_seconds"], before["outputs"]["max_ttl_seconds"]) == (
        600, 3600)
    assert before["outputs"]["models"] == {"shapes": {"default_ttl_seconds": 600,
                                                      "max_ttl_seconds": 3600}}
    assert (before["store"]["backend"], before["store"]["writes_to_disk"]) == ("memory", False)
    assert before["bulk"]["retention_seconds"] == 1200
    logged = set(before["logs"]["fields"])
    assert not logged & {"prompt", "negative_prompt", "image", "url", "token"}
    request_lines = [fields for fields in (getattr(r, "fields", {}) for r in logs.records)
                     if fields.get("route") == GENERATIONS]
    assert request_lines and all(set(fields) <= logged for fields in request_lines)
    assert change.status_code == 200
    assert (after["outputs"]["default_ttl_seconds"], after["outputs"]["max_ttl_seconds"]) == (
        60, 120)
    assert after["outputs"]["models"] == {"shapes": {"default_ttl_seconds": 30,
                                                     "max_ttl_seconds": 90}}


# -- Delete on demand; a request's TTL may only shorten ---------------------------------------


async def test_delete_removes_at_once_and_a_request_ttl_only_shortens() -> None:
    clock = FakeClock()
    start = clock.now
    async with running_app(make_settings(ttl=600, max_ttl=3600), clock=clock) as client:
        short = await client.post(GENERATIONS, json={"prompt": PROMPT, **FAST, "ttl_seconds": 30})
        url = short.json()["data"][0]["url"]
        expires_at = short.json()["data"][0]["expires_at"]
        first_get = await client.get(url)
        deleted = await client.delete(url)
        after = [(await client.get(url)).status_code, (await client.delete(url)).status_code]
        count = (await client.get("/admin/stats", headers=ADMIN)).json()["store"]["count"]
        longer = [
            await client.post(GENERATIONS, json={"prompt": PROMPT, **FAST, "ttl_seconds": 601}),
            await client.post(NATIVE, json={"prompt": PROMPT, **NATIVE_FAST,
                                            "ttl_seconds": 3600}),
            await post_edit(client, small_canary_png(), ttl_seconds=601),
        ]
        kept = await client.post(GENERATIONS, json={"prompt": PROMPT, **FAST, "ttl_seconds": 30})
        kept_url = kept.json()["data"][0]["url"]
        clock.tick(31)
        expired = await client.get(kept_url)
    assert expires_at == start + 30
    assert first_get.status_code == 200
    assert deleted.status_code == 204
    assert after == [404, 404]
    assert count == 0
    for response in longer:
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "ttl_seconds"
    assert expired.status_code == 404
