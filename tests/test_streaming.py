"""OpenAI image streaming, driven by the real `openai` package against a real uvicorn."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import torch
from openai.types import ImageEditCompletedEvent, ImageGenCompletedEvent, ImageGenPartialImageEvent
from PIL import Image

from imagegen.pipelines.base import PipelineOutput, TextToImagePipeline
from tests.helpers import live_server
from web.openai_stream import partial_image_steps

PROMPT = "a red circle on a blue background"


class Watched:
    """The real pipeline; counts the steps it runs, and can fail or slow down at a step."""

    def __init__(self, inner: TextToImagePipeline) -> None:
        self.inner = inner
        self.steps_run = 0
        self.fail_at: int | None = None
        self.step_delay = 0.0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, prompts: list[str], **kwargs: Any) -> PipelineOutput:
        callback: Callable[[int, int, torch.Tensor], bool] = kwargs["step_callback"]

        def step(index: int, total: int, latents: torch.Tensor) -> bool:
            with self.lock:
                self.steps_run += 1
            if self.fail_at is not None and index == self.fail_at:
                raise RuntimeError(f"the model choked on {prompts[0]}")
            time.sleep(self.step_delay)
            return callback(index, total, latents)

        return self.inner(prompts, **{**kwargs, "step_callback": step})


class Wrap:
    pipeline: Watched

    def __call__(self, name: str, pipeline: TextToImagePipeline) -> TextToImagePipeline:
        self.pipeline = Watched(pipeline)
        return self.pipeline  # type: ignore[return-value]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Wrap]]:
    wrap = Wrap()
    with live_server(wrap_pipeline=wrap) as server:
        yield server.url, wrap


@pytest.fixture
def watched(served: tuple[str, Wrap]) -> Iterator[Watched]:
    pipeline = served[1].pipeline
    yield pipeline
    pipeline.fail_at, pipeline.step_delay = None, 0.0


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_partial_steps_are_evenly_spaced_and_never_the_last() -> None:
    assert partial_image_steps(8, 3) == {1, 3, 5}
    assert partial_image_steps(6, 2) == {1, 3}
    assert partial_image_steps(4, 3) == {0, 1, 2}
    assert partial_image_steps(2, 3) == {0}
    assert partial_image_steps(1, 2) == frozenset()
    assert partial_image_steps(8, 0) == frozenset()


def test_the_openai_client_streams_partial_images_then_the_final(
        served: tuple[str, Wrap]) -> None:
    url, _ = served
    client = client_for(url)
    extra = {"num_inference_steps": 6, "seed": 11}
    events = list(client.images.generate(model="shapes", prompt=PROMPT, size="64x64",
                                         stream=True, partial_images=2, extra_body=extra))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"]
    partials, final = events[:2], events[2]
    assert [p.partial_image_index for p in partials] == [0, 1]  # type: ignore[union-attr]
    for event in events:
        assert event.size == "64x64" and event.output_format == "png"
        assert event.created_at > 0 and event.background and event.quality
        assert decoded(event.b64_json).size == (64, 64)
    assert isinstance(final, ImageGenCompletedEvent)
    assert final.usage.device_seconds > 0  # type: ignore[attr-defined]
    # Strict validation against the package's own models, not just its lenient parsing.
    ImageGenCompletedEvent.model_validate(final.model_dump())
    ImageGenPartialImageEvent.model_validate(partials[0].model_dump())
    # The same path as a plain request: the same seed gives the same final image.
    plain = client.images.generate(model="shapes", prompt=PROMPT, size="64x64",
                                   response_format="b64_json", extra_body=extra)
    assert plain.data is not None and plain.data[0].b64_json is not None
    assert (decoded(final.b64_json).tobytes() == decoded(plain.data[0].b64_json).tobytes())


def test_each_of_n_images_has_its_own_events_and_nothing_is_stored(
        served: tuple[str, Wrap]) -> None:
    url, _ = served
    before = _store_count(url)
    stream = client_for(url).images.generate(
        model="shapes", prompt=PROMPT, size="32x32", n=2, stream=True, partial_images=1,
        output_format="webp", extra_body={"num_inference_steps": 4})
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"] * 2
    finals = [decoded(e.b64_json) for e in events[2:]]
    assert [image.format for image in finals] == ["WEBP", "WEBP"]
    assert finals[0].tobytes() != finals[1].tobytes()  # two seeds, two images
    assert _store_count(url) == before


def test_output_compression_sets_jpeg_quality(served: tuple[str, Wrap]) -> None:
    url, _ = served
    sizes = []
    for quality in (5, 95):
        events = list(client_for(url).images.generate(
            model="shapes", prompt=PROMPT, size="128x128", stream=True,
            output_format="jpeg", output_compression=quality,
            extra_body={"num_inference_steps": 4, "seed": 5}))
        (final,) = events
        assert decoded(final.b64_json).format == "JPEG"
        sizes.append(len(base64.b64decode(final.b64_json)))
    assert sizes[0] < sizes[1]


def test_output_compression_applies_to_plain_requests_too(served: tuple[str, Wrap]) -> None:
    url, _ = served
    sizes = []
    for quality in (5, 95):
        result = client_for(url).images.generate(
            model="shapes", prompt=PROMPT, size="128x128", response_format="b64_json",
            output_format="webp", output_compression=quality,
            extra_body={"num_inference_steps": 4, "seed": 5})
        assert result.data is not None and result.data[0].b64_json is not None
        assert decoded(result.data[0].b64_json).format == "WEBP"
        sizes.append(len(base64.b64decode(result.data[0].b64_json)))
    assert sizes[0] < sizes[1]


def test_edits_stream_as_image_edit_events(served: tuple[str, Wrap]) -> None:
    url, _ = served
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    events = list(client_for(url).images.edit(
        model="shapes", image=("in.png", buffer.getvalue(), "image/png"), prompt=PROMPT,
        size="64x64", stream=True, partial_images=1,
        extra_body={"num_inference_steps": 4, "strength": 1.0}))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    ImageEditCompletedEvent.model_validate(events[1].model_dump())
    assert decoded(events[1].b64_json).size == (64, 64)


def test_a_failure_mid_stream_is_an_error_event_the_client_raises(
        served: tuple[str, Wrap], watched: Watched) -> None:
    url, _ = served
    watched.fail_at = 3
    stream = client_for(url).images.generate(
        model="shapes", prompt=PROMPT, size="32x32", stream=True, partial_images=3,
        extra_body={"num_inference_steps": 8})
    seen = []
    with pytest.raises(openai.APIError) as raised:
        for event in stream:
            seen.append(event.type)
    assert seen == ["image_generation.partial_image"]  # step 1's partial, then the failure
    assert raised.value.code == "pipeline_failed"  # type: ignore[attr-defined]
    assert PROMPT not in str(raised.value.body)


def test_a_client_that_goes_away_cancels_the_work(served: tuple[str, Wrap],
                                                  watched: Watched) -> None:
    url, _ = served
    watched.step_delay = 0.2
    steps_before = watched.steps_run
    body = {"model": "shapes", "prompt": PROMPT, "size": "32x32", "stream": True,
            "partial_images": 3, "num_inference_steps": 40}
    with httpx.Client(base_url=url, timeout=30) as http, \
            http.stream("POST", "/v1/images/generations", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:])["type"] == "image_generation.partial_image"
                break  # leave after the first partial image (step 9 of 40)
    deadline = time.monotonic() + 10
    ran = watched.steps_run
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if watched.steps_run == ran:
            break
        ran = watched.steps_run
    assert watched.steps_run - steps_before < 30


def test_bad_stream_fields_are_400s_naming_the_field(served: tuple[str, Wrap]) -> None:
    url, _ = served
    cases = [({"partial_images": 4, "stream": True}, "partial_images"),
             ({"partial_images": 2}, "partial_images"),
             ({"stream": "yes"}, "stream"),
             ({"output_compression": 101}, "output_compression")]
    for fields, param in cases:
        response = httpx.post(f"{url}/v1/images/generations",
                              json={"prompt": PROMPT, "model": "shapes", **fields})
        assert response.status_code == 400, fields
        assert response.json()["error"]["param"] == param


def _store_count(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    line = next(line for line in metrics.splitlines()
                if line.startswith("imagegen_store_artifacts "))
    return float(line.split()[1])
