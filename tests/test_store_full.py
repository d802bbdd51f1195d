"""A full store, filled through the app: 503 with Retry-After on every path that stores
(never a 500), what the store holds is kept, and b64_json (which stores nothing) still works.
"""

from __future__ import annotations

import httpx

from tests.helpers import make_settings, running_app

GENERATIONS = "/v1/images/generations"
# One seed: every image is the same bytes, so once one does not fit, none does (with
# random seeds a smaller PNG could still fit after a refusal).
FAST = {"prompt": "a red circle", "size": "32x32", "num_inference_steps": 2, "seed": 7}
NATIVE_FAST = {"prompt": "a red circle", "width": 32, "height": 32, "num_inference_steps": 2,
               "seed": 7}


def assert_store_full(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("store_full", "server_error")
    assert int(response.headers["retry-after"]) > 0


async def test_a_full_store_answers_503_on_every_path_that_stores() -> None:
    # Room for a few small PNGs (a 32x32 image is a few kilobytes).
    async with running_app(make_settings(store_max_bytes=20_000)) as client:
        filling = [await client.post(GENERATIONS, json=FAST)]
        while filling[-1].status_code == 200 and len(filling) < 40:
            filling.append(await client.post(GENERATIONS, json=FAST))
        url = filling[0].json()["data"][0]["url"]
        refused = [
            filling[-1],
            await client.post(GENERATIONS, json=FAST),
            await client.post("/v1/inference/shapes", json=NATIVE_FAST),
            await client.post(GENERATIONS, json={**FAST, "n": 2}),
        ]
        inline = await client.post(GENERATIONS, json={**FAST, "response_format": "b64_json"})
        kept = await client.get(url)
    assert [r.status_code for r in filling[:-1]] == [200] * (len(filling) - 1)
    assert len(filling) > 1
    for response in refused:
        assert_store_full(response)
    assert inline.status_code == 200 and inline.json()["data"][0]["b64_json"]
    assert kept.status_code == 200


async def test_a_job_on_a_full_store_fails_with_the_store_error() -> None:
    async with running_app(make_settings(store_max_bytes=10)) as client:
        created = await client.post("/v1/jobs", json=NATIVE_FAST)
        assert created.status_code == 202
        job_id = created.json()["id"]
        stream = await client.get(f"/v1/jobs/{job_id}/events")
        view = await client.get(f"/v1/jobs/{job_id}")
    assert "event: failed" in stream.text
    assert view.json()["status"] == "failed"
    assert view.json()["error"]["code"] == "store_full"
