"""The whole keyed flow with the `openai` package, unchanged, against a real uvicorn server.

The operator creates a key; the client uses it as its `api_key`; limits and
revocation arrive as the client's own exceptions; the client reads its usage.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image

from tests.helpers import ADMIN_TOKEN, LiveServer, live_server, make_settings

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXTRA = {"num_inference_steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    keys_file = tmp_path_factory.mktemp("keys") / "keys.json"
    with live_server(make_settings(auth="keys", keys_file=keys_file)) as running:
        yield running


def new_key(server: LiveServer, **fields: object) -> dict[str, str]:
    response = httpx.post(f"{server.url}/admin/keys", headers=ADMIN,
                          json={"name": "openai-client", **fields})
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


def client_for(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_the_openai_client_generates_with_a_key_and_reads_its_usage(server: LiveServer) -> None:
    created = new_key(server, models=["shapes"])
    client = client_for(server, created["key"])

    result = client.images.generate(model="shapes", prompt="a red circle on white", n=2,
                                    size="32x32", extra_body=EXTRA)

    assert len(result.data) == 2
    for item in result.data:
        assert item.url is not None
        # Image URLs stay capabilities: fetched without the key.
        fetched = httpx.get(item.url)
        assert fetched.status_code == 200
        assert Image.open(io.BytesIO(fetched.content)).size == (32, 32)
    assert [model.id for model in client.models.list().data] == ["shapes"]
    usage = client.get("/usage", cast_to=object)
    assert isinstance(usage, dict)
    assert usage["key_id"] == created["id"]
    (row,) = usage["data"]
    assert (row["model"], row["requests"], row["images"]) == ("shapes", 1, 2)
    assert row["cost"] > 0


def test_a_bad_key_is_an_authentication_error(server: LiveServer) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        client_for(server, "ig_0000000000000000_" + "x" * 43).models.list()
    assert refused.value.code == "invalid_api_key"


def test_a_revoked_key_is_a_permission_error(server: LiveServer) -> None:
    created = new_key(server)
    client = client_for(server, created["key"])
    assert client.models.list().data

    assert httpx.delete(f"{server.url}/admin/keys/{created['id']}",
                        headers=ADMIN).status_code == 200

    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.images.generate(model="shapes", prompt="a red circle", size="32x32",
                               extra_body=EXTRA)
    assert refused.value.code == "key_revoked"


def test_over_the_rate_limit_is_a_rate_limit_error_with_retry_after(server: LiveServer) -> None:
    client = client_for(server, new_key(server, requests_per_minute=1)["key"])
    client.images.generate(model="shapes", prompt="a red circle", size="32x32", extra_body=EXTRA)

    with pytest.raises(openai.RateLimitError) as refused:
        client.images.generate(model="shapes", prompt="a red circle", size="32x32",
                               extra_body=EXTRA)

    assert refused.value.code == "rate_limited"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60

