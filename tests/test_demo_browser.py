"""The demo page in Debian's headless Chromium (Playwright, never a downloaded browser),
against a real uvicorn with a short TTL. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import playwright.sync_api as playwright_sync
import pytest

from tests.components import which
from tests.helpers import LiveServer, live_server, make_settings
from tests.jobs_support import Gate, app_of, gated, wait_until

# Found as scripts/test.sh finds it (anywhere on PATH); under CI a missing one fails.
CHROMIUM = which("chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TTL_SECONDS = 10
QUEUE_SIZE = 2
PROMPT = "a red circle on a blue background"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]



@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate()


@pytest.fixture(scope="module")
def server(gate: Gate) -> Iterator[LiveServer]:
    settings = make_settings(ttl=TTL_SECONDS, max_ttl=3600, queue_size=QUEUE_SIZE,
                             sweep_interval=1.0)
    with live_server(settings, wrap_pipeline=gated(gate)) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_sync.Browser]:
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--disable-background-networking", "--no-sandbox", "--disable-gpu",
                  "--disable-component-update", "--disable-sync"],
        )
        yield chromium
        chromium.close()


class PageWatch:
    """What the page asked for from the network, and what it complained about."""

    def __init__(self, page: playwright_sync.Page, origin: str) -> None:
        self.origin = origin
        self.foreign: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _request(self, request: playwright_sync.Request) -> None:
        if not request.url.startswith((self.origin + "/", "data:")):
            self.foreign.append(request.url)


@pytest.fixture
def page(browser: playwright_sync.Browser, server: LiveServer,
         gate: Gate) -> Iterator[playwright_sync.Page]:
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
    gate.reset()


def open_model_page(page: playwright_sync.Page, server: LiveServer) -> PageWatch:
    watch = PageWatch(page, server.url)
    page.goto(server.url + "/models/shapes")
    page.wait_for_function("() => document.querySelector('#size').options.length > 0")
    return watch


def choose(page: playwright_sync.Page, size: str, steps: int) -> None:
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Size", exact=True).select_option(size)
    page.get_by_label("Steps", exact=True).fill(str(steps))


def record_progress(page: playwright_sync.Page) -> None:
    page.evaluate("""() => {
        window.progressSeen = [];
        const bar = document.getElementById('progress');
        new MutationObserver(() => window.progressSeen.push(bar.value))
            .observe(bar, {attributes: true, attributeFilter: ['value', 'max']});
    }""")


def shot(page: playwright_sync.Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"demo-{name}.png"), full_page=True)


def test_generate_watch_progress_cancel_and_see_expiry(page: playwright_sync.Page,
                                                       server: LiveServer, gate: Gate) -> None:
    watch = open_model_page(page, server)
    gate.step_delay = 0.15
    assert page.locator("#model-name").inner_text() == "shapes"
    assert "never written to disk" in page.locator("#privacy-note").inner_text()
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a blue")
    page.get_by_text("Words this model knows").click()
    page.get_by_role("button", name="Add the word triangle", exact=True).click()
    assert prompt.input_value() == "a blue triangle"
    page.get_by_role("button", name=f"Use the example: {PROMPT}", exact=True).click()
    assert prompt.input_value() == PROMPT
    choose(page, "64x64", 12)
    record_progress(page)

    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("() => document.getElementById('progress').value >= 4")
    assert page.get_by_role("button", name="Cancel", exact=True).is_enabled()
    shot(page, "progress")
    page.wait_for_selector("figure.result img")
    page.wait_for_function("() => document.querySelector('figure.result img').naturalWidth === 64")
    assert page.locator("#status").inner_text().startswith("Your image is ready")
    seen = page.evaluate("window.progressSeen")
    # The bar moved through the steps, not just from empty to full.
    assert len({value for value in seen if 0 < value < 12}) >= 3
    assert page.locator("figure.result figcaption").inner_text().startswith("Seed ")
    image_url = page.locator("figure.result img").get_attribute("src")
    shot(page, "done")

    # A second, long job, started and canceled from the keyboard while it runs: focus moves
    # to Cancel while the job runs, and back to Generate after.
    page.get_by_label("Steps", exact=True).fill("50")
    page.get_by_role("button", name="Generate", exact=True).focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('progress').value >= 1")
    assert page.evaluate("document.activeElement.id") == "cancel"
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('status').textContent"
                           ".startsWith('Canceled')")
    assert page.locator("figure.result").count() == 1
    assert page.get_by_role("button", name="Generate", exact=True).is_enabled()
    assert page.evaluate("document.activeElement.id") == "generate"
    assert gate.calls[-1].steps_run < 50
    shot(page, "canceled")

    # The first image runs out of time: the page says so, and the URL is gone.
    page.wait_for_selector("figure.expired", timeout=(TTL_SECONDS + 20) * 1000)
    assert "expired" in page.locator("figure.expired figcaption").inner_text()
    assert page.locator("figure.result img:visible").count() == 0
    assert image_url is not None and httpx.get(image_url).status_code == 404
    shot(page, "expired")
    assert watch.foreign == []
    assert watch.errors == []


def test_queue_full_says_so(page: playwright_sync.Page, server: LiveServer,
                            gate: Gate) -> None:
    watch = open_model_page(page, server)
    gate.hold()
    body = {"prompt": PROMPT, "width": 32, "height": 32}
    with httpx.Client(base_url=server.url) as client:
        for steps in range(2, 2 + QUEUE_SIZE + 1):  # one runs, the rest fill the queue
            assert client.post("/v1/jobs", json={**body, "num_inference_steps": steps}
                               ).status_code == 202
            # The first leaves the queue only when the device takes it: wait for that.
            wait_until(lambda: len(gate.calls) == 1, "the first job to reach the device")
        page.get_by_role("button", name="Generate", exact=True).click()
        status = page.locator("#status")
        page.wait_for_function("() => document.getElementById('status').textContent"
                               ".includes('full')")
        assert "try again in 2 seconds" in status.inner_text()
        assert page.get_by_role("button", name="Generate", exact=True).is_enabled()
        shot(page, "queue-full")
    gate.open()
    jobs = app_of(server).state.services.jobs
    wait_until(lambda: all(job.ticket is None for job in list(jobs.jobs.values())),
               "the queue to drain")
    # The 429 is the only error the browser logs (as a failed resource load).
    assert all("429" in error for error in watch.errors)
    assert watch.foreign == []


def test_phone_width_and_keyboard(browser: playwright_sync.Browser, server: LiveServer,
                                  gate: Gate) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True,
                                  device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(server.url + "/")
        link = page.get_by_role("link", name="shapes", exact=True)
        link.wait_for()
        shot(page, "index-phone")
        link.click()
        page.wait_for_url(server.url + "/models/shapes")
        page.wait_for_function("() => document.querySelector('#size').options.length > 0")
        choose(page, "32x32", 4)
        # Keyboard only: focus the prompt, write, Ctrl+Enter.
        page.get_by_label("Prompt", exact=True).focus()
        page.keyboard.press("Control+A")
        page.keyboard.type("two green squares on white")
        page.keyboard.press("Control+Enter")
        page.wait_for_function("() => document.querySelector('figure.result img')"
                               "?.naturalWidth > 0")
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow == 0
        alt = page.locator("figure.result img").get_attribute("alt")
        assert alt == "Generated image 1 for: two green squares on white"
        shot(page, "phone")
    finally:
        context.close()


def test_with_keys_a_demo_visitor_over_its_limit_is_told_how_long_to_wait(
    browser: playwright_sync.Browser, tmp_path: Path
) -> None:
    settings = make_settings(auth="keys", keys_file=tmp_path / "keys.json",
                             demo_limits="requests_per_minute=1")
    with live_server(settings) as keyed:
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            watch = open_model_page(page, keyed)
            choose(page, "32x32", 2)
            generate = page.get_by_role("button", name="Generate", exact=True)
            generate.click()
            page.locator("figure.result img").first.wait_for()
            generate.click()
            page.wait_for_function("() => document.getElementById('status').textContent"
                                   ".includes('try again')")
            status = page.locator("#status").inner_text()
            assert status.startswith("You are going a little fast for the demo.")
            assert re.search(r"try again in (\d+ s|1 min)\.$", status), status
            assert generate.is_enabled()
            shot(page, "demo-rate-limited")
            assert all("429" in error for error in watch.errors)
            assert watch.foreign == []
        finally:
            context.close()
