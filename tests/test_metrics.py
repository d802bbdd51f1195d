"""GET /metrics: every series is fed by the real flow, and reads back exactly."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import FakeClock, make_settings, running_app
from tests.test_faults import Faults, queue_depth, wait_until

PROMPT = "a red circle on a blue background"
FAST = {"size": "32x32", "num_inference_steps": 2}


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_generation_feeds_batch_latency_device_and_image_series() -> None:
    async with running_app(make_settings()) as client:
        before = await scrape(client)
        assert value(before, "imagegen_batch_size_count") == 0
        assert value(before, "imagegen_store_artifacts") == 0

        openai = await client.post("/v1/images/generations",
                                   json={"prompt": PROMPT, "n": 3, **FAST})
        native = await client.post("/v1/inference/shapes", json={
            "prompt": PROMPT, "width": 32, "height": 32, "num_inference_steps": 2,
            "output": "data_url"})
        assert openai.status_code == native.status_code == 200
        stored = [(await client.get(item["url"])).content for item in openai.json()["data"]]

        after = await scrape(client)
        assert value(after, "imagegen_batch_size_count") == 2
        assert value(after, "imagegen_batch_size_sum") == 4  # 3 images, then 1
        assert value(after, "imagegen_batch_size_bucket", le="2.0") == 1
        assert value(after, "imagegen_batch_device_seconds_count") == 2
        assert value(after, "imagegen_batch_device_seconds_sum") > 0
        assert value(after, "imagegen_request_seconds_count", route="/v1/images/generations",
                     method="POST", status="200") == 1
        assert value(after, "imagegen_request_seconds_count", route="/v1/inference/{model}",
                     method="POST", status="200") == 1
        assert value(after, "imagegen_images_generated_total", model="shapes") == 4
        # Only the url response is stored; the data URL is not.
        assert value(after, "imagegen_store_artifacts") == 3
        assert value(after, "imagegen_store_bytes") == sum(len(data) for data in stored)
        assert value(after, "imagegen_queue_depth") == 0


async def test_every_response_is_counted_by_route_template_and_status() -> None:
    async with running_app(make_settings()) as client:
        created = await client.post("/v1/images/generations", json={"prompt": PROMPT, **FAST})
        url = created.json()["data"][0]["url"]
        token = url.rsplit("/", 1)[1].split(".")[0]
        assert (await client.get(url)).status_code == 200
        assert (await client.head(url)).status_code == 200
        assert (await client.delete(url)).status_code == 204
        assert (await client.get(url)).status_code == 404
        assert (await client.post("/v1/images/generations", json={})).status_code == 400
        assert (await client.get("/no/such/page")).status_code == 404

        samples = await scrape(client)
        assert token not in str(samples)  # routes are counted as templates, never as sent
        image = "/i/{token}.{ext}"
        counted = {(labels["route"], labels["method"], labels["status"]): count
                   for (name, label_items), count in samples.items()
                   if name == "imagegen_request_seconds_count"
                   for labels in [dict(label_items)]}
        assert counted == {
            ("/v1/images/generations", "POST", "200"): 1,
            ("/v1/images/generations", "POST", "400"): 1,
            (image, "GET", "200"): 1,
            (image, "HEAD", "200"): 1,
            (image, "DELETE", "204"): 1,
            (image, "GET", "404"): 1,
            ("unmatched", "GET", "404"): 1,
        }


async def test_queue_depth_counts_requests_waiting_behind_a_busy_worker() -> None:
    faults = Faults()
    async with running_app(make_settings(), wrap_pipeline=faults) as client:
        gate = faults.pipeline.hold_next_call()
        body = {"prompt": PROMPT, **FAST}
        running = asyncio.create_task(client.post("/v1/images/generations", json=body))
        await asyncio.to_thread(faults.pipeline.entered.wait, 30)
        waiting = [asyncio.create_task(client.post("/v1/images/generations", json=body))
                   for _ in range(2)]
        await wait_until(lambda: queue_depth(client) == 2)
        assert value(await scrape(client), "imagegen_queue_depth") == 2
        gate.set()
        await asyncio.gather(running, *waiting)
        assert value(await scrape(client), "imagegen_queue_depth") == 0


async def test_expiry_feeds_expired_reads_swept_count_and_deletion_lag() -> None:
    clock = FakeClock()
    # The scheduled sweep is kept out of the way; the test sweeps by hand.
    async with running_app(make_settings(sweep_interval=3600), clock=clock) as client:
        response = await client.post("/v1/images/generations",
                                     json={"prompt": PROMPT, "ttl_seconds": 60, **FAST})
        url = response.json()["data"][0]["url"]
        clock.tick(65)
        assert (await client.get(url)).status_code == 404
        middle = await scrape(client)
        assert value(middle, "imagegen_store_expired_reads") == 1
        assert value(middle, "imagegen_store_swept") == 0
        assert value(middle, "imagegen_deletion_lag_seconds_count") == 0

        services = client.app.state.services  # type: ignore[attr-defined]
        assert await services.sweeper.run_once() == 1

        after = await scrape(client)
        assert value(after, "imagegen_store_swept") == 1
        assert value(after, "imagegen_store_artifacts") == 0
        assert value(after, "imagegen_store_bytes") == 0
        assert value(after, "imagegen_deletion_lag_seconds_count") == 1
        assert value(after, "imagegen_deletion_lag_seconds_sum") == 5
        assert value(after, "imagegen_deletion_lag_seconds_bucket", le="5.0") == 1
        assert value(after, "imagegen_deletion_lag_seconds_bucket", le="2.0") == 0
