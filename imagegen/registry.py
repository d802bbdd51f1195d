"""Model specs (models.toml + the embedded default) and loading them from local paths."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imagegen.pipelines.base import TextToImagePipeline

EMBEDDED_MODEL_DIR = Path(__file__).parent / "embedded" / "shapes"
EMBEDDED_MODEL_NAME = "shapes"

FAMILIES = ("shapes", "stable-diffusion")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelConfigError(ValueError):
    """models.toml names something that cannot be served (message names the field)."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    path: Path
    family: str
    dtype: str = "float32"
    device: str = "auto"
    sizes: tuple[tuple[int, int], ...] = ((512, 512),)
    default_size: tuple[int, int] = (512, 512)
    default_steps: int = 25
    default_guidance: float = 7.5
    max_steps: int = 100
    max_n: int = 4
    max_batch: int = 8
    description: str = ""
    examples: tuple[str, ...] = field(default=())

    def allows_size(self, width: int, height: int) -> bool:
        return (width, height) in self.sizes


def embedded_spec() -> ModelSpec:
    """The default model that ships inside the package and runs on a CPU."""
    return ModelSpec(
        name=EMBEDDED_MODEL_NAME,
        path=EMBEDDED_MODEL_DIR,
        family="shapes",
        dtype="float32",
        device="auto",
        sizes=((32, 32), (64, 64), (128, 128), (256, 256)),
        default_size=(128, 128),
        default_steps=20,
        default_guidance=1.5,  # bench.prompt_accuracy: colours 99% at 1.5, 91% at 2.0
        max_steps=50,
        max_n=4,
        max_batch=16,
        description="A tiny model trained here on drawn scenes of coloured shapes.",
        examples=(
            "a red circle on a blue background",
            "a small yellow triangle at the top left on a black background",
            "two green squares on white",
        ),
    )


def parse_size(text: str, where: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ModelConfigError(f"{where}: size must look like '512x512'")
    return int(parts[0]), int(parts[1])


def _spec_from_table(name: str, table: dict[str, Any], base_dir: Path) -> ModelSpec:
    where = f"models.{name}"
    known = set(ModelSpec.__dataclass_fields__) - {"name"}
    unknown = set(table) - known
    if unknown:
        raise ModelConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    if "path" not in table:
        raise ModelConfigError(f"{where}.path is required")
    family = table.get("family", "stable-diffusion")
    if family not in FAMILIES:
        raise ModelConfigError(f"{where}.family must be one of {', '.join(FAMILIES)}")
    dtype = table.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ModelConfigError(f"{where}.dtype must be one of {', '.join(DTYPES)}")
    path = Path(table["path"])
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_dir():
        raise ModelConfigError(f"{where}.path is not a local directory")
    sizes = tuple(parse_size(s, f"{where}.sizes") for s in table.get("sizes", ["512x512"]))
    default_size = parse_size(table["default_size"], f"{where}.default_size") if (
        "default_size" in table
    ) else sizes[0]
    if default_size not in sizes:
        raise ModelConfigError(f"{where}.default_size must be one of sizes")
    fields = {k: v for k, v in table.items()
              if k not in ("path", "family", "sizes", "default_size")}
    if "examples" in fields:
        fields["examples"] = tuple(fields["examples"])
    try:
        spec = ModelSpec(name=name, path=path, family=family, sizes=sizes,
                         default_size=default_size, **fields)
    except TypeError as exc:  # a value of the wrong type; the message holds only field names
        raise ModelConfigError(f"{where}: {exc}") from None
    for limit in ("default_steps", "max_steps", "max_n", "max_batch"):
        value = getattr(spec, limit)
        if not isinstance(value, int) or value < 1:
            raise ModelConfigError(f"{where}.{limit} must be a positive integer")
    if spec.default_steps > spec.max_steps:
        raise ModelConfigError(f"{where}.default_steps must not exceed max_steps")
    return spec


def load_specs(models_file: Path | None) -> dict[str, ModelSpec]:
    """The embedded default, plus every model listed in models_file."""
    specs = {EMBEDDED_MODEL_NAME: embedded_spec()}
    if models_file is None:
        return specs
    try:
        document = tomllib.loads(models_file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelConfigError(f"models file cannot be read: {type(exc).__name__}") from None
    tables = document.get("models", {})
    if not isinstance(tables, dict):
        raise ModelConfigError("models must be a table of [models.<name>] entries")
    for name, table in tables.items():
        specs[name] = _spec_from_table(name, table, models_file.parent)
    return specs


def resolve_device(spec: ModelSpec) -> torch.device:
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelConfigError(f"models.{spec.name}.device is cuda but no GPU is visible")
    return device


def load_pipeline(spec: ModelSpec) -> TextToImagePipeline:
    """Load a model from its local directory; never touches the network."""
    device = resolve_device(spec)
    dtype = DTYPES[spec.dtype]
    if spec.family == "shapes":
        from imagegen.pipelines.shapes import load_shapes_pipeline

        return load_shapes_pipeline(spec.path, device, dtype)
    from imagegen.pipelines.stable_diffusion import load_stable_diffusion_pipeline

    return load_stable_diffusion_pipeline(spec.path, device, dtype)
