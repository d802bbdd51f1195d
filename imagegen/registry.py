"""Model specs (models.toml + the embedded default) and loading them from local paths."""

from __future__ import annotations

import inspect
import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from imagegen.adapters import UPLOAD_ID_PREFIX, AdapterCatalog, AdapterInvalid, read_adapter
from imagegen.families import SHAPES, SHAPES_FAMILY, Family, FamilyError, family_of_directory
from imagegen.pipelines.base import TextToImagePipeline

EMBEDDED_MODEL_DIR = Path(__file__).parent / "embedded" / "shapes"
EMBEDDED_MODEL_NAME = "shapes"

# `family` in models.toml is optional: a directory's model_index.json says which family
# it is (the embedded kind, or one of diffusers'); a family named there must agree.
DIFFUSERS = "diffusers"
ADAPTER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
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
    # What one device second of this model costs a caller (usage reports cost = seconds x price).
    price_per_second: float = 1.0
    description: str = ""
    examples: tuple[str, ...] = field(default=())
    # What this model's family passes differently (imagegen.families), with the
    # models.toml overrides (scheduler, scheduler_options, max_sequence_length) applied.
    traits: Family = SHAPES_FAMILY
    # Speed (imagegen/speed.py): attention implementation, torch.compile (regional
    # where the family has repeated blocks), channels_last, fused QKV projections.
    attention: str = "sdpa"
    compile: bool = False
    compile_mode: str = "default"
    channels_last: bool = False
    fuse_qkv: bool = False
    # Batch sizes a compiled model runs at (others are padded up to one); () = powers of 2.
    batch_buckets: tuple[int, ...] = ()
    # A compiled model's adapter slot (rank): one adapter per request is copied into it
    # (diffusers' LoRA hotswap) instead of loaded beside it, so nothing recompiles.
    lora_max_rank: int = 0
    # The operator's LoRA adapters ([models.NAME.loras] name = "file.safetensors").
    loras: tuple[tuple[str, Path], ...] = ()

    def allows_size(self, width: int, height: int) -> bool:
        return (width, height) in self.sizes

    def buckets(self) -> tuple[int, ...]:
        """Images per pipeline call a compiled model is warmed up for (ascending)."""
        if self.batch_buckets:
            return tuple(sorted(set(self.batch_buckets)))
        powers = [size for size in (1, 2, 4, 8, 16, 32, 64) if size < self.max_batch]
        return (*powers, self.max_batch)

    def bucket_for(self, images: int) -> int:
        """The smallest bucket that holds `images` (a compiled graph exists for it)."""
        return next((b for b in self.buckets() if b >= images), images)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """`[devices."cuda:0"]` in models.toml: how much of a device the models may use."""

    name: str
    memory_budget_mb: float | None = None  # None: measured free memory minus the reserve
    memory_reserve_mb: float | None = None  # None: imagegen.model_manager's default


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
TRAIT_FIELDS = ("scheduler", "scheduler_options", "max_sequence_length")


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
    import diffusers

    scheduler = table.get("scheduler", traits.scheduler)
    if scheduler is not None and not (isinstance(scheduler, str)
                                      and scheduler.endswith("Scheduler")
                                      and hasattr(diffusers, scheduler)):
        raise ModelConfigError(f"{where}.scheduler must name a diffusers scheduler class")
    options = table.get("scheduler_options", traits.scheduler_options)
    if not isinstance(options, dict):
        raise ModelConfigError(f"{where}.scheduler_options must be a table")
    if options:
        name = scheduler or _directory_scheduler(path)
        accepted = inspect.signature(getattr(diffusers, name, object).__init__).parameters
        unknown = sorted(set(options) - set(accepted) - {"self"})
        if unknown:
            raise ModelConfigError(f"{where}.scheduler_options.{unknown[0]} is not a setting "
                                   f"of {name}")
    length = table.get("max_sequence_length", traits.max_sequence_length)
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)
                               or length < 1):
        raise ModelConfigError(f"{where}.max_sequence_length must be a positive integer")
    return replace(traits, scheduler=scheduler, scheduler_options=options,
                   max_sequence_length=length)


def _directory_scheduler(path: Path) -> str:
    """The scheduler class a diffusers directory ships with ("" when it names none)."""
    try:
        config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        return ""
    name = config.get("_class_name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else ""


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
    for listed in ("examples", "batch_buckets"):
        if isinstance(fields.get(listed), list):
            fields[listed] = tuple(fields[listed])
    fields["loras"] = _adapter_files(where, traits, table.get("loras", {}), base_dir)
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
    _check_speed(spec, where)
    price = spec.price_per_second
    if isinstance(price, bool) or not isinstance(price, int | float) or not 0 <= price < 1e9:
        raise ModelConfigError(f"{where}.price_per_second must be a number, 0 or more")
    return spec


ATTENTION = ("sdpa", "eager")  # or a backend of diffusers' attention dispatcher
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _check_speed(spec: ModelSpec, where: str) -> None:
    for flag in ("compile", "channels_last", "fuse_qkv"):
        if not isinstance(getattr(spec, flag), bool):
            raise ModelConfigError(f"{where}.{flag} must be true or false")
    rank = spec.lora_max_rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ModelConfigError(f"{where}.lora_max_rank must be a whole number, 0 for none")
    if rank and not (spec.compile and spec.traits.adapters and not spec.fuse_qkv):
        # The slot's layers are the separate q, k, v projections that fusing removes.
        raise ModelConfigError(f"{where}.lora_max_rank needs compile = true, a family that "
                               "takes adapters, and no fuse_qkv")
    if spec.compile_mode not in COMPILE_MODES:
        raise ModelConfigError(f"{where}.compile_mode must be one of {', '.join(COMPILE_MODES)}")
    if spec.attention not in ATTENTION:
        from diffusers.models.attention_dispatch import AttentionBackendName

        if spec.attention not in {backend.value for backend in AttentionBackendName}:
            raise ModelConfigError(f"{where}.attention must be sdpa, eager or a diffusers "
                                   "attention backend such as flash or _native_cudnn")
    buckets = spec.batch_buckets
    if not all(isinstance(b, int) and 1 <= b <= spec.max_batch for b in buckets) or (
            buckets and max(buckets) != spec.max_batch):
        raise ModelConfigError(f"{where}.batch_buckets must be sizes from 1 up to max_batch, "
                               "the largest equal to max_batch")


def _read_models_file(models_file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(models_file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelConfigError(f"models file cannot be read: {type(exc).__name__}") from None
def _adapter_files(where: str, traits: Family, table: Any,
                   base_dir: Path) -> tuple[tuple[str, Path], ...]:
    """[models.NAME.loras]: adapter name -> a safetensors file (relative to the models file)."""
    from safetensors import SafetensorError, safe_open

    if not isinstance(table, dict):
        raise ModelConfigError(f"{where}.loras must be a table of name = \"file\"")
    if table and not traits.adapters:
        raise ModelConfigError(f"{where}.loras: the {traits.name} family takes no adapters")
    files = []
    for name, value in table.items():
        field_name = f"{where}.loras.{name}"
        if not ADAPTER_NAME.fullmatch(name) or name.startswith(UPLOAD_ID_PREFIX):
            raise ModelConfigError(f"{field_name}: a name is 1-64 letters, digits, '-', '_' "
                                   f"or '.', not starting with {UPLOAD_ID_PREFIX!r}")
        if not isinstance(value, str):
            raise ModelConfigError(f"{field_name} must be a file path")
        path = Path(value) if Path(value).is_absolute() else base_dir / value
        try:  # the header only: the weights are read once, when the model loads
            with safe_open(path, "pt"):
                pass
        except (OSError, SafetensorError):
            raise ModelConfigError(f"{field_name} is not a readable safetensors file") from None
        files.append((name, path))
    return tuple(files)


def load_adapters(spec: ModelSpec, pipeline: TextToImagePipeline,
                  catalog: AdapterCatalog) -> None:
    """Read the model's registered adapters into memory, once; each must fit the model."""
    for name, path in spec.loras:
        try:
            weights = read_adapter(path.read_bytes(), spec.name)
            pipeline.check_adapter(weights, spec.name)
        except AdapterInvalid as exc:
            raise ModelConfigError(f"models.{spec.name}.loras.{name}: {exc.message}") from None
        catalog.register(spec.name, name, weights)


def load_specs(models_file: Path | None) -> dict[str, ModelSpec]:
    """The embedded default, plus every model listed in models_file."""
    specs = {EMBEDDED_MODEL_NAME: embedded_spec()}
    if models_file is None:
        return specs
    document = _read_models_file(models_file)
    tables = document.get("models", {})
    if not isinstance(tables, dict):
        raise ModelConfigError("models must be a table of [models.<name>] entries")
    for name, table in tables.items():
        specs[name] = _spec_from_table(name, table, models_file.parent)
    return specs


def canonical_device(name: str) -> torch.device:
    """"cuda" means the current CUDA device: one name per device, "cuda:0" say."""
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available()
                            else 0)
    return device


def load_devices(models_file: Path | None) -> dict[str, DeviceSpec]:
    """The `[devices."NAME"]` tables of models_file, by canonical device name."""
    if models_file is None:
        return {}
    tables = _read_models_file(models_file).get("devices", {})
    if not isinstance(tables, dict):
        raise ModelConfigError('devices must be a table of [devices."<name>"] entries')
    devices = {}
    for name, table in tables.items():
        where = f"devices.{name}"
        try:
            device = str(canonical_device(name))
        except RuntimeError:
            raise ModelConfigError(f"{where}: not a torch device name such as cuda:0 or cpu"
                                   ) from None
        if not isinstance(table, dict):
            raise ModelConfigError(f"{where} must be a table")
        unknown = set(table) - {"memory_budget_mb", "memory_reserve_mb"}
        if unknown:
            raise ModelConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
                    key == "memory_budget_mb" and value == 0):
                raise ModelConfigError(f"{where}.{key} must be a positive number of MB")
        devices[device] = DeviceSpec(device, table.get("memory_budget_mb"),
                                     table.get("memory_reserve_mb"))
    return devices


def resolve_device(spec: ModelSpec) -> torch.device:
    """The device a model runs on (its home; it may wait offloaded in CPU RAM)."""
    if spec.device == "auto":
        return canonical_device("cuda" if torch.cuda.is_available() else "cpu")
    device = canonical_device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelConfigError(f"models.{spec.name}.device is cuda but no GPU is visible")
    return device


def load_pipeline(spec: ModelSpec, device: torch.device | None = None) -> TextToImagePipeline:
    """Load a model from its local directory; never touches the network.

    `device` overrides where the weights go first (the model manager loads to
    the CPU and moves them to the model's device when it has room there).
    The speed settings of the spec are applied before anything runs.
    """
    from imagegen.speed import apply_speed_settings

    device = device or resolve_device(spec)
    dtype = DTYPES[spec.dtype]
    if spec.family == SHAPES:
        from imagegen.pipelines.shapes import load_shapes_pipeline

        pipeline: TextToImagePipeline = load_shapes_pipeline(spec.path, device, dtype)
    else:
        from imagegen.pipelines.auto import load_diffusers_pipeline

        pipeline = load_diffusers_pipeline(spec.path, spec.traits, device, dtype)
    apply_speed_settings(spec, pipeline)
    return pipeline
