"""The real components some tests drive (Debian's chromium, redis-server, nginx).

Found the way scripts/test.sh finds them (`command -v`: anywhere on PATH, and
the sbin directories where Debian puts nginx). Where one is missing a test
skips on a developer's machine, but under CI (CI=true) it fails: CI installs
them all, so a skip there would be a green run that tested nothing.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, NoReturn

import pytest

# Markers of tests that need a real component; a skip of one of them fails under CI.
COMPONENT_MARKERS = ("browser", "redis", "nginx")


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def which(command: str) -> str | None:
    """The component's executable, where scripts/test.sh would find it."""
    return shutil.which(command) or shutil.which(command, path="/usr/local/sbin:/usr/sbin:/sbin")


def missing(what: str) -> NoReturn:
    """Skip the test for want of `what`; under CI, fail it."""
    reason = f"needs {what}, which is not installed"
    if under_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under CI, a skipped test that needs a real component is a failure."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and under_ci()) or hasattr(report, "wasxfail"):
        return
    needed = [name for name in COMPONENT_MARKERS if item.get_closest_marker(name)]
    if needed:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CI=true, and this test needs {', '.join(needed)}: skipped ({reason})"
