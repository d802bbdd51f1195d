"""The compiled path (models.toml `compile = true`): warmed up before ready, equal images,
no recompiles across a mixed sequence of requests. Inductor compiles on this CPU (gcc)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from imagegen.registry import EMBEDDED_MODEL_DIR
from tests.helpers import make_settings, running_app
from tests.test_metrics import scrape, value

PROMPT = "a red circle on a blue background"
# Inductor's kernels sum in another order than eager's: a few 8-bit levels after rounding.
TOLERANCE = 8
WARM_UP_LIMIT = 300.0  # two batch buckets take ~40 s on a 2-core CPU


def models_toml(tmp_path: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(f"""
[models.compiled]
path = "{EMBEDDED_MODEL_DIR}"
family = "shapes"
sizes = ["32x32"]
default_steps = 3
max_batch = 3
max_n = 3
batch_buckets = [1, 3]
compile = true
examples = ["{PROMPT}"]
""")
    return path


async def images_of(client: httpx.AsyncClient, model: str, **fields: object) -> list[np.ndarray]:
    response = await client.post("/v1/images/generations", json={
        "model": model, "prompt": PROMPT, "size": "32x32", "response_format": "b64_json",
        **fields})
    assert response.status_code == 200, response.text
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))), dtype=int)
            for item in response.json()["data"]]


async def wait_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + WARM_UP_LIMIT
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "warm-up did not finish"
        await asyncio.sleep(0.5)


async def test_compiled_model_matches_eager_and_never_recompiles(tmp_path: Path) -> None:
    async with running_app(make_settings(models=models_toml(tmp_path))) as client:
        first = await client.get("/readyz")
        # Compiling takes seconds: not ready until the warm-up has compiled every bucket.
        assert first.status_code == 503 and first.json()["checks"]["models_warm"] is False
        await wait_ready(client)
        warmed = await scrape(client)
        assert value(warmed, "imagegen_warmup_compiles_total") > 0
        assert value(warmed, "imagegen_recompiles_total") == 0

        # Batch sizes 1, 2 (padded to 3) and 3; other seeds, steps and guidance.
        mixed: list[dict[str, object]] = [
            {"n": 1, "seed": 1}, {"n": 2, "seed": 5}, {"n": 3, "seed": 9},
            {"n": 1, "seed": 2, "num_inference_steps": 5, "guidance_scale": 2.5},
            {"n": 2, "seed": 7, "num_inference_steps": 2}]
        for fields in mixed:
            fields = {"num_inference_steps": 3, "guidance_scale": 1.5, **fields}
            compiled = await images_of(client, "compiled", **fields)
            eager = await images_of(client, "shapes", **fields)  # the same weights, eager
            assert len(compiled) == len(eager) == fields["n"]
            for ours, reference in zip(compiled, eager, strict=True):
                assert np.abs(ours - reference).max() <= TOLERANCE
        # Concurrent one-image requests share a micro-batch of 2 or 3 (padded to 3).
        together = await asyncio.gather(*(images_of(client, "compiled", seed=20 + i)
                                          for i in range(3)))
        alone = await images_of(client, "compiled", seed=21)
        assert np.abs(together[1][0] - alone[0]).max() <= TOLERANCE

        after = await scrape(client)
        assert value(after, "imagegen_recompiles_total") == 0
        assert value(after, "imagegen_warmup_compiles_total") == value(
            warmed, "imagegen_warmup_compiles_total")
        assert value(after, "imagegen_images_generated_total", model="compiled") == 13
