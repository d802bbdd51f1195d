"""A compiled model's adapter slot (models.toml `lora_max_rank`): a request's adapter is
copied into one zero-initialised LoRA (diffusers' hotswap) instead of loaded beside it.

Compiling changes nothing here (tests/test_compiled.py checks compiled = eager), so
these run eager on the CPU: the slot gives the images the ordinary adapter path gives,
an empty slot changes nothing, and what cannot fit the slot is refused. That nothing
recompiles is checked on a GPU (tests/test_gpu_models.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from imagegen.adapters import Adapter, AdapterInvalid, LoraUse, read_adapter
from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import ModelConfigError, load_pipeline, load_specs
from tests import tiny_families

SIZE = tiny_families.SIZE


def spec_of(model_dir: Path, tmp_path: Path, extra: str = "") -> object:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.toy]\npath = "{model_dir}"\nsizes = ["{SIZE}x{SIZE}"]\n{extra}')
    return load_specs(path)["toy"]


def draw(pipeline: TextToImagePipeline, loras: tuple[LoraUse, ...] = ()) -> np.ndarray:
    with torch.inference_mode():
        output = pipeline(["a red cat"] * 2, negative_prompts=[None] * 2,
                          generators=[torch.Generator().manual_seed(s) for s in (3, 4)],
                          width=SIZE, height=SIZE, num_inference_steps=2, guidance_scale=5.0,
                          loras=loras)
    return np.stack([np.asarray(image, dtype=int) for image in output.images])


def use(weights: dict[str, torch.Tensor], key: str, scale: float) -> LoraUse:
    return LoraUse(Adapter(name=key, model="toy", weights=weights, key=key), scale)


def test_the_slot_draws_what_loading_the_adapter_draws(family_dirs: dict[str, Path],
                                                       tmp_path: Path) -> None:
    spec = spec_of(family_dirs["sd15"], tmp_path)
    plain = load_pipeline(spec)  # type: ignore[arg-type]
    # The slot without compiling (the config check asks for compile = true).
    slotted = load_pipeline(dataclasses.replace(spec, lora_max_rank=8))  # type: ignore[type-var]
    first = read_adapter(tiny_families.lora_bytes(family_dirs["sd15"], seed=1), "toy")
    second = read_adapter(tiny_families.lora_bytes(family_dirs["sd15"], seed=2, rank=8), "toy")
    slotted.check_adapter(first, "toy")
    slotted.check_adapter(second, "toy")

    base = draw(plain)
    assert np.array_equal(draw(slotted), base)  # an empty slot adds exact zeros
    for weights, key, scale in ((first, "a", 0.7), (second, "b", 1.0), (first, "a", 0.3)):
        ours = draw(slotted, (use(weights, key, scale),))
        theirs = draw(plain, (use(weights, key, scale),))
        assert not np.array_equal(ours, base)
        assert np.abs(ours - theirs).max() <= 2  # float sums in another order
    assert np.array_equal(draw(slotted), base)  # emptied again for a request without one


def test_what_does_not_fit_the_slot_is_refused(family_dirs: dict[str, Path],
                                               tmp_path: Path) -> None:
    spec = spec_of(family_dirs["sd15"], tmp_path)
    slotted = load_pipeline(dataclasses.replace(spec, lora_max_rank=4))  # type: ignore[type-var]
    big = read_adapter(tiny_families.lora_bytes(family_dirs["sd15"], seed=1, rank=8), "toy")
    with pytest.raises(AdapterInvalid, match="rank 8 is above model 'toy''s lora_max_rank 4"):
        slotted.check_adapter(big, "toy")
    elsewhere = {key.replace(".to_q.", ".proj_in_q."): value for key, value in read_adapter(
        tiny_families.lora_bytes(family_dirs["sd15"], seed=1), "toy").items()}
    with pytest.raises(AdapterInvalid):
        slotted.check_adapter(elsewhere, "toy")


@pytest.mark.parametrize("extra", [
    "lora_max_rank = 8\n",  # not compiled
    "lora_max_rank = 8\ncompile = true\nfuse_qkv = true\n",
    "lora_max_rank = -1\n",
])
def test_lora_max_rank_is_checked(family_dirs: dict[str, Path], tmp_path: Path,
                                  extra: str) -> None:
    with pytest.raises(ModelConfigError, match="models.toy.lora_max_rank"):
        spec_of(family_dirs["sd15"], tmp_path, extra)
