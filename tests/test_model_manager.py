"""Many models under one device budget: LRU offload to CPU RAM, load on demand, admin moves."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from imagegen.engine import Engine
from imagegen.model_manager import (
    MB,
    ModelEvents,
    ModelManager,
    ModelState,
    budget_bytes,
    weight_bytes,
)
from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import (
    EMBEDDED_MODEL_DIR,
    DeviceSpec,
    ModelConfigError,
    embedded_spec,
    load_devices,
    load_pipeline,
    load_specs,
)
from imagegen.types import GenerationRequest, SamplingParams
from tests.helpers import ADMIN_TOKEN, make_settings, running_app
from tests.test_metrics import scrape, value

PROMPT = "a red circle on a blue background"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CPU = torch.device("cpu")
WAIT = 30.0


@pytest.fixture(scope="module")
def model_bytes() -> int:
    return weight_bytes(load_pipeline(embedded_spec()))


class Recorder:
    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []

    def events(self) -> ModelEvents:
        return ModelEvents(loaded=lambda name, _: self.moves.append(("load", name)),
                           evicted=lambda name, _: self.moves.append(("evict", name)))


def three_models() -> dict[str, TextToImagePipeline]:
    return {name: load_pipeline(embedded_spec(), CPU) for name in ("a", "b", "c")}


def test_budget_of_two_keeps_the_two_most_recently_used(model_bytes: int) -> None:
    recorder = Recorder()
    manager = ModelManager(CPU, three_models(), int(2.5 * model_bytes), recorder.events())
    manager.fill()
    assert [manager.state(n) for n in "abc"] == ["resident", "resident", "offloaded"]
    with manager.use("c"):  # a is the least recently used: out it goes
        assert manager.state("c") is ModelState.RESIDENT
    manager.load("b")  # already in: now the most recent
    manager.load("a")  # c is now the least recent
    assert recorder.moves == [("load", "a"), ("load", "b"), ("evict", "a"), ("load", "c"),
                              ("evict", "c"), ("load", "a")]
    assert [manager.state(n) for n in "abc"] == ["resident", "resident", "offloaded"]
    assert manager.resident_bytes() == 2 * model_bytes <= manager.budget  # type: ignore[operator]
    manager.offload("a")
    manager.offload("a")  # already out: nothing moves
    assert recorder.moves[-1] == ("evict", "a") and recorder.moves.count(("evict", "a")) == 2
    assert manager.state("a") is ModelState.OFFLOADED


def test_a_model_larger_than_the_budget_runs_alone(model_bytes: int) -> None:
    manager = ModelManager(CPU, three_models(), model_bytes // 2)
    manager.fill()
    assert [manager.state(n) for n in "abc"] == ["offloaded"] * 3
    manager.load("b")
    manager.load("c")
    assert [manager.state(n) for n in "abc"] == ["offloaded", "offloaded", "resident"]


class SlowMove:
    """A real pipeline whose next move onto the device waits for the test (a slow PCIe copy)."""

    def __init__(self, inner: TextToImagePipeline) -> None:
        self.inner = inner
        self.moving = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.inner(*args, **kwargs)  # type: ignore[arg-type]

    def to(self, device: torch.device) -> None:
        self.moving.set()
        assert self.release.wait(WAIT)
        self.inner.to(device)


def request_for(model: str, seed: int = 1) -> GenerationRequest:
    return GenerationRequest(request_id=f"req-{model}-{seed}",
                             params=SamplingParams(model, 32, 32, 2, 1.5),
                             prompt=PROMPT, negative_prompt=None, num_images=1, seed=seed)


def test_a_request_for_a_loading_model_waits_and_is_served(model_bytes: int) -> None:
    specs = {name: embedded_spec() for name in "abc"}
    weights: dict[str, TextToImagePipeline] = dict(three_models())
    slow = SlowMove(weights["c"])
    weights["c"] = slow  # type: ignore[assignment]
    budget = {"cpu": DeviceSpec("cpu", memory_budget_mb=2.5 * model_bytes / MB)}
    engine = Engine(specs, weights, queue_size=8, devices=budget, weights=weights)
    engine.start()
    try:
        assert wait_for(lambda: engine.warm)
        ticket = engine.submit(request_for("c"), timeout_seconds=WAIT)
        assert slow.moving.wait(WAIT)
        assert engine.model_state("c") is ModelState.LOADING
        assert not ticket.future.done()
        slow.release.set()
        result = ticket.future.result(WAIT)
        assert len(result.images) == 1
        assert engine.model_state("c") is ModelState.RESIDENT
        assert engine.model_state("a") is ModelState.OFFLOADED
    finally:
        slow.release.set()
        engine.stop()


def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def models_toml(tmp_path: Path, budget_mb: float) -> Path:
    body = "".join(f"""
[models.{name}]
path = "{EMBEDDED_MODEL_DIR}"
family = "shapes"
sizes = ["32x32"]
default_steps = 2
examples = ["{PROMPT}"]
""" for name in ("alpha", "beta", "gamma"))
    path = tmp_path / "models.toml"
    path.write_text(body + f'\n[devices.cpu]\nmemory_budget_mb = {budget_mb}\n')
    return path


async def test_three_models_over_budget_all_serve(tmp_path: Path, model_bytes: int) -> None:
    # Four models (the embedded one too) of equal size; the budget holds two.
    settings = make_settings(models=models_toml(tmp_path, 2.5 * model_bytes / MB))
    async with running_app(settings) as client:
        assert await asyncio.to_thread(wait_for, lambda: client.app.state.services.engine.warm)
        listed = (await client.get("/v1/models")).json()["data"]
        states = {model["id"]: model["state"] for model in listed}
        assert states == {"shapes": "resident", "alpha": "resident", "beta": "offloaded",
                          "gamma": "offloaded"}
        start = await scrape(client)  # every model's series, from the start
        assert [value(start, "imagegen_model_loads_total", model=m) for m in states] == [
            1, 1, 0, 0]
        assert [value(start, "imagegen_model_evictions_total", model=m) for m in states] == [
            0] * 4

        order = ["alpha", "beta", "gamma", "beta", "alpha", "gamma"] * 2
        responses = await asyncio.gather(*(
            client.post("/v1/images/generations", json={
                "model": model, "prompt": PROMPT, "size": "32x32", "seed": seed,
                "response_format": "b64_json"})
            for seed, model in enumerate(order)))
        assert [r.status_code for r in responses] == [200] * len(order)
        # One at a time, cycling through three models under a budget of two: LRU's worst
        # case, every request swaps a model in.
        for seed, model in enumerate(["alpha", "beta", "gamma"] * 2):
            response = await client.post("/v1/images/generations", json={
                "model": model, "prompt": PROMPT, "size": "32x32", "seed": seed,
                "response_format": "b64_json"})
            assert response.status_code == 200

        listed = (await client.get("/v1/models")).json()["data"]
        resident = [model["id"] for model in listed if model["state"] == "resident"]
        assert len(resident) == 2
        metrics = await scrape(client)
        loads = {m: value(metrics, "imagegen_model_loads_total", model=m)
                 for m in ("alpha", "beta", "gamma")}
        assert all(count >= 2 for count in loads.values())
        assert value(metrics, "imagegen_model_evictions_total", model="shapes") == 1
        evictions = sum(value(metrics, "imagegen_model_evictions_total", model=m)
                        for m in ("shapes", "alpha", "beta", "gamma"))
        # Every model ever loaded is evicted again, except the two resident now.
        assert sum(loads.values()) + 1 == evictions + 2
        assert value(metrics, "imagegen_model_load_seconds_count") == sum(loads.values()) + 1
        assert value(metrics, "imagegen_model_eviction_seconds_count") == evictions


async def test_admin_loads_and_offloads_a_model(tmp_path: Path, model_bytes: int) -> None:
    settings = make_settings(models=models_toml(tmp_path, 2.5 * model_bytes / MB))
    async with running_app(settings) as client:
        assert await asyncio.to_thread(wait_for, lambda: client.app.state.services.engine.warm)
        loaded = await client.post("/admin/models/gamma/load", headers=ADMIN)
        assert loaded.status_code == 200
        assert loaded.json() == {"id": "gamma", "state": "resident"}
        states = {m["id"]: m["state"] for m in (await client.get("/v1/models")).json()["data"]}
        # shapes was the least recently used of the two residents.
        assert states == {"shapes": "offloaded", "alpha": "resident", "beta": "offloaded",
                          "gamma": "resident"}
        offloaded = await client.post("/admin/models/alpha/offload", headers=ADMIN)
        assert offloaded.json() == {"id": "alpha", "state": "offloaded"}
        assert (await client.get("/v1/models/alpha")).json()["state"] == "offloaded"
        # The next request brings it back.
        generated = await client.post("/v1/images/generations", json={
            "model": "alpha", "prompt": PROMPT, "size": "32x32", "response_format": "b64_json"})
        assert generated.status_code == 200
        assert (await client.get("/v1/models/alpha")).json()["state"] == "resident"

        stats = (await client.get("/admin/stats", headers=ADMIN)).json()["devices"]["cpu"]
        assert stats["budget_mb"] == round(2.5 * model_bytes / MB, 1)
        assert stats["resident_mb"] == round(2 * model_bytes / MB, 1)
        assert {name: model["state"] for name, model in stats["models"].items()} == {
            "shapes": "offloaded", "alpha": "resident", "beta": "offloaded",
            "gamma": "resident"}

        unknown = await client.post("/admin/models/nope/load", headers=ADMIN)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"
        assert (await client.get("/admin/models/alpha/load", headers=ADMIN)).status_code == 405


def test_a_cpu_has_no_budget_unless_one_is_set() -> None:
    # Offloading from a CPU to CPU RAM frees nothing: every model stays resident.
    assert budget_bytes(CPU, None) is None
    assert budget_bytes(CPU, DeviceSpec("cpu", memory_reserve_mb=512)) is None
    assert budget_bytes(CPU, DeviceSpec("cpu", memory_budget_mb=1.5)) == int(1.5 * MB)
    manager = ModelManager(CPU, three_models(), None)
    manager.fill()
    assert [manager.state(n) for n in "abc"] == ["resident"] * 3


def test_devices_table_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[devices."cuda"]\nmemory_budget_mb = 70000\n'
                    '[devices.cpu]\nmemory_reserve_mb = 512\n')
    devices = load_devices(path)
    assert devices["cuda:0"].memory_budget_mb == 70000
    assert devices["cpu"].memory_budget_mb is None and devices["cpu"].memory_reserve_mb == 512
    for body, field in [('[devices.cpu]\nmemory_budget_mb = 0\n', "devices.cpu.memory_budget_mb"),
                        ('[devices.cpu]\nmemory_budget_mb = "lots"\n',
                         "devices.cpu.memory_budget_mb"),
                        ('[devices.cpu]\nbudget = 5\n', "devices.cpu: unknown field 'budget'"),
                        ('[devices.gpu7]\nmemory_budget_mb = 5\n', "devices.gpu7")]:
        path.write_text(body)
        with pytest.raises(ModelConfigError, match=field):
            load_devices(path)


@pytest.mark.parametrize(("line", "field"), [
    ('attention = "fastest"', "attention"),
    ("compile = 1", "compile"),
    ('compile_mode = "turbo"', "compile_mode"),
    ("batch_buckets = [1, 3]", "batch_buckets"),  # the largest must be max_batch (4)
    ("batch_buckets = [0, 4]", "batch_buckets"),
])
def test_speed_fields_are_checked(tmp_path: Path, line: str, field: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\npath = "{EMBEDDED_MODEL_DIR}"\nfamily = "shapes"\n'
                    f"max_batch = 4\n{line}\n")
    with pytest.raises(ModelConfigError, match=f"models.m.{field}"):
        load_specs(path)


def test_buckets_default_to_powers_of_two_up_to_max_batch(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\npath = "{EMBEDDED_MODEL_DIR}"\nfamily = "shapes"\n'
                    "max_batch = 6\n"
                    f'[models.n]\npath = "{EMBEDDED_MODEL_DIR}"\nfamily = "shapes"\n'
                    "max_batch = 6\nbatch_buckets = [6, 2]\n")
    specs = load_specs(path)
    assert specs["m"].buckets() == (1, 2, 4, 6)
    assert [specs["m"].bucket_for(n) for n in range(1, 7)] == [1, 2, 4, 4, 6, 6]
    assert specs["n"].buckets() == (2, 6)
    assert specs["n"].bucket_for(1) == 2
