"""Under CI a test that needs a real component fails instead of skipping; elsewhere it skips."""

from __future__ import annotations

import pytest

SUITE = '''
import pytest
from tests.components import missing

@pytest.mark.redis
@pytest.mark.skipif(True, reason="needs redis-server")
def test_marked_and_skipped():
    pass

@pytest.mark.browser
def test_marked_and_skipped_inside():
    pytest.skip("no chromium")

def test_a_fixture_finds_it_missing():
    missing("nginx")

@pytest.mark.gpu
@pytest.mark.skipif(True, reason="no CUDA")
def test_gpu_only():
    pass

def test_plain():
    pass
'''
CONFTEST = "from tests.components import pytest_runtest_makereport  # noqa: F401\n"


@pytest.mark.parametrize(("ci", "expected"), [
    # A skip at setup (skipif) becomes an error, one in the test a failure; a GPU test still
    # skips: CI has no GPU.
    ("true", {"passed": 1, "failed": 2, "errors": 1, "skipped": 1}),
    ("", {"passed": 1, "skipped": 4}),
])
def test_ci_fails_what_a_developer_machine_skips(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str,
        expected: dict[str, int]) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "markers =\n  redis\n  browser\n  gpu\n")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(**expected)
    if ci:
        result.stdout.fnmatch_lines(["*CI=true*needs redis*"])
