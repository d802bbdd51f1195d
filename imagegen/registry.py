"""Model specs (models.toml + the embedded default) and loading them from local paths."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from imagegen.families import SHAPES, SHAPES_FAMILY, Family, FamilyError, family_of_directory
from imagegen.pipelines.base import TextToImagePipeline

EMBEDDED_MODEL_DIR = Path(__file__).parent / "embedded" / "shapes"
EMBEDDED_MODEL_NAME = "shapes"

# `family` in models.toml is optional: a directory's model_index.json says which family
# it is (the embedded kind, or one of diffusers'); a family named there must agree.
DIFFUSERS = "diffusers"
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
    # What this model's family passes differently (imagegen.families), with the
    # models.toml overrides (scheduler, max_sequence_length) applied.
    traits: Family = SHAPES_FAMILY

    def allows_size(self, width: int, height: int) -> bool:
        return (width, height) in self.sizes


def embedded_spec() -> ModelSpec:
    """The default model that ships inside the package and runs on a CPU."""
    return ModelSpec(
        name=EMBEDDED_MODEL_NAME,
        path=EMBEDDED_MODEL_DIR,
        family=SHAPES,
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


# Per-model overrides of the family's row.
TRAIT_FIELDS = ("scheduler", "max_sequence_length")


def _covers(family: str, name: str) -> bool:
    """`family` names this family, or a prefix of it ("stable-diffusion" covers "-xl", "-3")."""
    return name == family or name.startswith(family + "-")


def _traits(where: str, family: str, path: Path, table: dict[str, Any]) -> Family:
    """The family row for the directory, checked against `family` and overridden by the table."""
    from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING

    known = (SHAPES, DIFFUSERS, *AUTO_TEXT2IMAGE_PIPELINES_MAPPING)
    if not any(_covers(family, name) for name in known):
        raise ModelConfigError(f"{where}.family must be {SHAPES!r}, {DIFFUSERS!r} or a family "
                               "of diffusers' AutoPipelineForText2Image")
    try:
        traits = family_of_directory(path)
    except FamilyError as exc:
        raise ModelConfigError(f"{where}.path {exc}") from None
    if family != DIFFUSERS and not _covers(family, traits.name):
        raise ModelConfigError(f"{where}.family is {family!r} but the directory holds "
                               f"a {traits.name!r} pipeline")
    scheduler = table.get("scheduler", traits.scheduler)
    if scheduler is not None:
        import diffusers

        if not (isinstance(scheduler, str) and scheduler.endswith("Scheduler")
                and hasattr(diffusers, scheduler)):
            raise ModelConfigError(f"{where}.scheduler must name a diffusers scheduler class")
    length = table.get("max_sequence_length", traits.max_sequence_length)
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)
                               or length < 1):
        raise ModelConfigError(f"{where}.max_sequence_length must be a positive integer")
    return replace(traits, scheduler=scheduler, max_sequence_length=length)


def _spec_from_table(name: str, table: dict[str, Any], base_dir: Path) -> ModelSpec:
    where = f"models.{name}"
    if not isinstance(table, dict):
        raise ModelConfigError(f"{where} must be a table")
    known = (set(ModelSpec.__dataclass_fields__) | set(TRAIT_FIELDS)) - {"name", "traits"}
    unknown = set(table) - known
    if unknown:
        raise ModelConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    if "path" not in table:
        raise ModelConfigError(f"{where}.path is required")
    family = table.get("family", DIFFUSERS)
    if not isinstance(family, str):
        raise ModelConfigError(f"{where}.family must be a string")
    dtype = table.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ModelConfigError(f"{where}.dtype must be one of {', '.join(DTYPES)}")
    path = Path(table["path"])
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_dir():
        raise ModelConfigError(f"{where}.path is not a local directory")
    traits = _traits(where, family, path, table)
    sizes = tuple(parse_size(s, f"{where}.sizes") for s in table.get("sizes", ["512x512"]))
    default_size = parse_size(table["default_size"], f"{where}.default_size") if (
        "default_size" in table
    ) else sizes[0]
    if default_size not in sizes:
        raise ModelConfigError(f"{where}.default_size must be one of sizes")
    # The family's own defaults unless the table sets them.
    fields: dict[str, Any] = {"default_steps": traits.default_steps,
                              "default_guidance": traits.default_guidance}
    fields.update({k: v for k, v in table.items()
                   if k not in ("path", "family", "sizes", "default_size", *TRAIT_FIELDS)})
    if "examples" in fields:
        fields["examples"] = tuple(fields["examples"])
    try:
        spec = ModelSpec(name=name, path=path, family=traits.name, sizes=sizes,
                         default_size=default_size, traits=traits, **fields)
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
    if spec.family == SHAPES:
        from imagegen.pipelines.shapes import load_shapes_pipeline

        return load_shapes_pipeline(spec.path, device, dtype)
    from imagegen.pipelines.auto import load_diffusers_pipeline

    return load_diffusers_pipeline(spec.path, spec.traits, device, dtype)
