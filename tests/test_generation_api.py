"""Generation through the real app and the real embedded pipeline, over HTTP."""

from __future__ import annotations

import base64
import io
from email.utils import parsedate_to_datetime

import httpx
from PIL import Image

FAST = {"size": "32x32", "num_inference_steps": 4}
PROMPT = "a red circle on a blue background"


async def generate(client: httpx.AsyncClient, **fields: object) -> httpx.Response:
    return await client.post("/v1/images/generations", json={"prompt": PROMPT, **FAST, **fields})


async def test_url_response_serves_a_png(client: httpx.AsyncClient) -> None:
    response = await generate(client, seed=7)
    assert response.status_code == 200
    body = response.json()
    assert body["seed"] == 7
    assert response.headers["x-request-id"] == body["request_id"]
    assert body["usage"]["device_seconds"] > 0
    (item,) = body["data"]
    assert item["url"].startswith("http://testserver/i/") and item["url"].endswith(".png")
    assert item["expires_at"] > body["created"]
    image = await client.get(item["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.headers["referrer-policy"] == "no-referrer"
    assert image.headers["x-content-type-options"] == "nosniff"
    max_age = int(image.headers["cache-control"].removeprefix("private, max-age="))
    assert 0 < max_age <= item["expires_at"] - body["created"]
    assert parsedate_to_datetime(image.headers["expires"]).timestamp() == int(item["expires_at"])
    assert Image.open(io.BytesIO(image.content)).size == (32, 32)


async def test_image_hits_answered_early_match_the_routed_endpoint(
    client: httpx.AsyncClient,
) -> None:
    # Behind a root path ImageHits declines and the routed ImageGet answers:
    # the two must give the same response.
    url = (await generate(client, seed=5)).json()["data"][0]["url"]
    path = httpx.URL(url).path
    app = client.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, root_path="/prefix")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as routed:
        answers = [await client.get(path), await routed.get("/prefix" + path),
                   await client.head(path), await routed.head("/prefix" + path)]
    for answer in answers:
        assert answer.status_code == 200
        assert answer.headers["x-request-id"].startswith("req_")
    ids = {answer.headers["x-request-id"] for answer in answers}
    assert len(ids) == 4

    def same_part(answer: httpx.Response) -> dict[str, str]:
        # max-age may differ by a second between the calls
        return {k: v for k, v in answer.headers.items()
                if k not in ("x-request-id", "cache-control")}

    assert all(same_part(answer) == same_part(answers[0]) for answer in answers)
    assert answers[0].content == answers[1].content and len(answers[0].content) > 0
    assert answers[2].content == answers[3].content == b""


async def test_b64_json_stores_nothing(client: httpx.AsyncClient) -> None:
    response = await generate(client, response_format="b64_json", seed=3)
    assert response.status_code == 200
    (item,) = response.json()["data"]
    assert set(item) == {"b64_json"}
    png = base64.b64decode(item["b64_json"])
    assert Image.open(io.BytesIO(png)).format == "PNG"
    stats = await client.get("/admin/stats",
                             headers={"Authorization": "Bearer test-admin-token-0123456789"})
    assert stats.json()["store"]["count"] == 0


async def test_same_seed_gives_identical_bytes(client: httpx.AsyncClient) -> None:
    first, second, other = [
        (await generate(client, response_format="b64_json", seed=seed)).json()["data"][0]
        for seed in (11, 11, 12)
    ]
    assert first["b64_json"] == second["b64_json"]
    assert first["b64_json"] != other["b64_json"]


async def test_n_images_each_served(client: httpx.AsyncClient) -> None:
    response = await generate(client, n=4, seed=5)
    assert response.status_code == 200
    urls = [item["url"] for item in response.json()["data"]]
    assert len(set(urls)) == 4
    bodies = [(await client.get(url)).content for url in urls]
    assert len(set(bodies)) == 4  # seeds 5..8: four different images


async def test_output_formats(client: httpx.AsyncClient) -> None:
    for output_format, content_type in (("webp", "image/webp"), ("jpeg", "image/jpeg")):
        response = await generate(client, output_format=output_format)
        url = response.json()["data"][0]["url"]
        assert url.endswith("." + output_format)
        assert (await client.get(url)).headers["content-type"] == content_type


async def test_native_api_url_and_data_url(client: httpx.AsyncClient) -> None:
    body = {"prompt": PROMPT, "width": 32, "height": 32, "num_images": 2,
            "num_inference_steps": 4, "seed": 9}
    response = await client.post("/v1/inference/shapes", json=body)
    assert response.status_code == 200
    result = response.json()
    assert result["seed"] == 9 and len(result["images"]) == 2
    assert result["inference_status"]["status"] == "succeeded"
    assert result["inference_status"]["cost"] > 0
    assert result["expires_at"] > 0
    for url in result["images"]:
        assert (await client.get(url)).status_code == 200
    inline = await client.post("/v1/inference/shapes", json={**body, "output": "data_url"})
    images = inline.json()["images"]
    assert all(image.startswith("data:image/png;base64,") for image in images)
    assert inline.json()["expires_at"] is None
    # The same seed through either API gives the same pixels.
    stored = (await client.get(result["images"][0])).content
    assert base64.b64decode(images[0].split(",", 1)[1]) == stored


async def test_models_list(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    (model,) = body["data"]
    assert model["id"] == "shapes" and model["object"] == "model"
    assert "32x32" in model["sizes"]
    assert model["defaults"]["num_inference_steps"] > 0
    assert "red" in model["vocabulary"]["colours"]


async def test_public_url_setting_builds_absolute_urls() -> None:
    from tests.helpers import make_settings, running_app

    settings = make_settings(public_url="https://images.example.org/")
    async with running_app(settings) as client:
        url = (await generate(client)).json()["data"][0]["url"]
    assert url.startswith("https://images.example.org/i/")


async def test_unknown_words_are_counted_not_echoed(client: httpx.AsyncClient) -> None:
    response = await generate(client, prompt="a red circle on a blue background zorblax quux")
    assert response.status_code == 200
    assert response.json()["ignored_words"] == 2
    assert "zorblax" not in response.text


async def test_prompt_with_no_known_word_lists_vocabulary(client: httpx.AsyncClient) -> None:
    response = await generate(client, prompt="zorblax quux")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "prompt"
    assert "red" in error["message"] and "circle" in error["message"]
    assert "zorblax" not in response.text


async def test_webp_and_jpeg_default_to_output_compression_100(client: httpx.AsyncClient) -> None:
    for output_format in ("webp", "jpeg"):
        def image_of(response: httpx.Response) -> bytes:
            assert response.status_code == 200, response.text
            return base64.b64decode(response.json()["data"][0]["b64_json"])

        same = {"seed": 3, "output_format": output_format, "response_format": "b64_json"}
        default = image_of(await generate(client, **same))
        assert default == image_of(await generate(client, **same, output_compression=100))
        assert default != image_of(await generate(client, **same, output_compression=50))
