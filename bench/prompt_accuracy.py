"""Prompt accuracy of the embedded shapes model on held-out prompts.

    python -m bench.prompt_accuracy [--model imagegen/embedded/shapes] [--images 256]

Draws held-out scenes (colour/shape/background combinations the training
sampler never shows), generates one image per prompt with its own seed, reads
each image back with the pixel classifier of `imagegen.scenes`, and prints the
share right per attribute. Also saves a captioned sample grid.
"""

from __future__ import annotations

import argparse
import random
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from imagegen import scenes
from imagegen.pipelines.shapes import ShapesPipeline, load_shapes_pipeline

TARGETS = {
    "background": 0.95,
    "colour": 0.95,
    "shape": 0.90,
    "size": 0.80,
    "position": 0.80,
    "count": 0.80,
}
_CELL = 128


def held_out_prompts(n: int, seed: int) -> list[tuple[scenes.Scene, str]]:
    rng = random.Random(seed)
    drawn = [scenes.sample_scene(rng, held_out=True) for _ in range(n)]
    return [(scene, scenes.describe(scene, rng)) for scene in drawn]


def generate(
    pipeline: ShapesPipeline,
    prompts: list[str],
    seeds: list[int],
    steps: int,
    guidance: float,
) -> list[Image.Image]:
    size = pipeline.native_size
    output = pipeline(
        prompts,
        negative_prompts=[None] * len(prompts),
        generators=[torch.Generator().manual_seed(s) for s in seeds],
        width=size,
        height=size,
        num_inference_steps=steps,
        guidance_scale=guidance,
    )
    return output.images


def grid(images: list[Image.Image], captions: list[str], columns: int) -> Image.Image:
    """Images upscaled to _CELL pixels, each with its prompt underneath."""
    font = ImageFont.load_default(size=11)
    rows = -(-len(images) // columns)
    cell_height = _CELL + 44
    sheet = Image.new("RGB", (columns * _CELL, rows * cell_height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (i % columns) * _CELL, (i // columns) * cell_height
        sheet.paste(image.resize((_CELL, _CELL), Image.Resampling.BICUBIC), (x, y))
        text = "\n".join(textwrap.wrap(caption, 22)[:3])
        draw.multiline_text((x + 3, y + _CELL + 2), text, fill=(0, 0, 0), font=font, spacing=1)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("imagegen/embedded/shapes"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--grid", type=Path, default=Path("bench/out/shapes_grid.png"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipeline = load_shapes_pipeline(args.model, torch.device("cpu"), torch.float32)
    guidance = pipeline.default_guidance if args.guidance is None else args.guidance
    cases = held_out_prompts(args.images, args.seed)
    images: list[Image.Image] = []
    started = time.perf_counter()
    for start in range(0, len(cases), args.batch_size):
        chunk = cases[start : start + args.batch_size]
        seeds = [args.seed * 1_000_000 + start + i for i in range(len(chunk))]
        images += generate(pipeline, [p for _, p in chunk], seeds, args.steps, guidance)
    seconds_per_image = (time.perf_counter() - started) / len(cases)

    right, total = Counter[str](), Counter[str]()
    for (scene, _), image in zip(cases, images, strict=True):
        for attribute, ok in scenes.matches(scene, scenes.classify(np.asarray(image))).items():
            total[attribute] += 1
            right[attribute] += ok
    print(
        f"{len(cases)} held-out prompts, {args.steps} DDIM steps, guidance {guidance}, "
        f"trained steps {pipeline.trained_steps}, {seconds_per_image:.3f} s/image "
        f"(batch {args.batch_size}, {torch.get_num_threads()} threads)"
    )
    print(f"{'attribute':<12}{'right':>12}{'share':>8}{'target':>8}")
    for attribute, target in TARGETS.items():
        share = right[attribute] / max(1, total[attribute])
        mark = "ok" if share >= target else "LOW"
        print(
            f"{attribute:<12}{right[attribute]:>6}/{total[attribute]:<5}"
            f"{share:>8.1%}{target:>8.0%} {mark}"
        )
    args.grid.parent.mkdir(parents=True, exist_ok=True)
    grid(images[:24], [p for _, p in cases[:24]], columns=6).save(args.grid)
    print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
