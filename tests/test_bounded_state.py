"""Job records and held batches are bounded: beyond the caps, 429 with Retry-After.

Canceled jobs and batches count until they are purged, so create-and-cancel
loops cannot grow the process's state.
"""

from __future__ import annotations

from pathlib import Path

from service.bulk.runner import MAX_OPEN_BATCHES
from tests.helpers import running_app
from tests.test_batches import JSONL, jsonl, line, settings_for

JOB = {"prompt": "a red circle", "width": 32, "height": 32, "num_inference_steps": 2}


async def test_job_records_are_capped_and_canceled_ones_count(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path, max_job_records=3)) as client:
        for _ in range(3):
            made = await client.post("/v1/jobs", json=JOB)
            assert made.status_code == 202
            await client.delete(f"/v1/jobs/{made.json()['id']}")
        refused = await client.post("/v1/jobs", json=JOB)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_jobs"
        assert int(refused.headers["retry-after"]) >= 1


async def test_canceled_batches_count_against_the_open_batch_cap(tmp_path: Path) -> None:
    # Long enough that each is still queued or running when it is canceled.
    lines = jsonl([line(number) for number in range(1, 51)])
    async with running_app(settings_for(tmp_path)) as client:
        for _ in range(MAX_OPEN_BATCHES):
            made = await client.post("/v1/batches", content=lines, headers=JSONL)
            assert made.status_code == 202
            canceled = await client.delete(f"/v1/batches/{made.json()['id']}")
            assert canceled.status_code == 200
        refused = await client.post("/v1/batches", content=lines, headers=JSONL)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_batches"
        assert "retry-after" in refused.headers
