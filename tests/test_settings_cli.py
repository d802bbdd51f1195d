"""Settings from env and flags; the command line; models.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from imagegen.registry import EMBEDDED_MODEL_DIR, ModelConfigError, load_specs
from service.settings import Settings, SettingsError
from tests.helpers import make_settings, running_app


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "web.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize(("env", "named"), [
    ({"IMAGEGEN_TTL": "abc"}, "IMAGEGEN_TTL"),
    ({"IMAGEGEN_TTL": "100", "IMAGEGEN_MAX_TTL": "10"}, "IMAGEGEN_TTL"),
    ({"IMAGEGEN_STORE": "floppy"}, "IMAGEGEN_STORE"),
    ({"IMAGEGEN_STORE": "redis"}, "IMAGEGEN_REDIS_URL"),
    ({"IMAGEGEN_QUEUE_SIZE": "0"}, "IMAGEGEN_QUEUE_SIZE"),
    ({"IMAGEGEN_PUBLIC_URL": "example.org"}, "IMAGEGEN_PUBLIC_URL"),
    ({"IMAGEGEN_MODELS": "/nonexistent/models.toml"}, "IMAGEGEN_MODELS"),
])
def test_bad_setting_names_itself(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.load(environ=env)


def test_flags_override_env() -> None:
    settings = Settings.load(environ={"IMAGEGEN_TTL": "100", "IMAGEGEN_PORT": "9000"}, ttl=50)
    assert settings.ttl == 50 and settings.port == 9000


def test_serve_refuses_a_bad_setting_with_one_line() -> None:
    result = run_cli("serve", env={"PATH": "/usr/bin:/bin", "IMAGEGEN_SWEEP_INTERVAL": "soon"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "imagegen: IMAGEGEN_SWEEP_INTERVAL must be a number"]


def test_serve_flags_come_from_the_settings_and_a_bad_flag_names_itself() -> None:
    options = Settings.options()
    assert all(option.env == "IMAGEGEN_" + option.name.upper() for option in options)
    # Secrets only from the environment: a flag would show in `ps`.
    assert {option.name for option in options if option.flag is None} == {
        "admin_token", "webhook_secret"}
    result = run_cli("serve", "--queue-size", "many", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["imagegen: --queue-size must be an integer"]


def test_generate_once_without_a_server(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    result = run_cli("generate", "a red circle on a blue background", "-o", str(out),
                     "--seed", "3", "--size", "64x64", "--steps", "4")
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (64, 64)


def write_models_toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(body)
    return path


def test_models_toml_adds_a_local_model(tmp_path: Path) -> None:
    models = write_models_toml(tmp_path, f"""
[models.shapes-small]
path = "{EMBEDDED_MODEL_DIR}"
family = "shapes"
sizes = ["32x32"]
default_steps = 4
max_n = 2
description = "The embedded weights under another name."
""")
    specs = load_specs(models)
    assert set(specs) == {"shapes", "shapes-small"}
    assert specs["shapes-small"].sizes == ((32, 32),)


async def test_a_models_toml_model_is_served(tmp_path: Path) -> None:
    models = write_models_toml(tmp_path, f"""
[models.tiny]
path = "{EMBEDDED_MODEL_DIR}"
family = "shapes"
sizes = ["32x32"]
default_steps = 2
max_n = 2
""")
    async with running_app(make_settings(models=models)) as client:
        listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        assert listed == ["shapes", "tiny"]
        response = await client.post("/v1/inference/tiny", json={"prompt": "a red circle"})
        assert response.status_code == 200
        too_many = await client.post("/v1/inference/tiny", json={"prompt": "a red circle",
                                                                 "num_images": 3})
        assert too_many.status_code == 400
        assert (await client.get(response.json()["images"][0])).status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    ('[models.x]\nfamily = "shapes"', "models.x.path"),
    ('[models.x]\npath = "/nonexistent"', "models.x.path"),
    (f'[models.x]\npath = "{EMBEDDED_MODEL_DIR}"\nfamily = "gan"', "models.x.family"),
    (f'[models.x]\npath = "{EMBEDDED_MODEL_DIR}"\ndtype = "int3"', "models.x.dtype"),
    (f'[models.x]\npath = "{EMBEDDED_MODEL_DIR}"\nmax_n = 0', "models.x.max_n"),
    (f'[models.x]\npath = "{EMBEDDED_MODEL_DIR}"\nsizes = ["big"]', "models.x.sizes"),
    (f'[models.x]\npath = "{EMBEDDED_MODEL_DIR}"\ncolour = 1', "colour"),
])
def test_bad_models_toml_names_the_field(tmp_path: Path, body: str, field: str) -> None:
    with pytest.raises(ModelConfigError, match=field.replace(".", r"\.")):
        load_specs(write_models_toml(tmp_path, body))


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
