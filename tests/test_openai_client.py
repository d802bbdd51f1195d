"""The `openai` package, unchanged, against a real uvicorn server."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.helpers import live_server


@pytest.fixture(scope="module")
def server_url():  # type: ignore[no-untyped-def]
    with live_server() as server:
        yield server.url


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_urls_with_n_up_to_4(server_url: str) -> None:
    result = client_for(server_url).images.generate(
        model="shapes", prompt="two green squares on white", n=4, size="32x32",
        response_format="url", extra_body={"seed": 1, "num_inference_steps": 4})
    assert len(result.data) == 4
    for item in result.data:
        assert item.url is not None and item.url.startswith(server_url + "/i/")
        fetched = httpx.get(item.url)
        assert fetched.status_code == 200
        assert Image.open(io.BytesIO(fetched.content)).size == (32, 32)


def test_b64_json(server_url: str) -> None:
    result = client_for(server_url).images.generate(
        model="shapes", prompt="a yellow triangle on black", size="64x64",
        response_format="b64_json", extra_body={"num_inference_steps": 4})
    (item,) = result.data
    assert item.b64_json is not None
    assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (64, 64)


def test_errors_arrive_as_openai_errors(server_url: str) -> None:
    client = client_for(server_url)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.images.generate(model="no-such-model", prompt="a red circle")
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(model="shapes", prompt="a red circle", size="999x999")
    assert bad.value.param == "size"  # type: ignore[attr-defined]


def test_models_list(server_url: str) -> None:
    models = client_for(server_url).models.list()
    assert [model.id for model in models.data] == ["shapes"]
