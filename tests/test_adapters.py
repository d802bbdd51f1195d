"""LoRA adapters through the service: operator-registered and uploaded, never leaking.

One models.toml serves an SD 1.5-class, an SDXL-class and a transformer-based
(Flux) model, tiny random weights, each with a registered adapter; uploads go
through POST /v1/loras as multipart and as JSON.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from imagegen.adapters import AdapterCatalog, AdapterChoice
from imagegen.batcher import micro_batch_key
from imagegen.pipelines.base import RequestRefused
from imagegen.types import GenerationRequest, SamplingParams
from tests import tiny_families
from tests.helpers import FakeClock, make_settings, running_app

MODELS = ("sd15", "sdxl", "flux")
SIZE = f"{tiny_families.SIZE}x{tiny_families.SIZE}"


@pytest.fixture(scope="module")
def lora_files(family_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, Path]:
    """A registered adapter per model ("pixel"), as an operator would put it on disk."""
    root = tmp_path_factory.mktemp("loras")
    files = {}
    for kind in MODELS:
        files[kind] = root / f"{kind}-pixel.safetensors"
        files[kind].write_bytes(tiny_families.lora_bytes(family_dirs[kind], seed=1))
    return files


@pytest.fixture(scope="module")
def uploads(family_dirs: dict[str, Path]) -> dict[str, bytes]:
    """Another adapter per model, for callers to upload."""
    return {kind: tiny_families.lora_bytes(family_dirs[kind], seed=2) for kind in MODELS}


def models_toml(directory: Path, family_dirs: dict[str, Path], lora_files: dict[str, Path],
                ) -> Path:
    path = directory / "models.toml"
    path.write_text("".join(
        f'[models.{kind}]\npath = "{family_dirs[kind]}"\nsizes = ["{SIZE}"]\n'
        f'default_steps = 2\n[models.{kind}.loras]\npixel = "{lora_files[kind]}"\n'
        for kind in MODELS))
    return path


@pytest.fixture
async def client(tmp_path: Path, family_dirs: dict[str, Path], lora_files: dict[str, Path]
                 ) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(models=models_toml(tmp_path, family_dirs, lora_files))
    async with running_app(settings) as client:
        yield client


async def draw(client: httpx.AsyncClient, model: str, loras: list[dict[str, Any]] | None = None,
               seed: int = 5) -> str:
    """The sha256 of the image's bytes, for one fixed seed."""
    body: dict[str, Any] = {"model": model, "prompt": "a red cat", "size": SIZE, "seed": seed,
                            "response_format": "b64_json"}
    if loras is not None:
        body["loras"] = loras
    response = await client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    return hashlib.sha256(base64.b64decode(response.json()["data"][0]["b64_json"])).hexdigest()


async def upload(client: httpx.AsyncClient, model: str, data: bytes, as_json: bool,
                 **fields: Any) -> httpx.Response:
    if as_json:
        return await client.post("/v1/loras", json={
            "model": model, "data": base64.b64encode(data).decode(), **fields})
    return await client.post("/v1/loras", data={"model": model, **fields},
                             files={"file": ("adapter.safetensors", data)})


def refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "loras" and message in error["message"], error


async def test_adapters_apply_to_their_request_only(client: httpx.AsyncClient,
                                                    uploads: dict[str, bytes]) -> None:
    for kind in MODELS:
        plain = await draw(client, kind)
        registered = await draw(client, kind, [{"name": "pixel", "scale": 1.0}])
        assert registered != plain, kind
        assert await draw(client, kind) == plain, f"{kind}: the adapter leaked"
        assert await draw(client, kind, [{"name": "pixel", "scale": 0.0}]) == plain, kind

        created = await upload(client, kind, uploads[kind], as_json=kind == "flux")
        assert created.status_code == 201, created.text
        mine = created.json()
        assert mine["model"] == kind and mine["id"].startswith("lora_") and mine["expires_at"]
        both = await draw(client, kind, [{"name": mine["id"]}, {"name": "pixel"}])
        uploaded = await draw(client, kind, [{"name": mine["id"]}])
        assert len({plain, registered, uploaded, both}) == 4, kind
        # The same set in another order is the same request.
        assert await draw(client, kind, [{"name": "pixel"}, {"name": mine["id"]}]) == both
        assert await draw(client, kind) == plain, f"{kind}: the upload leaked"

        listed = (await client.get(f"/v1/models/{kind}")).json()["loras"]
        assert [(lora["name"], lora["source"]) for lora in listed] == [
            ("pixel", "operator"), (mine["id"], "upload")]
        assert (await client.get(f"/v1/loras/{mine['id']}")).json() == mine
        assert (await client.delete(f"/v1/loras/{mine['id']}")).status_code == 204
        assert (await client.get(f"/v1/loras/{mine['id']}")).status_code == 404
        refused(await client.post("/v1/images/generations", json={
            "model": kind, "prompt": "a red cat", "loras": [{"name": mine["id"]}]}),
            f"Model '{kind}' has no adapter '{mine['id']}'.")
        assert await draw(client, kind) == plain


async def pixels(client: httpx.AsyncClient, model: str,
                 loras: list[dict[str, Any]] | None) -> np.ndarray:
    body: dict[str, Any] = {"model": model, "prompt": "a red cat", "size": SIZE, "seed": 5,
                            "response_format": "b64_json", "loras": loras}
    response = await client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


async def test_requests_with_other_adapters_batch_apart(client: httpx.AsyncClient) -> None:
    pixel = [{"name": "pixel"}]
    plain, adapted = await pixels(client, "sd15", None), await pixels(client, "sd15", pixel)
    assert np.abs(plain - adapted).mean() > 10
    together = await asyncio.gather(*(
        pixels(client, "sd15", pixel if i % 2 else None) for i in range(6)))
    # A batch's arithmetic may differ from a lone call's in the last bit, never by an adapter.
    for i, image in enumerate(together):
        np.testing.assert_allclose(image, adapted if i % 2 else plain, atol=2)


def test_the_adapter_set_is_part_of_the_batching_key() -> None:
    catalog = AdapterCatalog(clock=lambda: 0.0)
    for name in ("a", "b"):
        catalog.register("m", name, {})
    uses = {names: catalog.resolve("m", [AdapterChoice(n) for n in names], None)
            for names in ((), ("a",), ("b",), ("a", "b"), ("b", "a"))}

    def key(names: tuple[str, ...], scale: float = 1.0) -> tuple[object, ...]:
        resolved = catalog.resolve("m", [AdapterChoice(n, scale) for n in names], None)
        params = SamplingParams("m", 32, 32, 2, 5.0, loras=resolved)
        return micro_batch_key(GenerationRequest("r", params, "p", None, 1, 0))

    assert len({key(names) for names in uses}) == 4  # ("a", "b") and ("b", "a") are one set
    assert key(("a",), 0.5) != key(("a",))
    with pytest.raises(RequestRefused, match="named twice"):
        catalog.resolve("m", [AdapterChoice("a"), AdapterChoice("a")], None)


async def test_adapters_are_refused_by_name(client: httpx.AsyncClient,
                                            uploads: dict[str, bytes]) -> None:
    body = {"prompt": "a red cat", "size": SIZE, "num_inference_steps": 1}
    refused(await client.post("/v1/images/generations", json={
        **body, "model": "sd15", "loras": [{"name": "nope"}]}),
        "Model 'sd15' has no adapter 'nope'.")
    xl = (await upload(client, "sdxl", uploads["sdxl"], as_json=True)).json()["id"]
    refused(await client.post("/v1/images/generations", json={
        **body, "model": "sd15", "loras": [{"name": xl}]}),
        f"Adapter '{xl}' is for model 'sdxl', not 'sd15'.")
    native = await client.post("/v1/inference/flux", json={**body, "loras": [{"name": "pixel",
                                                                          "scale": 9}]})
    assert native.status_code == 400 and native.json()["error"]["param"].startswith("loras")

    def upload_error(response: httpx.Response, status: int, param: str, message: str) -> None:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["param"] == param and message in error["message"], error

    upload_error(await upload(client, "sd15", uploads["sdxl"], as_json=False), 400, "file",
                 "The adapter does not fit model 'sd15'")
    upload_error(await upload(client, "shapes", uploads["sd15"], as_json=True), 400, "model",
                 "Model 'shapes' (shapes) takes no adapters.")
    upload_error(await upload(client, "sd15", b"not a safetensors file", as_json=False), 400,
                 "file", "not a readable safetensors file")
    upload_error(await upload(client, "sd15", b"", as_json=True), 400, "data",
                 "not a readable safetensors file")
    no_file = await client.post("/v1/loras", data={"model": "sd15"},
                                files={"other": ("x", b"x")})
    upload_error(no_file, 400, "file", "'file' is required")
    missing_model = await upload(client, "sd99", uploads["sd15"], as_json=True)
    assert missing_model.status_code == 404


async def test_an_upload_over_the_cap_is_413(tmp_path: Path, family_dirs: dict[str, Path],
                                             lora_files: dict[str, Path],
                                             uploads: dict[str, bytes]) -> None:
    settings = make_settings(models=models_toml(tmp_path, family_dirs, lora_files),
                             max_lora_bytes=len(uploads["sd15"]) - 1)
    async with running_app(settings) as client:
        for as_json in (False, True):
            response = await upload(client, "sd15", uploads["sd15"], as_json=as_json)
            assert response.status_code == 413, response.text


async def test_an_upload_expires_like_an_image(tmp_path: Path, family_dirs: dict[str, Path],
                                               lora_files: dict[str, Path],
                                               uploads: dict[str, bytes]) -> None:
    clock = FakeClock()
    settings = make_settings(models=models_toml(tmp_path, family_dirs, lora_files), ttl=60)
    async with running_app(settings, clock=clock) as client:
        short = (await upload(client, "sd15", uploads["sd15"], as_json=False,
                              ttl_seconds="10")).json()
        default = (await upload(client, "sd15", uploads["sd15"], as_json=True)).json()
        assert (short["expires_at"], default["expires_at"]) == (clock.now + 10, clock.now + 60)
        clock.tick(10)
        assert (await client.get(f"/v1/loras/{short['id']}")).status_code == 404
        refused(await client.post("/v1/inference/sd15", json={
            "prompt": "a red cat", "num_inference_steps": 1, "loras": [{"name": short["id"]}]}),
            "has no adapter")
        assert (await client.get(f"/v1/loras/{default['id']}")).status_code == 200
        too_long = await upload(client, "sd15", uploads["sd15"], as_json=True, ttl_seconds=61)
        assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "ttl_seconds"


@pytest.mark.parametrize(("entry", "message"), [
    ('pixel = "missing.safetensors"',
     "models.sd15.loras.pixel is not a readable safetensors file"),
    ('"lora_x" = "{sd15}"', "models.sd15.loras.lora_x: a name is"),
    ('pixel = "{sdxl}"', "models.sd15.loras.pixel: The adapter does not fit model 'sd15'"),
])
async def test_a_bad_registered_adapter_is_one_line_naming_it(
        tmp_path: Path, family_dirs: dict[str, Path], lora_files: dict[str, Path],
        entry: str, message: str) -> None:
    from imagegen.registry import ModelConfigError

    path = tmp_path / "models.toml"
    path.write_text(f'[models.sd15]\npath = "{family_dirs["sd15"]}"\nsizes = ["{SIZE}"]\n'
                    f"[models.sd15.loras]\n"
                    + entry.format(sd15=lora_files["sd15"], sdxl=lora_files["sdxl"]) + "\n")
    with pytest.raises(ModelConfigError, match=message.replace(".", r"\.")
                       .replace("(", r"\(").replace(")", r"\)")):
        async with running_app(make_settings(models=path)):
            pass


def test_a_family_without_adapters_cannot_register_one(tmp_path: Path) -> None:
    from imagegen.registry import EMBEDDED_MODEL_DIR, ModelConfigError, load_specs

    path = tmp_path / "models.toml"
    path.write_text(f'[models.s]\npath = "{EMBEDDED_MODEL_DIR}"\n[models.s.loras]\n'
                    f'x = "{path}"\n')
    with pytest.raises(ModelConfigError, match=r"models\.s\.loras: the shapes family takes no"):
        load_specs(path)


async def test_an_upload_belongs_to_the_key_that_made_it(
        tmp_path: Path, family_dirs: dict[str, Path], lora_files: dict[str, Path],
        uploads: dict[str, bytes]) -> None:
    from tests.test_api_keys import ADMIN, bearer

    settings = make_settings(models=models_toml(tmp_path, family_dirs, lora_files),
                             auth="keys", keys_file=tmp_path / "keys.json")
    async with running_app(settings) as client:
        alice, bob = [
            bearer((await client.post("/admin/keys", headers=ADMIN,
                                      json={"name": name})).json()["key"])
            for name in ("alice", "bob")]
        created = await client.post("/v1/loras", headers=alice, files={
            "file": ("a.safetensors", uploads["sd15"])}, data={"model": "sd15"})
        assert created.status_code == 201, created.text
        mine = created.json()["id"]
        body = {"model": "sd15", "prompt": "a red cat", "size": SIZE,
                "num_inference_steps": 1, "loras": [{"name": mine}]}
        assert (await client.post("/v1/images/generations", headers=alice,
                                  json=body)).status_code == 200
        # To anyone else it does not exist: not listed, not readable, not deletable, unusable.
        refused(await client.post("/v1/images/generations", headers=bob, json=body),
                f"Model 'sd15' has no adapter '{mine}'.")
        assert (await client.get(f"/v1/loras/{mine}", headers=bob)).status_code == 404
        assert (await client.delete(f"/v1/loras/{mine}", headers=bob)).status_code == 404
        listed = (await client.get("/v1/models/sd15", headers=bob)).json()["loras"]
        assert [lora["name"] for lora in listed] == ["pixel"]
        assert (await client.get(f"/v1/loras/{mine}", headers=alice)).status_code == 200


async def test_image_to_image_and_inpainting_take_adapters(client: httpx.AsyncClient) -> None:
    from tests.privacy.support import encode, solid

    image = base64.b64encode(encode(solid((200, 30, 30)), "PNG")).decode()
    mask = base64.b64encode(encode(solid((255,), mode="L"), "PNG")).decode()
    for kind in MODELS:
        for inputs in ({"init_image": image}, {"init_image": image, "mask_image": mask}):
            body = {"prompt": "a red cat", "seed": 3, "strength": 0.7, "output": "data_url",
                    **inputs}
            plain = await client.post(f"/v1/inference/{kind}", json=body)
            adapted = await client.post(f"/v1/inference/{kind}",
                                        json={**body, "loras": [{"name": "pixel"}]})
            again = await client.post(f"/v1/inference/{kind}", json=body)
            assert [plain.status_code, adapted.status_code] == [200, 200], adapted.text
            assert adapted.json()["images"] != plain.json()["images"], kind
            assert again.json()["images"] == plain.json()["images"], f"{kind}: leaked"


def test_a_deleted_or_expired_upload_is_unloaded_before_the_next_batch(
        tmp_path: Path, family_dirs: dict[str, Path], uploads: dict[str, bytes]) -> None:
    import torch

    from imagegen.adapters import read_adapter
    from imagegen.pipelines.auto import DiffusersPipeline
    from imagegen.registry import load_pipeline, load_specs

    path = tmp_path / "models.toml"
    path.write_text(f'[models.sd15]\npath = "{family_dirs["sd15"]}"\nsizes = ["{SIZE}"]\n')
    pipeline = load_pipeline(load_specs(path)["sd15"])
    assert isinstance(pipeline, DiffusersPipeline)
    clock = FakeClock()
    catalog = AdapterCatalog(clock)
    weights = read_adapter(uploads["sd15"], "sd15")
    kept = catalog.add_upload("sd15", weights, "alice", expires_at=clock.now + 10)
    short = catalog.add_upload("sd15", weights, "alice", expires_at=clock.now + 5)

    def run(names: list[str]) -> set[str]:
        loras = catalog.resolve("sd15", [AdapterChoice(n) for n in names], "alice")
        with torch.inference_mode():
            pipeline(["a cat"], negative_prompts=[None], generators=[torch.Generator()],
                     width=tiny_families.SIZE, height=tiny_families.SIZE,
                     num_inference_steps=1, guidance_scale=5.0, loras=loras)
        return set(pipeline.text2image.get_list_adapters().get("unet", []))

    assert run([kept.name, short.name]) == {kept.key, short.key}
    clock.tick(5)
    assert catalog.sweep() == 1 and short.deleted
    assert run([]) == {kept.key}  # the expired one is gone from the model, the other stays
    assert catalog.delete_upload(kept.name, "alice") and not catalog.delete_upload(kept.name,
                                                                                   "alice")
    assert run([]) == set()


async def test_the_edits_form_takes_adapters_as_json_text(client: httpx.AsyncClient) -> None:
    from tests.privacy.support import encode, solid

    fields = {"model": "sd15", "prompt": "a red cat", "size": SIZE, "seed": "3",
              "response_format": "b64_json"}
    files = {"image": ("i.png", encode(solid((200, 30, 30)), "PNG"), "image/png")}
    plain = await client.post("/v1/images/edits", data=fields, files=files)
    adapted = await client.post("/v1/images/edits", files=files, data={
        **fields, "loras": '[{"name": "pixel", "scale": 0.5}]'})
    assert [plain.status_code, adapted.status_code] == [200, 200], adapted.text
    assert plain.json()["data"] != adapted.json()["data"]
    for bad in ("pixel", '[{"name": "nope"}]', '[{"name": "pixel", "scale": "big"}]'):
        response = await client.post("/v1/images/edits", files=files,
                                      data={**fields, "loras": bad})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"].startswith("loras")


def test_a_batch_line_keeps_its_adapters_through_its_sealed_record() -> None:
    from service.bulk.state import BulkLine
    from service.generation import GenerationInput

    gen = GenerationInput(model="sd15", prompt="a red cat", negative_prompt=None, n=1,
                          width=32, height=32, steps=2, guidance=5.0, seed=1,
                          ttl_seconds=None, output_format="png", response_format="url",
                          loras=(AdapterChoice("pixel", 0.5), AdapterChoice("lora_x")),
                          owner="alice")
    line = BulkLine("a", gen)
    assert BulkLine.from_json(line.to_json()) == line
