"""Private LoRA adapters uploaded by callers: parsed in memory, owned, expiring like images.

The bytes are parsed where they arrived (safetensors from a bytes object), checked
against the model's layers, and kept in the engine's adapter catalog until the
model's image TTL runs out or the owner deletes them. Nothing is written to disk.
"""

from __future__ import annotations

import asyncio

from imagegen.adapters import Adapter, read_adapter
from service.container import Services
from service.errors import AdapterNotFound
from service.generation import resolve_ttl


async def upload_adapter(services: Services, model: str, data: bytes, owner: str,
                         ttl_seconds: float | None = None) -> Adapter:
    """Keep an adapter for `owner`; AdapterInvalid (a 400) when it is not one of `model`."""
    ttl = await resolve_ttl(services, model, ttl_seconds)
    # Parsing and checking a large file takes longer than the event loop may wait.
    weights = await asyncio.to_thread(read_adapter, data, model)
    return await asyncio.to_thread(services.engine.add_adapter, model, weights, owner,
                                   services.clock() + ttl)


def find_adapter(services: Services, adapter_id: str, owner: str) -> Adapter:
    adapter = services.engine.adapters.upload(adapter_id, owner)
    if adapter is None:
        raise AdapterNotFound
    return adapter


def delete_adapter(services: Services, adapter_id: str, owner: str) -> None:
    if not services.engine.adapters.delete_upload(adapter_id, owner):
        raise AdapterNotFound
