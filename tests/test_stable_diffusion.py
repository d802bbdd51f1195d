"""The Stable Diffusion families on toy-size random-weight SD 1.5 and SDXL directories.

Also runs the GPU benchmark at toy size on the CPU, as CI does.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import random_sd
from imagegen.pipelines.auto import DiffusersPipeline, load_diffusers_pipeline
from imagegen.pipelines.base import Cancelled
from imagegen.registry import load_specs

ROOT = Path(__file__).resolve().parent.parent
SIZE = random_sd.native_size("sd15", toy=True)


@pytest.fixture(scope="module", params=random_sd.ARCHITECTURES)
def pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[DiffusersPipeline]:
    directory = random_sd.build(request.param, tmp_path_factory.mktemp(request.param), toy=True)
    models = directory.parent / "models.toml"
    models.write_text(f'[models.m]\npath = "{directory}"\n')
    traits = load_specs(models)["m"].traits
    yield load_diffusers_pipeline(directory, traits, torch.device("cpu"), torch.float32)


def draw(pipeline: DiffusersPipeline, prompts: list[str], seeds: list[int],
         **kwargs: object) -> list[Image.Image]:
    output = pipeline(prompts, negative_prompts=[None] * len(prompts),
                      generators=[torch.Generator().manual_seed(s) for s in seeds],
                      width=SIZE, height=SIZE, num_inference_steps=2, guidance_scale=5.0,
                      **kwargs)  # type: ignore[arg-type]
    return output.images


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_each_image_depends_on_its_own_seed_not_its_batch(
        pipeline: DiffusersPipeline) -> None:
    alone = draw(pipeline, ["a cat"], [7])
    batched = draw(pipeline, ["a dog", "a cat"], [3, 7])
    assert [im.size for im in batched] == [(SIZE, SIZE)] * 2
    np.testing.assert_allclose(pixels(batched[1]), pixels(alone[0]), atol=2)
    assert not np.array_equal(pixels(batched[0]), pixels(batched[1]))


def test_step_callback_sees_every_step_and_can_cancel(pipeline: DiffusersPipeline) -> None:
    seen: list[tuple[int, int]] = []

    def record(step: int, total: int, latents: torch.Tensor) -> bool:
        seen.append((step, total))
        return True

    draw(pipeline, ["a cat"], [1], step_callback=record)
    assert seen == [(0, 2), (1, 2)]
    with pytest.raises(Cancelled):
        draw(pipeline, ["a cat"], [1], step_callback=lambda step, total, latents: False)


def test_image_to_image_and_inpainting_share_the_loaded_components(
        pipeline: DiffusersPipeline) -> None:
    init = Image.new("RGB", (SIZE, SIZE), (200, 30, 30))
    mask = Image.new("L", (SIZE, SIZE), 0)
    (varied,) = draw(pipeline, ["a cat"], [1], init_images=[init], strength=0.5)
    (painted,) = draw(pipeline, ["a cat"], [1], init_images=[init], mask_images=[mask],
                      strength=0.5)
    assert varied.size == painted.size == (SIZE, SIZE)
    assert pipeline.inpaint is not None and pipeline.image2image is not None
    assert pipeline.inpaint.unet is pipeline.text2image.unet
    assert pipeline.image2image.vae is pipeline.text2image.vae


def test_inpainting_keeps_what_the_mask_keeps_unlike_image_to_image(
        pipeline: DiffusersPipeline) -> None:
    """The mask matters: outside it the init image is put back at every step, so with nothing
    to repaint the prompt changes nothing, while image-to-image follows the prompt."""
    init = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    keep_all = Image.new("L", (SIZE, SIZE), 0)
    repaint_all = Image.new("L", (SIZE, SIZE), 255)

    def edit(prompt: str, mask: Image.Image | None) -> np.ndarray:
        masks = None if mask is None else [mask]
        (image,) = draw(pipeline, [prompt], [1], init_images=[init], mask_images=masks,
                        strength=0.6)
        return pixels(image)

    kept = [edit(prompt, keep_all) for prompt in ("a cat", "a red dog on a bicycle")]
    repainted = [edit(prompt, repaint_all) for prompt in ("a cat", "a red dog on a bicycle")]
    varied = [edit(prompt, None) for prompt in ("a cat", "a red dog on a bicycle")]
    np.testing.assert_array_equal(kept[0], kept[1])
    assert not np.array_equal(repainted[0], repainted[1])
    assert not np.array_equal(varied[0], varied[1])


def test_words_past_the_token_limit_are_counted(pipeline: DiffusersPipeline) -> None:
    assert pipeline.check_prompt("a cat") == 0
    assert pipeline.check_prompt("word " * 100) > 0


def test_the_gpu_benchmark_runs_at_toy_size_on_the_cpu() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--toy", "--rounds", "1", "--batches", "1", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    for architecture in random_sd.ARCHITECTURES:
        assert f"{architecture} (random weights)" in result.stdout
    assert result.stdout.count("service / raw best") == len(random_sd.ARCHITECTURES)
    assert result.stdout.count(" of raw best") == len(random_sd.ARCHITECTURES)  # 2B clients
