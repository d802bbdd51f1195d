"""Encoding settings: bytes and milliseconds per image for each PNG level and WebP method.

    python -m bench.encode [--repeat 5]

Images: the embedded model's output at 128 and 256 pixels, and a 512-pixel
photo-like image (smooth colour fields with sensor-like grain) standing in
for a Stable Diffusion output. The chosen settings live in imagegen/encode.py.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

from imagegen.registry import embedded_spec, load_pipeline


def sample_images() -> dict[str, Image.Image]:
    pipeline = load_pipeline(embedded_spec())
    images = {}
    for size in (128, 256):
        output = pipeline(["a red circle on a blue background"], negative_prompts=[None],
                          generators=[torch.Generator().manual_seed(1)], width=size,
                          height=size, num_inference_steps=20, guidance_scale=3.0)
        images[f"shapes {size}"] = output.images[0]
    rng = np.random.default_rng(0)
    fields = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    smooth = np.asarray(fields.resize((512, 512), Image.Resampling.BICUBIC), dtype=np.float32)
    grain = rng.normal(0, 4, smooth.shape)
    images["photo-like 512"] = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
    return images


def measure(image: Image.Image, options: dict[str, object], repeat: int) -> tuple[int, float]:
    """(bytes, best milliseconds of `repeat` runs)."""
    best = float("inf")
    size = 0
    for _ in range(repeat):
        buffer = io.BytesIO()
        started = time.perf_counter()
        image.save(buffer, **options)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - started)
        size = buffer.tell()
    return size, best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings: list[tuple[str, dict[str, object]]] = [
        (f"png level {level}", {"format": "PNG", "compress_level": level})
        for level in range(10)
    ] + [
        (f"webp q90 method {method}", {"format": "WEBP", "quality": 90, "method": method})
        for method in range(7)
    ] + [("jpeg q90", {"format": "JPEG", "quality": 90})]
    images = sample_images()
    header = f"{'setting':<20}" + "".join(f"{name:>26}" for name in images)
    print(header)
    print(f"{'':<20}" + "".join(f"{'bytes':>16}{'ms':>10}" for _ in images))
    for label, options in settings:
        cells = [measure(image, options, args.repeat) for image in images.values()]
        print(f"{label:<20}" + "".join(f"{size:>16}{ms:>10.2f}" for size, ms in cells))


if __name__ == "__main__":
    main()
