"""Image inputs (init image, mask): decoded in memory, from the allowed formats only.

Pillow is told which formats it may try (`formats=`), so no other decoder ever
sees client bytes; the pixel count is checked from the header, before any
pixel is decoded, so a decompression bomb costs nothing. Masks follow OpenAI:
a mask with transparency marks the area to repaint by its transparent pixels;
an opaque mask marks it in white. With no mask, an image's own transparent
pixels are the area to repaint. Decoding runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from web.errors import ApiError, bad_request
from web.request_models import InferenceRequest

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
ALLOWED_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp")
# 16 megapixels: a 4096x4096 photo; decoded RGBA it is 64 MB, the most one input may cost.
MAX_INPUT_PIXELS = 4096 * 4096
# An alpha below this is "transparent": the pixel is repainted.
_TRANSPARENT_BELOW = 128
# How Pillow opens a 16-bit greyscale PNG (the mode's name depends on the version).
_SIXTEEN_BIT_GREY = ("I", "I;16", "I;16B", "I;16L")

# Pillow logs EXIF tag values at DEBUG (names, places, captions of an uploaded photo):
# pinned above DEBUG so that an operator's debug logging never prints them.
logging.getLogger("PIL").setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class ImageInputs:
    """What the pipeline gets: both sized to the output, the mask white where it repaints."""

    init_image: Image.Image | None
    mask_image: Image.Image | None


NO_INPUTS = ImageInputs(None, None)


def unsupported(field: str) -> ApiError:
    return ApiError(415, f"'{field}' must be a PNG, JPEG or WebP image.", param=field,
                    code="unsupported_media_type")


def decode_image(data: bytes, field: str, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """Decode and orient one upload: 415 if not an allowed image, 413 if too many pixels."""
    if not data:
        raise bad_request(f"'{field}' is empty.", field)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels(field, max_pixels)
        image.load()
        return _eight_bit(ImageOps.exif_transpose(image))
    except ApiError:
        raise
    except UnidentifiedImageError:
        raise unsupported(field) from None
    except Image.DecompressionBombError:
        raise _too_many_pixels(field, max_pixels) from None
    except Exception:
        # Any other decoder fault on client bytes (truncated, corrupt, a text-chunk bomb)
        # is the client's 400, never a 500.
        raise bad_request(f"'{field}' could not be decoded.", field) from None


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit greyscale PNG as 8-bit L, 65535 -> 255: Pillow's own conversions clip it at
    255 instead of scaling (25% grey would become white)."""
    if image.mode not in _SIXTEEN_BIT_GREY:
        return image
    return image.convert("I").point(lambda value: value * (1 / 257)).convert("L")


def _too_many_pixels(field: str, max_pixels: int) -> ApiError:
    return ApiError(413, f"'{field}' has more than {max_pixels} pixels.", param=field,
                    code="image_too_large")


def decode_base64(text: str, field: str, max_bytes: int) -> bytes:
    """The bytes of a native-API image field: plain base64, or a base64 data URL."""
    if text[:5].lower() == "data:":
        header, comma, text = text.partition(",")
        media_type, *params = header[5:].split(";")
        if not comma or "base64" not in (p.strip().lower() for p in params):
            raise bad_request(f"'{field}' must be a base64 data URL.", field)
        if media_type.strip().lower() not in ALLOWED_MEDIA_TYPES:
            raise unsupported(field)
    # Line breaks are legal in MIME base64; anything else outside the alphabet is not.
    compact = "".join(text.split())
    # Base64 grows data by 4/3: refuse before decoding what would exceed the cap.
    if len(compact) > (max_bytes + 2) // 3 * 4:
        raise ApiError(413, f"'{field}' is larger than {max_bytes} bytes.", param=field,
                       code="body_too_large")
    try:
        return base64.b64decode(compact.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"'{field}' is not valid base64.", field) from None


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _repaint_area(mask: Image.Image) -> Image.Image:
    """An L image, 255 where the pipeline repaints."""
    if _has_transparency(mask):
        alpha = mask.convert("RGBA").getchannel("A")
        return alpha.point(lambda a: 255 if a < _TRANSPARENT_BELOW else 0)
    return mask.convert("L")


def _transparent_area(image: Image.Image) -> Image.Image | None:
    """The image's transparent pixels as a mask, or None when it has none."""
    if not _has_transparency(image):
        return None
    area = _repaint_area(image)
    return area if area.getbbox() is not None else None


def prepare(image: Image.Image, mask: Image.Image | None, size: tuple[int, int],
            mask_field: str) -> ImageInputs:
    """Check sizes agree, derive the mask, resize both to the output size."""
    if mask is not None and mask.size != image.size:
        raise bad_request(f"'{mask_field}' must have the same size as the image "
                          f"({image.size[0]}x{image.size[1]}).", mask_field)
    area = _repaint_area(mask) if mask is not None else _transparent_area(image)
    init = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    if area is None:
        return ImageInputs(init, None)
    return ImageInputs(init, area.resize(size, Image.Resampling.BILINEAR))


def _decode_and_prepare(image_data: bytes, mask_data: bytes | None, size: tuple[int, int],
                        image_field: str, mask_field: str) -> ImageInputs:
    image = decode_image(image_data, image_field)
    mask = decode_image(mask_data, mask_field) if mask_data is not None else None
    return prepare(image, mask, size, mask_field)


async def load_inputs(image_data: bytes, mask_data: bytes | None, size: tuple[int, int],
                      image_field: str, mask_field: str) -> ImageInputs:
    """Decode and prepare in a thread: a large PNG takes longer than an event loop may wait."""
    return await asyncio.to_thread(_decode_and_prepare, image_data, mask_data, size,
                                   image_field, mask_field)


async def native_inputs(body: InferenceRequest, size: tuple[int, int],
                        max_bytes: int) -> ImageInputs:
    """init_image / mask_image of a native JSON body (both optional)."""
    init_value, mask_value = body.init_image, body.mask_image
    if init_value is None:
        if mask_value is not None:
            raise bad_request("'mask_image' needs an 'init_image'.", "mask_image")
        return NO_INPUTS
    return await asyncio.to_thread(_decode_base64_inputs, init_value, mask_value, size,
                                   max_bytes)


def _decode_base64_inputs(init_value: str, mask_value: str | None, size: tuple[int, int],
                          max_bytes: int) -> ImageInputs:
    # Megabytes of base64 take the loop tens of milliseconds: all of it runs in the thread.
    image_data = decode_base64(init_value, "init_image", max_bytes)
    mask_data = None if mask_value is None else decode_base64(mask_value, "mask_image",
                                                              max_bytes)
    return _decode_and_prepare(image_data, mask_data, size, "init_image", "mask_image")
