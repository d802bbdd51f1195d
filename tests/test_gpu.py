"""What only a GPU shows, through the real app: fp16 generation and inpainting on CUDA.

Marked `gpu` (scripts/gpu-check.sh runs `pytest -m gpu`); without CUDA they skip.
The model is a toy random-weight SD 1.5 directory (bench/random_sd.py), loaded
from models.toml as an operator would, in float16 on cuda.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from bench import random_sd
from tests.helpers import make_settings, running_app
from tests.privacy.support import encode, solid

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SIZE = random_sd.native_size("sd15", toy=True)
FAST = {"prompt": "a cat", "model": "toy", "size": f"{SIZE}x{SIZE}", "num_inference_steps": 2,
        "seed": 3, "response_format": "b64_json"}


def models_file(directory: Path, device: str, dtype: str) -> Path:
    model = random_sd.build("sd15", directory / "toy", toy=True)
    path = directory / "models.toml"
    path.write_text(f'[models.toy]\npath = "{model}"\ndevice = "{device}"\ndtype = "{dtype}"\n'
                    f'sizes = ["{SIZE}x{SIZE}"]\n')
    return path


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(models=models_file(tmp_path, "cuda", "float16"))) as c:
        yield c


def decoded(response: httpx.Response) -> list[np.ndarray]:
    assert response.status_code == 200, response.text
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))))
            for item in response.json()["data"]]


async def test_fp16_generation_on_cuda_through_the_app(client: httpx.AsyncClient) -> None:
    pipeline = client.app.state.services.engine.pipelines["toy"]  # type: ignore[attr-defined]
    assert (pipeline.device.type, pipeline.dtype) == ("cuda", torch.float16)
    assert next(pipeline.text2image.unet.parameters()).dtype == torch.float16

    batch = decoded(await client.post("/v1/images/generations", json={**FAST, "n": 2}))
    again = decoded(await client.post("/v1/images/generations", json=FAST))

    assert [image.shape for image in batch] == [(SIZE, SIZE, 3)] * 2
    for image in batch:
        assert image.std() > 0  # fp16 overflow gives NaN latents, which decode to a flat image
    assert not np.array_equal(batch[0], batch[1])  # each image has its own seed
    np.testing.assert_allclose(again[0], batch[0], atol=8)  # same seed, alone or batched


async def test_fp16_inpainting_on_cuda_keeps_what_the_mask_keeps(
        client: httpx.AsyncClient) -> None:
    init = encode(Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8)), "PNG")
    keep_all = encode(solid((0,), (SIZE, SIZE), "L"), "PNG")
    fields = {key: str(value) for key, value in FAST.items()}

    async def edit(prompt: str) -> np.ndarray:
        response = await client.post("/v1/images/edits", data={**fields, "prompt": prompt},
                                     files={"image": ("i.png", init, "image/png"),
                                            "mask": ("m.png", keep_all, "image/png")})
        return decoded(response)[0]

    np.testing.assert_array_equal(await edit("a cat"), await edit("a red dog on a bicycle"))
