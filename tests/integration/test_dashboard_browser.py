"""The dashboard's pipeline page in a real browser, against a real pipeline.

Each test starts the embedded stack (moto's server, receiver, consumer), the dashboard as
its own uvicorn process pointed at it, and a fresh browser. They protect what a person
watching the page relies on: live figures that move while readings flow, a token that
keeps others out, and a page that says which source is down instead of going blank.
Skipped where Chromium is missing (tests/integration/browser.py). ``DASHBOARD_SCREENSHOT=path``
saves the page, as it looks with readings flowing, to that path (docs/dashboard-pipeline.png
was made so).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from src.embedded.stack import EmbeddedStack
from tests.integration.browser import body_of, console_errors, dashboard, number, status_of, text, wait_for
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration


def source_state(driver: WebDriver, key: str) -> str | None:
    """The ``data-ok`` of a source's line ("true"/"false"); None while it is not shown (or is being re-rendered)."""
    try:
        items = driver.find_elements(By.CSS_SELECTOR, f'#sources li[data-source="{key}"]')
        return str(items[0].get_attribute("data-ok")) if items else None
    except StaleElementReferenceException:
        return None


def source_text(driver: WebDriver, key: str) -> str:
    """What a source's line says, read once the page holds still between finding and reading it."""
    found: list[str] = []

    def read() -> bool:
        found[:] = [driver.find_element(By.CSS_SELECTOR, f'#sources li[data-source="{key}"]').text]
        return True

    wait_for(driver, read, f"the line of source {key}")
    return found[0]


def rises(driver: WebDriver, element_id: str, what: str) -> None:
    """The figure shows a positive number, then a larger one."""
    wait_for(driver, lambda: (number(driver, element_id) or 0) > 0, f"{what} above zero")
    first = number(driver, element_id) or 0
    wait_for(driver, lambda: (number(driver, element_id) or 0) > first, f"{what} to rise above {first:g}")


def test_pipeline_page_shows_live_figures_that_rise_while_readings_flow(
    stack: EmbeddedStack, browser: WebDriver, tmp_path: Path
) -> None:
    """The simulator streams to the stack: counts and rates rise, latency, queue, DLQ and this hour's files show,
    every source is ok, and the browser logs no error."""
    simulator = [sys.executable, "-m", "src.generator.simulator", "--vehicles", "10", "--duration", "120"]
    simulator += ["--url", stack.receiver_url, "--seed", "3"]
    with dashboard(stack, tmp_path) as base:
        streaming = subprocess.Popen(simulator, cwd=REPO_ROOT, env=stack.env(), stdout=subprocess.DEVNULL)
        try:
            browser.get(f"{base}/pipeline")
            assert browser.title.startswith("Pipeline")
            rises(browser, "accepted-total", "readings accepted since the receiver started")
            rises(browser, "written-total", "readings written since the consumer started")
            wait_for(browser, lambda: (number(browser, "in-rate") or 0) > 0, "a readings/s in")
            wait_for(browser, lambda: (number(browser, "written-rate") or 0) > 0, "a readings/s written")
            wait_for(browser, lambda: (number(browser, "files-count") or 0) > 0, "batch files this hour")
            wait_for(browser, lambda: number(browser, "latency-p95") is not None, "an end-to-end P95")
            wait_for(browser, lambda: source_state(browser, "consumer-0") == "true", "the consumer's source ok")
            for key in ("receiver", "sqs", "disk"):
                assert source_state(browser, key) == "true", key
            assert number(browser, "queue-visible") is not None, text(browser, "queue-visible")
            assert text(browser, "dlq-visible") == "0"
            assert text(browser, "dlq-name") == f"{stack.config.queue_name}-dlq"
            assert "ms" in text(browser, "latency-p50") or " s" in text(browser, "latency-p50")
            wait_for(browser, lambda: "polled" in text(browser, "status"), "the status line")
            if os.environ.get("DASHBOARD_SCREENSHOT"):
                wait_for(browser, lambda: (number(browser, "accepted-total") or 0) > 1500, "a screenshot's worth")
                browser.set_window_size(1400, 1500)
                wait_for(browser, lambda: "polled" in text(browser, "status"), "the page after resizing")
                browser.save_screenshot(os.environ["DASHBOARD_SCREENSHOT"])
        finally:
            streaming.terminate()
            streaming.wait(timeout=30)
        assert console_errors(browser) == []


def test_pipeline_page_needs_its_token_and_names_a_stopped_consumer_or_queue(
    stack: EmbeddedStack, browser: WebDriver, tmp_path: Path
) -> None:
    """With DASHBOARD_TOKEN: 401 without it (pages, API, static files), the page with it; then a stopped
    consumer and a stopped SQS each show as a message for their source while the rest stays shown."""
    token = secrets.token_urlsafe(24)
    with dashboard(stack, tmp_path, DASHBOARD_TOKEN=token) as base:
        for path in ("/pipeline", "/api/pipeline", "/static/pipeline.js", f"/pipeline?token={token}x"):
            assert status_of(base + path) == 401, path
        assert status_of(f"{base}/api/pipeline", {"Authorization": f"Bearer {token}x"}) == 401
        api = body_of(f"{base}/api/pipeline", {"Authorization": f"Bearer {token}"})
        assert token not in api
        assert stack.config.api_key not in api

        browser.get(f"{base}/pipeline?token={token}")
        assert "token" not in browser.current_url  # traded for a cookie, out of the address bar
        wait_for(browser, lambda: source_state(browser, "consumer-0") == "true", "the consumer's source ok")
        wait_for(browser, lambda: number(browser, "queue-visible") is not None, "the queue depth")
        assert token not in browser.page_source

        stack.terminate("consumer-0")
        wait_for(browser, lambda: source_state(browser, "consumer-0") == "false", "the consumer shown down")
        consumer = source_text(browser, "consumer-0")
        assert "unreachable" in consumer and "cannot connect" in consumer, consumer
        assert text(browser, "written-rate").startswith("unavailable"), text(browser, "written-rate")
        assert number(browser, "in-rate") is not None  # the receiver still answers
        assert number(browser, "queue-visible") is not None  # and so does SQS
        assert status_of(f"{base}/api/pipeline", {"Authorization": f"Bearer {token}"}) == 200

        stack.terminate("moto")
        wait_for(browser, lambda: source_state(browser, "sqs") == "false", "SQS shown down")
        wait_for(browser, lambda: text(browser, "queue-visible").startswith("unavailable"), "no queue depth")
        assert source_state(browser, "receiver") == "true"
        assert status_of(f"{base}/api/pipeline", {"Authorization": f"Bearer {token}"}) == 200
        assert console_errors(browser) == []
