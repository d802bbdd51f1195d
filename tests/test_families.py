"""Every diffusers family through the service, on tiny random-weight directories built here.

One models.toml lists SD 1.5, SDXL, SD3, Flux, PixArt-Sigma and Sana; each
generates, and image-to-image and inpainting work where the family has them
and are a 400 naming the capability where it does not.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from imagegen.registry import ModelConfigError, load_specs
from tests import tiny_families
from tests.helpers import make_settings, running_app
from tests.privacy.support import encode, solid
from web.cli import main

SIZE = f"{tiny_families.SIZE}x{tiny_families.SIZE}"
# What diffusers offers each family: (image-to-image, inpainting).
IMAGE_INPUTS = {"sd15": (True, True), "sdxl": (True, True), "sd3": (True, True),
                "flux": (True, True), "pixart-sigma": (False, False), "sana": (False, False)}
FAMILY_OF = {"sd15": "stable-diffusion", "sdxl": "stable-diffusion-xl",
             "sd3": "stable-diffusion-3", "flux": "flux", "pixart-sigma": "pixart-sigma",
             "sana": "sana"}


def models_toml(directory: Path, family_dirs: dict[str, Path], extra: str = "") -> Path:
    path = directory / "models.toml"
    path.write_text("".join(
        f'[models.{kind}]\npath = "{family_dirs[kind]}"\nsizes = ["{SIZE}"]\n'
        f"default_steps = 2\n" for kind in tiny_families.KINDS) + extra)
    return path


@pytest.fixture
async def client(tmp_path: Path, family_dirs: dict[str, Path]
                 ) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(models=models_toml(tmp_path, family_dirs))
    async with running_app(settings) as client:
        yield client


def test_each_directory_is_read_as_its_family(tmp_path: Path,
                                              family_dirs: dict[str, Path]) -> None:
    specs = load_specs(models_toml(tmp_path, family_dirs))
    for kind, family in FAMILY_OF.items():
        traits = specs[kind].traits
        assert (specs[kind].family, traits.name) == (family, family)
        assert (traits.image_to_image, traits.inpainting) == IMAGE_INPUTS[kind]
    # The family's declared defaults apply where models.toml sets none.
    assert specs["flux"].default_guidance == 3.5 and not specs["flux"].traits.negative_prompt
    assert specs["sd3"].traits.max_sequence_length == 256


async def test_every_family_generates(client: httpx.AsyncClient) -> None:
    for kind in tiny_families.KINDS:
        response = await client.post("/v1/images/generations", json={
            "model": kind, "prompt": "a red cat", "size": SIZE, "seed": 3,
            "response_format": "b64_json"})
        assert response.status_code == 200, (kind, response.text)
        image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
        assert image.size == (tiny_families.SIZE, tiny_families.SIZE), kind


async def test_image_inputs_work_or_are_refused_by_name(client: httpx.AsyncClient) -> None:
    image = encode(solid((200, 30, 30)), "PNG")
    mask = encode(solid((255,), mode="L"), "PNG")
    for kind, (image_to_image, inpainting) in IMAGE_INPUTS.items():
        fields = {"model": kind, "prompt": "a red cat", "size": SIZE, "seed": "1",
                  "strength": "0.6", "response_format": "b64_json"}
        varied = await client.post("/v1/images/edits", data=fields,
                                   files={"image": ("i.png", image, "image/png")})
        painted = await client.post("/v1/images/edits", data=fields, files={
            "image": ("i.png", image, "image/png"), "mask": ("m.png", mask, "image/png")})
        for response, offered, capability, param in (
                (varied, image_to_image, "image-to-image", "image"),
                (painted, inpainting, "inpainting", "mask")):
            if offered:
                assert response.status_code == 200, (kind, response.text)
            else:
                assert response.status_code == 400, (kind, response.text)
                error = response.json()["error"]
                assert error["param"] == param
                expected = f"Model '{kind}' ({FAMILY_OF[kind]}) has no {capability}."
                assert error["message"] == expected


async def test_a_negative_prompt_is_refused_where_the_family_takes_none(
        client: httpx.AsyncClient) -> None:
    body = {"prompt": "a red cat", "negative_prompt": "blurry", "num_inference_steps": 1}
    refused = await client.post("/v1/inference/flux", json=body)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "negative_prompt"
    assert "flux" in refused.json()["error"]["message"]
    assert (await client.post("/v1/inference/sd3", json=body)).status_code == 200


def test_a_declared_scheduler_replaces_the_directory_s_own(
        tmp_path: Path, family_dirs: dict[str, Path]) -> None:
    from imagegen.registry import load_pipeline

    # An SDXL-turbo-like entry: ancestral sampling, one step, no guidance.
    path = tmp_path / "turbo.toml"
    path.write_text(f'[models.turbo]\npath = "{family_dirs["sdxl"]}"\nsizes = ["{SIZE}"]\n'
                    'scheduler = "EulerAncestralDiscreteScheduler"\n'
                    'scheduler_options = {timestep_spacing = "trailing"}\n'
                    "default_steps = 1\ndefault_guidance = 0.0\n")
    spec = load_specs(path)["turbo"]
    pipeline = load_pipeline(spec)
    assert type(pipeline.text2image).__name__ == "StableDiffusionXLPipeline"  # type: ignore[attr-defined]
    scheduler = pipeline.text2image.scheduler  # type: ignore[attr-defined]
    assert type(scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert scheduler.config.timestep_spacing == "trailing"


@pytest.mark.parametrize(("body", "message"), [
    ('family = "flux"', "models.m.family is 'flux' but the directory holds a "
                        "'stable-diffusion' pipeline"),
    ('family = "gan"', "models.m.family must be"),
    ('scheduler = "NoSuchScheduler"', "models.m.scheduler must name a diffusers scheduler"),
    ("max_sequence_length = 0", "models.m.max_sequence_length must be a positive integer"),
    ("scheduler_options = {spacing = 1}",
     "models.m.scheduler_options.spacing is not a setting of EulerDiscreteScheduler"),
])
def test_a_bad_family_entry_is_one_line_naming_model_and_field(
        tmp_path: Path, family_dirs: dict[str, Path], body: str, message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\npath = "{family_dirs["sd15"]}"\n{body}\n')
    with pytest.raises(ModelConfigError, match=message):
        load_specs(path)
    # `imagegen serve` stops before starting a server: one line, no traceback.
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--models", str(path), "--port", "1"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_directory_that_is_not_diffusers_is_named(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\npath = "{tmp_path}"\n')
    with pytest.raises(ModelConfigError, match=r"^models\.m\.path has no readable "
                                               r"model_index\.json"):
        load_specs(path)
