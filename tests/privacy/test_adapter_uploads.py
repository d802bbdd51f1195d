"""Uploaded adapters are parsed in memory and kept there: nothing is written to disk.

The audit hook (tests/privacy/support.py) records every write from any thread
while an adapter is uploaded as multipart and as JSON, used, listed and deleted.
"""

from __future__ import annotations

import base64
from pathlib import Path

from tests import tiny_families
from tests.helpers import make_settings, running_app
from tests.privacy.support import WRITES


async def test_an_adapter_upload_writes_nothing(tmp_path: Path,
                                                family_dirs: dict[str, Path]) -> None:
    size = f"{tiny_families.SIZE}x{tiny_families.SIZE}"
    models = tmp_path / "models.toml"
    models.write_text(f'[models.sd15]\npath = "{family_dirs["sd15"]}"\nsizes = ["{size}"]\n'
                      "default_steps = 2\n")
    adapter = tiny_families.lora_bytes(family_dirs["sd15"], seed=3)
    body = {"model": "sd15", "prompt": "a red cat", "response_format": "b64_json"}
    async with running_app(make_settings(models=models)) as client:
        # Every path once before recording, so lazy imports and pools already exist.
        warm = (await client.post("/v1/loras", data={"model": "sd15"},
                                  files={"file": ("a.safetensors", adapter)})).json()["id"]
        warm_up = await client.post("/v1/images/generations",
                                    json={**body, "loras": [{"name": warm}]})
        assert warm_up.status_code == 200
        with WRITES.recording() as writes:
            form = await client.post("/v1/loras", data={"model": "sd15"},
                                     files={"file": ("a.safetensors", adapter)})
            sent = await client.post("/v1/loras", json={
                "model": "sd15", "data": base64.b64encode(adapter).decode()})
            used = await client.post("/v1/images/generations", json={
                **body, "loras": [{"name": form.json()["id"]}, {"name": sent.json()["id"]}]})
            listed = await client.get("/v1/models/sd15")
            deleted = await client.delete(f"/v1/loras/{form.json()['id']}")
    assert [form.status_code, sent.status_code, used.status_code, listed.status_code,
            deleted.status_code] == [201, 201, 200, 200, 204]
    assert writes == []
