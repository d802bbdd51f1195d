"""The form-part cap at its boundary, through the app: docs/privacy.md promises 32 parts.

A cap that is off by one either refuses a legitimate form or lets one part too
many through; only the exact boundary tells the two apart.
"""

from __future__ import annotations

import httpx
import pytest

from tests.privacy.support import encode, solid

MAX_PARTS = 32  # docs/privacy.md: "32 form parts"
FIELDS = {"prompt": "a red circle", "size": "32x32", "num_inference_steps": "1"}
PNG = encode(solid((10, 20, 30)), "PNG")


def form(parts: int) -> dict[str, str]:
    """The fields of a form of `parts` parts in all, with the image; unknown names are ignored."""
    extra = parts - len(FIELDS) - 1
    return {**FIELDS, **{f"extra{i}": "1" for i in range(extra)}}


@pytest.mark.parametrize(("parts", "status"), [(MAX_PARTS, 200), (MAX_PARTS + 1, 413)])
async def test_exactly_the_part_cap_is_accepted_and_one_more_refused(
        client: httpx.AsyncClient, parts: int, status: int) -> None:
    fields = form(parts)
    assert len(fields) + 1 == parts
    response = await client.post("/v1/images/edits", data=fields,
                                 files={"image": ("image.png", PNG, "image/png")})
    assert response.status_code == status, response.text
    if status == 413:
        assert response.json()["error"]["code"] == "body_too_large"
