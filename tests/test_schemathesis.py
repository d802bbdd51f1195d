"""Schemathesis, as an outside fuzzer runs it, against the real app on a real uvicorn.

Its CLI reads the app's own /openapi.json and runs every phase: coverage and
fuzzing (positive and negative cases for each operation), then stateful
sequences that follow the document's links (create a job or a batch, read it,
its events or output, cancel it). Every check is on except
positive_data_acceptance (a schema cannot say which sizes a model pairs up, so
a valid-looking body may rightly get a 400) and use_after_free (a DELETE of a
job or batch cancels it; its record stays readable, as the API promises).
Bounded by --max-time; the retention policy is fuzzed in a run of its own so
that a fuzzed one-second lifetime cannot expire the jobs the stateful phase is
following.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ADMIN_TOKEN, live_server, make_settings

CONFIG = """
seed = 14
[generation]
max-examples = 8
[checks.positive_data_acceptance]
enabled = false
# DELETE /v1/jobs/{id} and /v1/batches/{id} cancel: the record stays readable, by contract.
[checks.use_after_free]
enabled = false
[checks.negative_data_rejection]
# A refusal is a refusal: 413 (too large) and 429 (too many) included.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429"]
"""
RUNS = {
    "api": ["--exclude-method", "PUT", "--max-time", "120"],
    "retention": ["--include-path", "/admin/retention", "--phases", "coverage,fuzzing",
                  "--max-time", "30"],
}


@pytest.mark.parametrize("run", RUNS)
def test_schemathesis_finds_nothing(run: str, tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    caplog.set_level(logging.INFO)
    settings = make_settings(queue_size=4, client_timeout=10.0)
    with live_server(settings) as server:
        result = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
             f"{server.url}/openapi.json", "--header", f"Authorization: Bearer {ADMIN_TOKEN}",
             "--workers", "2", "--request-timeout", "60", *RUNS[run]],
            capture_output=True, text=True, timeout=400, check=False,
            cwd=tmp_path)  # where it keeps its cache
    # The failures, then the summary: what a reader of a red run needs.
    report = result.stdout[result.stdout.find("=== FAILURES"):][:8000] + result.stdout[-1500:]
    assert result.returncode == 0, report
    assert "Failures:" not in report, report
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [(r.name, r.getMessage(), getattr(r, "error_type", None)) for r in errors]
