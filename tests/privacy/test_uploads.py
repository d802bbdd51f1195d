"""Image uploads: parsed in memory under hard caps; every bad one is a 4xx naming its field."""

from __future__ import annotations

import base64
import random
import struct
import zlib
from typing import Any

import httpx
import pytest

from tests.helpers import make_settings, running_app
from tests.privacy.support import encode, png_bomb, solid
from web.errors import ApiError
from web.multipart import FormParser, Limits, Part, fields_and_files

EDITS = "/v1/images/edits"
NATIVE = "/v1/inference/shapes"
FIELDS = {"prompt": "a red circle", "size": "32x32", "num_inference_steps": "1"}
NATIVE_BODY = {"prompt": "a red circle", "width": 32, "height": 32, "num_inference_steps": 1}
PNG = encode(solid((10, 20, 30)), "PNG")
KNOWN = frozenset({"prompt", "image"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(response: httpx.Response, status: int, param: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


async def edit(client: httpx.AsyncClient, fields: dict[str, str] | None = None,
               **files: bytes) -> httpx.Response:
    return await client.post(EDITS, data=FIELDS if fields is None else fields,
                             files={name: (f"{name}.bin", data) for name, data in files.items()})


# -- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bomb", [png_bomb(5000, 5000), png_bomb(20000, 20000, rows=1)],
                         ids=["25-megapixel", "400-megapixel-header"])
async def test_a_decompression_bomb_is_413_before_decoding(client: httpx.AsyncClient,
                                                           bomb: bytes) -> None:
    assert_error(await edit(client, image=bomb), 413, "image")
    assert_error(await edit(client, image=PNG, mask=bomb), 413, "mask")
    native = await client.post(NATIVE, json={**NATIVE_BODY, "init_image": b64(bomb)})
    assert_error(native, 413, "init_image")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
async def test_an_image_of_a_format_not_allowed_is_415(client: httpx.AsyncClient,
                                                       fmt: str) -> None:
    other = encode(solid((10, 20, 30)), fmt)
    assert_error(await edit(client, image=other), 415, "image")
    native = await client.post(NATIVE, json={**NATIVE_BODY, "init_image": b64(other)})
    assert_error(native, 415, "init_image")


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


IHDR_END = 8 + 25  # signature + IHDR chunk
BROKEN_IMAGES = {
    "truncated": PNG[: len(PNG) // 2],
    "empty": b"",
    "no-pixels": PNG[:IHDR_END] + chunk(b"IEND", b""),
    # 50 MB of zeros in a compressed text chunk: a bomb in the metadata, not the pixels.
    "text-chunk-bomb": PNG[:IHDR_END] + chunk(b"zTXt", b"k\0\0" + zlib.compress(
        b"\0" * (50 * 2**20))) + PNG[IHDR_END:],
    "broken-webp": b"RIFF\x20\x00\x00\x00WEBPVP8 " + b"\x00" * 20,
}


@pytest.mark.parametrize("broken", list(BROKEN_IMAGES.values()), ids=list(BROKEN_IMAGES))
async def test_a_broken_image_is_400_never_500(client: httpx.AsyncClient, broken: bytes) -> None:
    assert_error(await edit(client, image=broken), 400, "image")
    assert_error(await edit(client, image=PNG, mask=broken), 400, "mask")


async def test_what_is_not_an_image_is_415(client: httpx.AsyncClient) -> None:
    assert_error(await edit(client, image=b"%PDF-1.7 not an image"), 415, "image")
    data_url = await client.post(NATIVE, json={**NATIVE_BODY,
                                               "init_image": f"data:text/plain;base64,{b64(PNG)}"})
    assert_error(data_url, 415, "init_image")


async def test_bad_base64_fields_are_400(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"init_image": "not base64!"}, "init_image"),
        ({"init_image": 42}, "init_image"),
        ({"init_image": f"data:image/png,{b64(PNG)}"}, "init_image"),  # not ;base64
        ({"init_image": b64(PNG), "mask_image": "%%%"}, "mask_image"),
        ({"mask_image": b64(PNG)}, "mask_image"),  # a mask needs an init image
    ]
    for fields, param in cases:
        assert_error(await client.post(NATIVE, json={**NATIVE_BODY, **fields}), 400, param)


async def test_line_wrapped_base64_and_data_urls_are_accepted(client: httpx.AsyncClient) -> None:
    wrapped = "\n".join(b64(PNG)[i:i + 76] for i in range(0, len(b64(PNG)), 76))
    for value in (wrapped, f"data:image/png;base64,{b64(PNG)}"):
        response = await client.post(NATIVE, json={**NATIVE_BODY, "init_image": value})
        assert response.status_code == 200, response.text


async def test_a_mask_of_another_size_is_400_naming_the_mask(client: httpx.AsyncClient) -> None:
    mask = encode(solid((255,), (31, 32), "L"), "PNG")
    assert_error(await edit(client, image=PNG, mask=mask), 400, "mask")
    native = await client.post(NATIVE, json={**NATIVE_BODY, "init_image": b64(PNG),
                                             "mask_image": b64(mask)})
    assert_error(native, 400, "mask_image")


# -- the form ---------------------------------------------------------------------------------


async def test_a_missing_image_is_400_naming_image(client: httpx.AsyncClient) -> None:
    assert_error(await edit(client, mask=PNG), 400, "image")
    as_text = await client.post(EDITS, data={**FIELDS, "image": "a picture"},
                                files={"mask": ("m.png", PNG)})
    assert_error(as_text, 400, "image")


async def test_form_fields_are_validated_like_json_ones(client: httpx.AsyncClient) -> None:
    for name, value in [("n", "two"), ("n", "99"), ("strength", "2"), ("seed", "-1"),
                        ("size", "33x33"), ("guidance_scale", "much"), ("prompt", "")]:
        assert_error(await edit(client, {**FIELDS, name: value}, image=PNG), 400, name)
    no_prompt = {k: v for k, v in FIELDS.items() if k != "prompt"}
    assert_error(await edit(client, no_prompt, image=PNG), 400, "prompt")


async def test_the_openai_list_form_of_image_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(EDITS, data=FIELDS, files=[("image[]", ("i.png", PNG))])
    assert response.status_code == 200, response.text


async def test_too_many_parts_or_bytes_is_413() -> None:
    async with running_app(make_settings(max_body_bytes=256 * 1024)) as client:
        many = {**FIELDS, **{f"extra{i}": "x" for i in range(40)}}
        assert_error(await edit(client, many, image=PNG), 413, None)
        assert_error(await edit(client, image=b"\0" * (300 * 1024)), 413, None)
        long_prompt = {**FIELDS, "prompt": "red " * 20_000}  # 80 KB: over the field cap
        assert_error(await edit(client, long_prompt, image=PNG), 413, "prompt")


async def test_a_body_that_is_not_a_form_is_415_and_a_broken_form_400(
        client: httpx.AsyncClient) -> None:
    as_json = await client.post(EDITS, json=FIELDS)
    assert as_json.status_code == 415
    no_boundary = await client.post(EDITS, content=b"x",
                                    headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400
    assert no_boundary.json()["error"]["code"] == "invalid_multipart"


# -- the parser, on its own -------------------------------------------------------------------

BOUNDARY = "b0und"
CONTENT_TYPE = f'multipart/form-data; boundary="{BOUNDARY}"'


def body(*parts: str) -> bytes:
    return ("preamble\r\n" + "".join(f"--{BOUNDARY}\r\n{part}\r\n" for part in parts)
            + f"--{BOUNDARY}--\r\nepilogue").encode()


def parse_multipart(data: bytes, content_type: str, limits: Limits,
                    known: frozenset[str], chunk: int = 7) -> list[Part]:
    """The push parser fed in small chunks, as a slow network would deliver the body."""
    form = FormParser(content_type, limits, known)
    for start in range(0, len(data), chunk):
        form.feed(data[start:start + chunk])
    return form.finish()


def test_the_parser_keeps_bytes_exact_and_reads_quoted_names() -> None:
    parsed = parse_multipart(body(
        'Content-Disposition: form-data; name="prompt"\r\n\r\nline one\r\nline two',
        'Content-Disposition: form-data; name="image"; filename="a \\"b\\".png"\r\n'
        "Content-Type: image/png\r\n\r\n--b0un\r\n",
    ), CONTENT_TYPE, Limits(), KNOWN)
    fields, files = fields_and_files(parsed, KNOWN)
    assert fields == {"prompt": "line one\r\nline two"}
    assert files == {"image": b"--b0un\r\n"}
    assert parsed[1].filename == 'a "b".png'


@pytest.mark.parametrize(("data", "status"), [
    (b"no boundary here", 400),
    (body("Content-Disposition: form-data\r\n\r\nx"), 400),  # no name
    (body('Content-Disposition: attachment; name="prompt"\r\n\r\nx'), 400),
    (body("X-Other: 1\r\n\r\nx"), 400),  # no Content-Disposition
    (body('Content-Disposition: form-data; name="prompt"\r\n\r\nx')[:-12], 400),  # unclosed
    (body(*['Content-Disposition: form-data; name="p"\r\n\r\nx'] * 5), 413),  # too many parts
    (body('Content-Disposition: form-data; name="p"\r\n\r\n' + "x" * 65), 413),  # field too big
    (body('Content-Disposition: form-data; name="i"; filename="f"\r\n\r\n' + "x" * 129), 413),
])
def test_the_parser_refuses_bad_forms(data: bytes, status: int) -> None:
    with pytest.raises(ApiError) as refused:
        parse_multipart(data, CONTENT_TYPE, Limits(max_parts=4, max_field_bytes=64,
                                                   max_file_bytes=128), KNOWN)
    assert refused.value.status == status


def test_the_parser_answers_any_mangled_form_with_parts_or_an_api_error() -> None:
    valid = body('Content-Disposition: form-data; name="prompt"\r\n\r\na red circle',
                 'Content-Disposition: form-data; name="image"; filename="i.png"\r\n\r\n'
                 + "x" * 40)
    rng = random.Random(0)
    for _ in range(2000):
        mangled = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(mangled))
            action = rng.choice(("flip", "cut", "insert", "delete"))
            if action == "flip":
                mangled[at] = rng.randrange(256)
            elif action == "cut":
                del mangled[at:]
            elif action == "insert":
                mangled[at:at] = rng.choice([b"\r\n", b"--", b'"', b";", b"\\", BOUNDARY.encode()])
            else:
                del mangled[at:at + rng.randint(1, 8)]
            if not mangled:
                break
        try:
            fields_and_files(parse_multipart(bytes(mangled), CONTENT_TYPE, Limits(), KNOWN), KNOWN)
        except ApiError as refused:
            assert refused.status in (400, 413)


# -- each refusal's exact error ---------------------------------------------------------------


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def refusal(message: str, param: str | None, code: str) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": code}


MAX_PIXELS = 4096 * 4096  # docs/privacy.md: an input of at most 16 megapixels
TOO_MANY_PIXELS = f"has more than {MAX_PIXELS} pixels."
NOT_AN_IMAGE = "must be a PNG, JPEG or WebP image."
GIF = encode(solid((10, 20, 30)), "GIF")


@pytest.mark.parametrize(("files", "status", "error"), [
    ({"image": GIF}, 415, refusal(f"'image' {NOT_AN_IMAGE}", "image", "unsupported_media_type")),
    ({"image": PNG, "mask": GIF}, 415,
     refusal(f"'mask' {NOT_AN_IMAGE}", "mask", "unsupported_media_type")),
    ({"image": b""}, 400, refusal("'image' is empty.", "image", "invalid_value")),
    ({"image": PNG, "mask": b""}, 400, refusal("'mask' is empty.", "mask", "invalid_value")),
    ({"image": BROKEN_IMAGES["truncated"]}, 400,
     refusal("'image' could not be decoded.", "image", "invalid_value")),
    # 25 megapixels: refused by this service's own check, from the header.
    ({"image": png_bomb(5000, 5000, rows=1)}, 413,
     refusal(f"'image' {TOO_MANY_PIXELS}", "image", "image_too_large")),
    # 400 megapixels: Pillow's own bomb check fires first; the answer is the same.
    ({"image": PNG, "mask": png_bomb(20000, 20000, rows=1)}, 413,
     refusal(f"'mask' {TOO_MANY_PIXELS}", "mask", "image_too_large")),
], ids=["gif", "gif-mask", "empty", "empty-mask", "truncated", "25-megapixel",
        "400-megapixel-mask"])
async def test_each_refused_upload_has_its_exact_error(client: httpx.AsyncClient,
                                                       files: dict[str, bytes], status: int,
                                                       error: dict[str, Any]) -> None:
    assert error_of(await edit(client, **files), status) == error


@pytest.mark.parametrize(("size", "status"), [((4096, 4096), 200), ((4097, 4096), 413),
                                              ((4096, 4097), 413)])
async def test_the_pixel_cap_is_exact(client: httpx.AsyncClient, size: tuple[int, int],
                                      status: int) -> None:
    """16 megapixels are accepted (and decoded); one row or column more is refused."""
    response = await edit(client, image=png_bomb(*size))
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert error_of(response, 413) == refusal(f"'image' {TOO_MANY_PIXELS}", "image",
                                                  "image_too_large")


async def test_a_mask_of_another_size_names_the_image_size(client: httpx.AsyncClient) -> None:
    wide = encode(solid((10, 20, 30), (32, 16)), "PNG")
    mask = encode(solid((255,), (16, 32), "L"), "PNG")
    assert error_of(await edit(client, image=wide, mask=mask), 400) == refusal(
        "'mask' must have the same size as the image (32x16).", "mask", "invalid_value")


def with_junk_inside(text: str, junk: str) -> str:
    return text[:40] + junk + text[40:]


@pytest.mark.parametrize(("fields", "status", "error"), [
    ({"mask_image": b64(PNG)}, 400,
     refusal("'mask_image' needs an 'init_image'.", "mask_image", "invalid_value")),
    ({"init_image": f"data:image/png,{b64(PNG)}"}, 400,
     refusal("'init_image' must be a base64 data URL.", "init_image", "invalid_value")),
    ({"init_image": "data:image/png;base64"}, 400,  # no comma: no data at all
     refusal("'init_image' must be a base64 data URL.", "init_image", "invalid_value")),
    ({"init_image": f"data:image/gif;base64,{b64(GIF)}"}, 415,
     refusal(f"'init_image' {NOT_AN_IMAGE}", "init_image", "unsupported_media_type")),
    # What follows the first comma is the data (RFC 2397): a second comma is in the data.
    ({"init_image": f"data:image/png;base64,{b64(PNG)},{b64(PNG)}"}, 400,
     refusal("'init_image' is not valid base64.", "init_image", "invalid_value")),
    # One character outside the alphabet is refused, not skipped (skipping it would
    # leave the valid PNG).
    ({"init_image": with_junk_inside(b64(PNG), "!")}, 400,
     refusal("'init_image' is not valid base64.", "init_image", "invalid_value")),
    ({"init_image": b64(PNG), "mask_image": with_junk_inside(b64(PNG), "*")}, 400,
     refusal("'mask_image' is not valid base64.", "mask_image", "invalid_value")),
    ({"init_image": b64(GIF)}, 415,
     refusal(f"'init_image' {NOT_AN_IMAGE}", "init_image", "unsupported_media_type")),
    ({"init_image": b64(png_bomb(5000, 5000, rows=1))}, 413,
     refusal(f"'init_image' {TOO_MANY_PIXELS}", "init_image", "image_too_large")),
], ids=["mask-alone", "data-url-not-base64", "data-url-no-comma", "data-url-gif",
        "data-url-two-commas", "junk-in-base64", "junk-in-mask-base64", "gif", "25-megapixel"])
async def test_each_refused_native_image_has_its_exact_error(
        client: httpx.AsyncClient, fields: dict[str, str], status: int,
        error: dict[str, Any]) -> None:
    response = await client.post(NATIVE, json={**NATIVE_BODY, **fields})
    assert error_of(response, status) == error


async def test_an_uploaded_adapter_in_base64_is_capped_at_exactly_its_bytes() -> None:
    """The base64 of exactly the cap is read (and then judged as an adapter); one character
    more is refused from its length, before decoding (valid base64 or not)."""
    cap = 3000  # a multiple of 3: base64 of the cap has no padding
    exact = b64(b"\0" * cap)
    too_large = refusal(f"'data' is larger than {cap} bytes.", "data", "body_too_large")
    async with running_app(make_settings(max_lora_bytes=cap)) as client:
        read = await client.post("/v1/loras", json={"data": exact})
        assert error_of(read, 400) == refusal("The adapter is not a readable safetensors file.",
                                              "data", "invalid_value")
        for longer in (exact + "A", exact + "AAAA", b64(b"\0" * (cap + 1))):
            response = await client.post("/v1/loras", json={"data": longer})
            assert error_of(response, 413) == too_large


# -- the form's refusals, exactly -------------------------------------------------------------


def form_body(*parts: tuple[str, bytes]) -> bytes:
    """A form of raw parts: (headers, data) each, with the usual CRLFs and closing delimiter."""
    return b"".join(f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"
                    for headers, data in parts) + f"--{BOUNDARY}--\r\n".encode()


def named(name: str, filename: str | None = None) -> str:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    return disposition if filename is None else f'{disposition}; filename="{filename}"'


def malformed(reason: str) -> dict[str, Any]:
    return refusal(f"The multipart body is malformed: {reason}.", None, "invalid_multipart")


IMAGE_PART = (named("image", "i.png"), PNG)
PROMPT_PART = (named("prompt"), b"a red circle")


async def post_form(client: httpx.AsyncClient, data: bytes,
                    content_type: str | bytes = CONTENT_TYPE) -> httpx.Response:
    return await client.post(EDITS, content=data, headers={"content-type": content_type})


@pytest.mark.parametrize(("parts", "status", "error"), [
    ([IMAGE_PART, PROMPT_PART, (named("prompt"), b"again")], 400,
     refusal("'prompt' is given more than once.", "prompt", "invalid_value")),
    ([IMAGE_PART, (named("image", "j.png"), PNG)], 400,
     refusal("'image' is given more than once.", "image", "invalid_value")),
    # A name the route does not read is never echoed back.
    ([IMAGE_PART, PROMPT_PART, (named("secret"), b"1"), (named("secret"), b"2")], 400,
     refusal("a form field is given more than once.", None, "invalid_value")),
    ([IMAGE_PART, (named("prompt"), b"caf\xe9")], 400,
     refusal("'prompt' is not valid UTF-8.", "prompt", "invalid_value")),
    ([IMAGE_PART, PROMPT_PART, (named("secret"), b"\xff")], 400,
     refusal("a form field is not valid UTF-8.", None, "invalid_value")),
    ([IMAGE_PART, (named("prompt"), b"x" * (64 * 1024 + 1))], 413,
     refusal("'prompt' is larger than 65536 bytes.", "prompt", "body_too_large")),
    ([IMAGE_PART, PROMPT_PART, (named("secret"), b"x" * (64 * 1024 + 1))], 413,
     refusal("a form field is larger than 65536 bytes.", None, "body_too_large")),
    ([IMAGE_PART, PROMPT_PART, *[(named(f"extra{i}"), b"1") for i in range(31)]], 413,
     refusal("The form has more than 32 parts.", None, "body_too_large")),
    ([IMAGE_PART, ('Content-Disposition: attachment; name="prompt"', b"x")], 400,
     malformed("a part is not form-data")),
    ([IMAGE_PART, ("Content-Disposition: form-data", b"x")], 400, malformed("a part has no name")),
    ([IMAGE_PART, ("Content-Type: text/plain", b"x")], 400,
     malformed("a part has no Content-Disposition header")),
    ([IMAGE_PART, (f"{named('prompt')}\r\nX-Pad: {'x' * 4096}", b"x")], 400,
     malformed("a part's headers are longer than 4096 bytes")),
], ids=["duplicate", "duplicate-file", "duplicate-unknown", "not-utf8", "not-utf8-unknown",
        "field-too-large", "unknown-field-too-large", "33-parts", "not-form-data", "no-name",
        "no-disposition", "long-headers"])
async def test_each_refused_form_has_its_exact_error(client: httpx.AsyncClient,
                                                     parts: list[tuple[str, bytes]],
                                                     status: int, error: dict[str, Any]) -> None:
    assert error_of(await post_form(client, form_body(*parts)), status) == error


async def test_each_broken_form_has_its_exact_error(client: httpx.AsyncClient) -> None:
    whole = form_body(IMAGE_PART, PROMPT_PART)
    cases: list[tuple[bytes, str | bytes, str]] = [
        (whole, "multipart/form-data", "the Content-Type header has no boundary"),
        (whole, 'multipart/form-data; boundary="other"', "the boundary never occurs"),
        (b"x" * 5000 + whole, CONTENT_TYPE, "the boundary never occurs"),  # preamble > 4096
        (whole[:-len(f"--{BOUNDARY}--\r\n")], CONTENT_TYPE, "the closing boundary is missing"),
        (f"--{BOUNDARY}X".encode(), CONTENT_TYPE, "it does not follow RFC 7578"),
        # A boundary that is not ASCII is refused like one that never occurs, never a 500.
        ("--b\xe9\r\n".encode("latin-1") + whole, b"multipart/form-data; boundary=b\xe9",
         "the boundary never occurs"),
    ]
    for data, content_type, reason in cases:
        assert error_of(await post_form(client, data, content_type), 400) == malformed(reason)


def parse_in_chunks(data: bytes, limits: Limits, chunk: int | None) -> list[Part]:
    return parse_multipart(data, CONTENT_TYPE, limits, KNOWN, chunk=chunk or len(data))


CHUNKINGS = [1, 7, None]  # byte by byte, small pieces, all at once
SMALL = Limits(max_parts=4, max_field_bytes=64, max_file_bytes=128)


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_field_and_file_caps_are_exact(chunk: int | None) -> None:
    """Each plain field may have max_field_bytes, each file max_file_bytes (more than a field
    may), however the body is split; one byte more is refused, naming a known field."""
    fits = form_body((named("prompt"), b"p" * 64), (named("image", "i.png"), b"i" * 128),
                     (named("other"), b"o" * 64))
    parts = parse_in_chunks(fits, SMALL, chunk)
    assert [(p.name, p.filename, len(p.data)) for p in parts] == [
        ("prompt", None, 64), ("image", "i.png", 128), ("other", None, 64)]
    for parts_over, message, param in [
        (((named("prompt"), b"p" * 65),), "'prompt' is larger than 64 bytes.", "prompt"),
        (((named("prompt"), b"p"), (named("image", "i.png"), b"i" * 129)),
         "'image' is larger than 128 bytes.", "image"),
        (((named("prompt"), b"p"), (named("other", "o.bin"), b"o" * 129)),
         "a form field is larger than 128 bytes.", None),
    ]:
        with pytest.raises(ApiError) as refused:
            parse_in_chunks(form_body(*parts_over), SMALL, chunk)
        assert (refused.value.status, refused.value.message, refused.value.param,
                refused.value.code) == (413, message, param, "body_too_large")


# Header bytes are the names and values of a part's headers: this part's others make 43.
PADDED = f"{named('p')}\r\nX-Pad: "


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_the_header_cap_is_exact(chunk: int | None) -> None:
    """4096 bytes of one part's headers are read, one more refused, however they arrive; the
    count starts again at each part."""
    fits = (PADDED + "x" * (4096 - 43), b"v")
    parts = parse_in_chunks(form_body(fits, fits), Limits(), chunk)
    assert [(p.name, p.data) for p in parts] == [("p", b"v"), ("p", b"v")]
    with pytest.raises(ApiError) as refused:
        parse_in_chunks(form_body((PADDED + "x" * (4096 - 42), b"v")), Limits(), chunk)
    assert refused.value.message == ("The multipart body is malformed: a part's headers are "
                                     "longer than 4096 bytes.")


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_the_preamble_cap_is_exact(chunk: int | None) -> None:
    """RFC 2046 allows a preamble before the first delimiter: up to 4096 bytes of it are
    skipped, however the body is split; one byte more is refused."""
    form = form_body(PROMPT_PART)
    parts = parse_in_chunks(b"x" * 4096 + form, Limits(), chunk)
    assert [(p.name, p.data) for p in parts] == [("prompt", b"a red circle")]
    with pytest.raises(ApiError) as refused:
        parse_in_chunks(b"x" * 4097 + form, Limits(), chunk)
    assert refused.value.message == "The multipart body is malformed: the boundary never occurs."


def test_the_disposition_may_come_after_other_headers() -> None:
    parts = parse_in_chunks(form_body((f"Content-Type: image/png\r\n{named('image', 'i.png')}",
                                       PNG)), Limits(), 7)
    assert [(p.name, p.filename, p.data) for p in parts] == [("image", "i.png", PNG)]
