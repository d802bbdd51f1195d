"""Image -> bytes, with no metadata: nothing of the prompt can ride along in the file."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}

# Pillow releases the GIL while compressing, so threads use every core.
# Chosen with `python -m bench.encode` (figures in docs/performance.md):
# - PNG level 4: on the embedded model's images, 2.5x faster than Pillow's
#   default 6 (1.5 vs 3.6 ms at 128 px, 4.7 vs 11.9 ms at 256 px) for 1-5% more
#   bytes; levels 1-3 are faster still but 11-24% larger, 7-9 up to 10x slower.
#   On noisy 512 px images levels 4-9 give the same bytes in the same time.
# - WebP method 2: 2-2.5x faster than method 4 (1.6 vs 3.8 ms at 256 px,
#   9.8 vs 21.6 ms at 512 px) for at most 4% more bytes.
# - WebP and JPEG quality 100 unless a request's output_compression says less: the
#   API's default, as OpenAI's.
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "png": {"format": "PNG", "compress_level": 4},
    "webp": {"format": "WEBP", "quality": 100, "method": 2},
    "jpeg": {"format": "JPEG", "quality": 100},
}


def _bare_copy(image: Image.Image) -> Image.Image:
    """Pixels only: drops info, EXIF, XMP and ICC profiles a pipeline may have attached."""
    mode = "RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"
    pixels = image.convert(mode)
    return Image.frombytes(mode, pixels.size, pixels.tobytes())


def encode_image(image: Image.Image, output_format: str, quality: int | None = None) -> bytes:
    """`quality` (0-100, webp and jpeg only) overrides the format's default."""
    options = _SAVE_OPTIONS[output_format]
    if quality is not None and output_format in ("webp", "jpeg"):
        options = {**options, "quality": quality}
    bare = _bare_copy(image)
    if output_format == "jpeg" and bare.mode != "RGB":
        bare = bare.convert("RGB")
    buffer = io.BytesIO()
    bare.save(buffer, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


class Encoder:
    """Encodes off the event loop on a pool sized to the machine."""

    def __init__(self, workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encode")

    async def encode(self, images: list[Image.Image], output_format: str,
                     quality: int | None = None) -> list[bytes]:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._pool, encode_image, image, output_format, quality)
                for image in images]
        return list(await asyncio.gather(*jobs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
