"""Image-to-image and inpainting end to end, on the embedded model.

Inpainting keeps every pixel outside the mask exactly (the sampler puts the
init image back outside the mask at each step), so the tests can check pixels,
not just status codes.
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
from PIL import Image

from imagegen.batcher import QueueState, Ticket
from imagegen.types import GenerationRequest, SamplingParams
from tests.helpers import live_server
from tests.privacy.support import encode

EDITS = "/v1/images/edits"
NATIVE = "/v1/inference/shapes"
PROMPT = "a big yellow circle on a black background"
FIELDS = {"prompt": PROMPT, "size": "32x32", "num_inference_steps": "2", "seed": "7",
          "response_format": "b64_json"}


def noise(mode: str = "RGB") -> Image.Image:
    channels = len(mode)
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(), mode)


def left_half(repaint: int, keep: int) -> Image.Image:
    """A 32x32 greyscale image whose left half is `repaint` and right half `keep`."""
    mask = Image.new("L", (32, 32), keep)
    mask.paste(repaint, (0, 0, 16, 32))
    return mask


def transparent_left() -> Image.Image:
    """A black mask, transparent on the left: only its alpha can mark the area."""
    mask = Image.new("LA", (32, 32), (0, 255))
    mask.paste((0, 0), (0, 0, 16, 32))
    return mask


def pixels(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


async def edit(client: httpx.AsyncClient, image: Image.Image, mask: Image.Image | None = None,
               **fields: str) -> httpx.Response:
    files = {"image": ("image.png", encode(image, "PNG"), "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", encode(mask, "PNG"), "image/png")
    return await client.post(EDITS, data={**FIELDS, **fields}, files=files)


async def test_inpainting_keeps_every_pixel_outside_the_mask(client: httpx.AsyncClient) -> None:
    init = noise()
    out = pixels(await edit(client, init, left_half(255, 0), strength="1"))
    original = np.asarray(init, dtype=np.int16)
    assert np.abs(out[:, 16:] - original[:, 16:]).max() <= 1  # kept
    assert np.abs(out[:, :16] - original[:, :16]).mean() > 20  # repainted


async def test_transparency_marks_the_area_to_repaint_like_a_white_mask(
        client: httpx.AsyncClient) -> None:
    init = noise()
    white = pixels(await edit(client, init, left_half(255, 0)))
    transparent = pixels(await edit(client, init, transparent_left()))
    # OpenAI's form: no mask, and the image's own transparent pixels are the area.
    with_alpha = init.convert("RGBA")
    with_alpha.putalpha(left_half(0, 255))
    own_alpha = pixels(await edit(client, with_alpha))
    assert np.array_equal(white, transparent)
    assert np.array_equal(white, own_alpha)


def palette_transparent_left() -> Image.Image:
    """A palette mask (PNG's tRNS chunk): entry 0, on the left, is transparent; both are black."""
    mask = Image.new("P", (32, 32), 1)
    mask.putpalette([0, 0, 0, 0, 0, 0])
    mask.paste(0, (0, 0, 16, 32))
    mask.info["transparency"] = 0
    return mask


def colour_key_transparent_left() -> Image.Image:
    """An RGB mask with no alpha channel: tRNS makes one colour, on the left, transparent."""
    mask = Image.new("RGB", (32, 32), (0, 0, 0))
    mask.paste((1, 2, 3), (0, 0, 16, 32))
    mask.info["transparency"] = (1, 2, 3)
    return mask


def alpha_left(left: int, right: int) -> Image.Image:
    """A black mask whose left half has alpha `left` and right half alpha `right`."""
    mask = Image.new("LA", (32, 32), (0, right))
    mask.paste((0, left), (0, 0, 16, 32))
    return mask


async def test_transparency_without_an_alpha_channel_and_at_the_threshold(
        client: httpx.AsyncClient) -> None:
    """A tRNS chunk (palette or colour key) marks the area too; alpha below 128 repaints,
    128 and above keeps."""
    init = noise()
    white = pixels(await edit(client, init, left_half(255, 0)))
    for mask in (palette_transparent_left(), colour_key_transparent_left(), alpha_left(127, 128)):
        decoded = Image.open(io.BytesIO(encode(mask, "PNG")))
        assert decoded.mode == mask.mode  # the PNG kept the mask's kind of transparency
        assert np.array_equal(pixels(await edit(client, init, mask)), white), mask.mode


async def test_an_opaque_alpha_channel_is_not_a_mask(client: httpx.AsyncClient) -> None:
    """An image with an alpha channel but no transparent pixel is image-to-image, like the
    same image without the channel (not an inpainting that keeps everything)."""
    init = noise()
    plain = pixels(await edit(client, init))
    opaque = pixels(await edit(client, init.convert("RGBA")))
    assert np.array_equal(plain, opaque)
    assert np.abs(plain - np.asarray(init, dtype=np.int16)).mean() > 20  # repainted


async def test_the_transparent_area_is_the_same_at_a_larger_output_size(
        client: httpx.AsyncClient) -> None:
    """Resized to 64x64, the image's own transparent pixels still give what the white mask
    gives: the colours under them are the image's, not darkened by the alpha."""
    init = noise()
    white = pixels(await edit(client, init, left_half(255, 0), size="64x64"))
    with_alpha = init.convert("RGBA")
    with_alpha.putalpha(left_half(0, 255))
    own_alpha = pixels(await edit(client, with_alpha, size="64x64"))
    assert np.array_equal(white, own_alpha)


async def test_both_apis_agree_and_the_init_image_and_strength_matter(
        client: httpx.AsyncClient) -> None:
    init = encode(noise(), "PNG")
    form = await client.post(EDITS, data={**FIELDS, "strength": "0.5"},
                             files={"image": ("i.png", init, "image/png")})
    native = await client.post(NATIVE, json={
        "prompt": PROMPT, "width": 32, "height": 32, "num_inference_steps": 2, "seed": 7,
        "strength": 0.5, "output": "data_url", "init_image": base64.b64encode(init).decode()})
    assert native.status_code == 200, native.text
    native_png = base64.b64decode(native.json()["images"][0].split(",", 1)[1])
    assert base64.b64decode(form.json()["data"][0]["b64_json"]) == native_png
    text_only = await client.post("/v1/images/generations", json={
        **{k: v for k, v in FIELDS.items() if k != "seed"}, "seed": 7,
        "num_inference_steps": 2})
    stronger = await client.post(EDITS, data={**FIELDS, "strength": "1"},
                                 files={"image": ("i.png", init, "image/png")})
    assert not np.array_equal(pixels(form), pixels(text_only))
    assert not np.array_equal(pixels(form), pixels(stronger))


async def test_n_edits_of_one_image_with_a_larger_size(client: httpx.AsyncClient) -> None:
    response = await edit(client, noise(), n="2", size="64x64", response_format="url")
    assert response.status_code == 200, response.text
    urls = [item["url"] for item in response.json()["data"]]
    images = [Image.open(io.BytesIO((await client.get(url)).content)) for url in urls]
    assert [image.size for image in images] == [(64, 64), (64, 64)]


def test_image_to_image_batches_only_with_the_same_strength() -> None:
    params = SamplingParams("shapes", 32, 32, 2, 3.0)
    init = noise()

    def ticket(name: str, image: Image.Image | None, strength: float = 0.8) -> Ticket:
        return Ticket(GenerationRequest(name, params, PROMPT, None, 1, 0, init_image=image,
                                        strength=strength))

    state = QueueState(capacity=8)
    for queued in (ticket("text", None), ticket("edit-a", init), ticket("edit-b", init, 0.5),
                   ticket("edit-c", init), ticket("text-2", None, 0.5)):
        state.append(queued)
    batches = [[t.id for t in state.next_micro_batch(lambda model: 8)] for _ in range(3)]
    assert batches == [["text", "text-2"], ["edit-a", "edit-c"], ["edit-b"]]


def test_the_openai_client_edits_unchanged() -> None:
    with live_server() as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        result = client.images.edit(
            image=("image.png", encode(noise(), "PNG"), "image/png"),
            mask=("mask.png", encode(left_half(255, 0), "PNG"), "image/png"),
            prompt=PROMPT, size="32x32", n=1, response_format="b64_json",
            extra_body={"num_inference_steps": 1, "seed": 3})
    assert result.data is not None
    b64 = result.data[0].b64_json
    assert b64 is not None
    assert Image.open(io.BytesIO(base64.b64decode(b64))).size == (32, 32)


def sixteen_bit(image: Image.Image) -> Image.Image:
    """The same greyscale image at 16 bits per pixel (each value times 257: 255 -> 65535)."""
    return Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)


async def test_a_sixteen_bit_greyscale_png_reads_as_its_eight_bit_self(
        client: httpx.AsyncClient) -> None:
    """16-bit greyscale is scaled, not clipped: a 25% grey stays 25% grey (clipped, it would
    turn white, washing out an init image and making a dark mask area repaint)."""
    grey = noise("L")
    assert Image.open(io.BytesIO(encode(sixteen_bit(grey), "PNG"))).mode.startswith("I")
    assert np.array_equal(pixels(await edit(client, sixteen_bit(grey))),
                          pixels(await edit(client, grey)))
    init = noise()
    white = pixels(await edit(client, init, left_half(255, 0)))
    dark_right = sixteen_bit(left_half(255, 64))  # 25% grey on the right: kept
    assert np.array_equal(pixels(await edit(client, init, dark_right)), white)


def stored_sideways(image: Image.Image) -> bytes:
    """The PNG a camera would write: pixels stored turned a quarter, EXIF orientation 6
    ("turn 90 degrees clockwise to show")."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.transpose(Image.Transpose.ROTATE_90).save(buffer, "PNG", exif=exif)
    return buffer.getvalue()


async def test_both_images_are_turned_upright_by_their_exif(client: httpx.AsyncClient) -> None:
    init = noise()
    upright = pixels(await edit(client, init, left_half(255, 0)))
    sideways = await client.post(EDITS, data=FIELDS, files={
        "image": ("image.png", stored_sideways(init), "image/png"),
        "mask": ("mask.png", stored_sideways(left_half(255, 0)), "image/png")})
    assert np.array_equal(pixels(sideways), upright)
