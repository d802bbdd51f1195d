"""LoRA adapters held in memory: the operator's (models.toml) and callers' private uploads.

An adapter is a state dict of tensors parsed from safetensors bytes in memory
(`safetensors.torch.load`); it is never written anywhere. A request names
adapters of its model with a scale; the engine resolves the names here, and
the resolved set is part of the sampling parameters, so requests share a
micro-batch only with the same adapters at the same scales. The pipeline
loads an adapter into its model (diffusers' load_lora_weights, peft
underneath) the first time a batch uses it, and switches adapters off for a
batch without them, so nothing carries over from one request to the next.

Uploads belong to an owner and expire at an absolute time; an expired or
deleted upload is gone from lookups at once, and the pipeline lets go of its
loaded copy before its next batch.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from imagegen.pipelines.base import RequestRefused

Weights = dict[str, torch.Tensor]
MAX_ADAPTERS_PER_REQUEST = 4
UPLOAD_ID_PREFIX = "lora_"


class AdapterInvalid(RequestRefused):
    """The bytes are not a LoRA adapter this model can take (the message says why)."""


@dataclass(frozen=True, slots=True)
class AdapterChoice:
    """What a request asks for: an adapter of its model by name, at a scale."""

    name: str
    scale: float = 1.0


@dataclass(eq=False, slots=True)
class Adapter:
    """One adapter's weights; compared by identity (two uploads of one file are two)."""

    name: str  # the name requests use: the operator's, or an upload's id
    model: str
    weights: Weights = field(repr=False)
    # The key it is loaded under in a pipeline (unique in the process, a valid peft name).
    key: str = ""
    owner: str | None = None  # None: the operator's, anyone may use it
    expires_at: float | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class LoraUse:
    """An adapter resolved for one request, at its scale: part of the batching key."""

    adapter: Adapter
    scale: float


def read_adapter(data: bytes, model: str) -> Weights:
    """Parse safetensors bytes in memory; AdapterInvalid (a 400) when they are not that."""
    try:
        weights = load_safetensors(data)
    except (SafetensorError, ValueError, OSError):
        raise AdapterInvalid("The adapter is not a readable safetensors file.", "file") from None
    if not weights or not all(tensor.is_floating_point() for tensor in weights.values()):
        raise AdapterInvalid(f"The adapter holds no LoRA weights for model '{model}'.", "file")
    return weights


class AdapterCatalog:
    """Every adapter by model and name; thread-safe (the event loop and workers read it)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._registered: dict[str, dict[str, Adapter]] = {}
        self._uploads: dict[str, Adapter] = {}
        self._keys = itertools.count()

    def _key(self) -> str:
        return f"adapter{next(self._keys)}"

    def register(self, model: str, name: str, weights: Weights) -> Adapter:
        adapter = Adapter(name=name, model=model, weights=weights, key=self._key())
        with self._lock:
            self._registered.setdefault(model, {})[name] = adapter
        return adapter

    def add_upload(self, model: str, weights: Weights, owner: str,
                   expires_at: float) -> Adapter:
        adapter = Adapter(name=UPLOAD_ID_PREFIX + secrets.token_urlsafe(18), model=model,
                          weights=weights, key=self._key(), owner=owner,
                          expires_at=expires_at)
        with self._lock:
            self._sweep()
            self._uploads[adapter.name] = adapter
        return adapter

    def upload(self, upload_id: str, owner: str) -> Adapter | None:
        """The owner's live upload of that id; None for anyone else's, expired or unknown."""
        with self._lock:
            self._sweep()
            adapter = self._uploads.get(upload_id)
        return adapter if adapter is not None and adapter.owner == owner else None

    def delete_upload(self, upload_id: str, owner: str) -> bool:
        with self._lock:
            self._sweep()
            adapter = self._uploads.get(upload_id)
            if adapter is None or adapter.owner != owner:
                return False
            self._drop(adapter)
        return True

    def registered(self, model: str) -> list[str]:
        with self._lock:
            return sorted(self._registered.get(model, {}))

    def uploads_of(self, owner: str, model: str) -> list[Adapter]:
        with self._lock:
            self._sweep()
            return [a for a in self._uploads.values() if a.owner == owner and a.model == model]

    def resolve(self, model: str, choices: Iterable[AdapterChoice],
                owner: str | None) -> tuple[LoraUse, ...]:
        """The adapters a request names, for its model; RequestRefused names a bad one."""
        uses: list[LoraUse] = []
        with self._lock:
            self._sweep()
            for choice in choices:
                adapter = self._find(model, choice.name, owner)
                if any(use.adapter is adapter for use in uses):
                    raise RequestRefused(f"Adapter '{choice.name}' is named twice.", "loras")
                uses.append(LoraUse(adapter, choice.scale))
        # One order for one set: the same adapters in any order batch together.
        return tuple(sorted(uses, key=lambda use: use.adapter.key))

    def _find(self, model: str, name: str, owner: str | None) -> Adapter:
        adapter = self._registered.get(model, {}).get(name)
        upload = self._uploads.get(name)
        if adapter is None and upload is not None and upload.owner == owner:
            adapter = upload
        if adapter is not None and adapter.model == model:
            return adapter
        elsewhere = adapter.model if adapter is not None else next(
            (m for m, names in self._registered.items() if name in names), None)
        if elsewhere is not None:
            raise RequestRefused(f"Adapter '{name}' is for model '{elsewhere}', not "
                                 f"'{model}'.", "loras")
        raise RequestRefused(f"Model '{model}' has no adapter '{name}'.", "loras")

    def sweep(self) -> int:
        """Drop expired uploads now; how many went."""
        with self._lock:
            return self._sweep()

    def _sweep(self) -> int:
        now = self.clock()
        expired = [a for a in self._uploads.values()
                   if a.expires_at is not None and a.expires_at <= now]
        for adapter in expired:
            self._drop(adapter)
        return len(expired)

    def _drop(self, adapter: Adapter) -> None:
        del self._uploads[adapter.name]
        # Requests already queued with it still run; the pipeline then unloads it.
        adapter.deleted = True
