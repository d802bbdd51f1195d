"""What only a GPU shows of the model manager and the compiled path.

Device memory really follows the manager's bookkeeping (load, LRU eviction,
offload); a budget measured from free memory; a real CUDA out-of-memory error
splits its micro-batch and both halves are served; a compiled model moved to CPU
RAM and back recompiles nothing. Marked `gpu` (scripts/gpu-check.sh runs
`pytest -m gpu`); without CUDA they skip. Models are toy random-weight SD 1.5
directories (bench/random_sd.py) in float16.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import random_sd
from imagegen.adapters import Adapter, LoraUse, read_adapter
from imagegen.engine import Engine
from imagegen.model_manager import (
    DEFAULT_RESERVE_FRACTION,
    OFFLOAD_DEVICE,
    ModelManager,
    budget_bytes,
    weight_bytes,
)
from imagegen.pipelines.base import PipelineOutput, TextToImagePipeline
from imagegen.registry import DeviceSpec, ModelSpec, load_pipeline, load_specs
from imagegen.speed import compilations
from imagegen.types import GenerationRequest, SamplingParams
from tests import tiny_families

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SIZE = random_sd.native_size("sd15", toy=True)
CUDA = torch.device("cuda", 0)
WAIT = 120.0
# The caching allocator rounds every tensor up to 512 bytes.
ROUNDING = 512


def toy_specs(tmp_path: Path, names: list[str], **speed: Any) -> dict[str, ModelSpec]:
    model = random_sd.build("sd15", tmp_path / "toy", toy=True, dtype=torch.float16)
    extra = "".join(f"{key} = {str(value).lower() if isinstance(value, bool) else value}\n"
                    for key, value in speed.items())
    path = tmp_path / "models.toml"
    path.write_text("".join(
        f'[models.{name}]\npath = "{model}"\ndevice = "cuda:0"\ndtype = "float16"\n'
        f'sizes = ["{SIZE}x{SIZE}"]\nmax_batch = 2\n{extra}' for name in names))
    specs = load_specs(path)
    return {name: specs[name] for name in names}


def request(model: str, seed: int, n: int = 1) -> GenerationRequest:
    return GenerationRequest(request_id=f"{model}-{seed}",
                             params=SamplingParams(model, SIZE, SIZE, 2, 7.5),
                             prompt="a cat", negative_prompt=None, num_images=n, seed=seed)


def allocated() -> int:
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated(CUDA)


def test_device_memory_follows_the_manager(tmp_path: Path) -> None:
    specs = toy_specs(tmp_path, ["a", "b", "c"])
    pipelines = {name: load_pipeline(spec, OFFLOAD_DEVICE) for name, spec in specs.items()}
    size = weight_bytes(pipelines["a"])
    tensors = sum(1 for c in pipelines["a"].components().values()
                  for _ in (*c.parameters(), *c.buffers()))
    base = allocated()
    manager = ModelManager(CUDA, pipelines, int(2.5 * size))
    manager.fill()
    assert [manager.state(n) for n in "abc"] == ["resident", "resident", "offloaded"]
    assert 2 * size <= allocated() - base <= 2 * (size + tensors * ROUNDING)
    manager.load("c")  # evicts a
    assert next(pipelines["a"].components()["unet"].parameters()).device.type == "cpu"
    assert next(pipelines["c"].components()["unet"].parameters()).device == CUDA
    assert 2 * size <= allocated() - base <= 2 * (size + tensors * ROUNDING)
    manager.offload("b")
    manager.offload("c")
    assert allocated() - base == 0


def test_budget_measured_from_free_memory() -> None:
    free, total = torch.cuda.mem_get_info(CUDA)
    measured = budget_bytes(CUDA, None)
    assert measured is not None
    # Free memory moves a little between the two readings (other processes, the allocator).
    expected = free - int(total * DEFAULT_RESERVE_FRACTION)
    assert abs(measured - expected) < 256 << 20
    assert budget_bytes(CUDA, DeviceSpec("cuda:0", memory_reserve_mb=1024)) == pytest.approx(
        free - (1024 << 20), abs=256 << 20)
    assert budget_bytes(CUDA, DeviceSpec("cuda:0", memory_budget_mb=70000)) == 70000 << 20


class OutOfMemoryAboveOne:
    """The real pipeline; a call of more than one image first asks CUDA for a petabyte."""

    def __init__(self, inner: TextToImagePipeline) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, prompts: list[str], **kwargs: Any) -> PipelineOutput:
        self.calls.append(len(prompts))
        if len(prompts) > 1:
            torch.empty(1 << 50, dtype=torch.uint8, device=CUDA)  # a real OutOfMemoryError
        return self.inner(prompts, **kwargs)


def test_a_real_cuda_oom_splits_the_micro_batch_and_serves_both(tmp_path: Path) -> None:
    specs = toy_specs(tmp_path, ["toy"])
    weights = {"toy": load_pipeline(specs["toy"], OFFLOAD_DEVICE)}
    faulty = OutOfMemoryAboveOne(weights["toy"])
    engine = Engine(specs, {"toy": faulty}, queue_size=8,  # type: ignore[dict-item]
                    weights=weights)
    # Queued before the worker starts, so that they form one micro-batch.
    tickets = [engine.submit(request("toy", seed), timeout_seconds=WAIT) for seed in (1, 2)]
    engine.start()
    try:
        results = [ticket.future.result(WAIT) for ticket in tickets]
    finally:
        engine.stop()
    assert faulty.calls == [2, 1, 1]
    assert [len(result.images) for result in results] == [1, 1]


def test_compiled_model_moved_out_and_back_recompiles_nothing(tmp_path: Path) -> None:
    specs = toy_specs(tmp_path, ["fast"], compile=True)
    pipelines = {"fast": load_pipeline(specs["fast"], OFFLOAD_DEVICE)}
    engine = Engine(specs, pipelines, queue_size=8)
    engine.start()
    try:
        assert _wait(lambda: engine.warm)
        warm = compilations.total
        for seed, n in ((1, 1), (2, 2), (3, 1)):
            assert len(engine.submit(request("fast", seed, n)).future.result(WAIT).images) == n
        engine.offload_model("fast")
        assert engine.model_state("fast") == "offloaded"
        for seed, n in ((4, 2), (5, 1)):  # brought back by the request
            assert len(engine.submit(request("fast", seed, n)).future.result(WAIT).images) == n
        assert engine.model_state("fast") == "resident"
        assert compilations.total == warm
    finally:
        engine.stop()


def test_compiled_adapter_slot_swaps_adapters_without_recompiling(tmp_path: Path) -> None:
    spec = toy_specs(tmp_path, ["fast"], compile=True, lora_max_rank=8)["fast"]
    pipeline = load_pipeline(spec)
    adapters = [read_adapter(tiny_families.lora_bytes(spec.path, seed=seed), "fast")
                for seed in (1, 2)]

    def draw(*uses: tuple[int, float]) -> torch.Tensor:
        loras = tuple(LoraUse(Adapter(name=f"a{i}", model="fast", weights=adapters[i],
                                      key=f"a{i}"), scale) for i, scale in uses)
        with torch.inference_mode():
            output = pipeline(["a cat"], negative_prompts=[None],
                              generators=[torch.Generator(device=CUDA).manual_seed(3)],
                              width=SIZE, height=SIZE, num_inference_steps=2,
                              guidance_scale=7.5, loras=loras)
        return torch.tensor(list(output.images[0].getdata()), dtype=torch.int32)

    base = draw()
    warm = compilations.total
    first, second, weaker = draw((0, 1.0)), draw((1, 1.0)), draw((1, 0.5))
    again = draw()
    assert compilations.total == warm  # other adapters and scales: no recompile
    assert not torch.equal(first, base) and not torch.equal(second, first)
    assert not torch.equal(weaker, second)
    assert int((again - base).abs().max()) <= 2


def _wait(condition: Any, timeout: float = 600.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
