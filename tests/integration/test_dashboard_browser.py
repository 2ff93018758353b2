"""The dashboard's pipeline page in a real browser, against a real pipeline.

Each test starts the embedded stack (moto's server, receiver, consumer), the dashboard as
its own uvicorn process pointed at it, and a fresh browser. They protect what a person
watching the page relies on: live figures that move while readings flow, a token that
keeps others out, and a page that says which source is down instead of going blank.
Skipped where Chromium is missing (tests/integration/browser.py). ``DASHBOARD_SCREENSHOT=path``
saves the page, as it looks with readings flowing, to that path (docs/dashboard-pipeline.png
was made so). ``DASHBOARD_TIMINGS=path`` runs one more test, nothing asserted on it: 1,000 vehicles'
batch files in this hour (``DASHBOARD_TIMINGS_VEHICLES`` to change the size), the page's first paint and
first poll's figures timed on a fresh dashboard and again, appended to that path as a JSON line.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from src.common.layout import batch_file_name, batch_files
from src.common.offline import lay_out, simulate
from src.embedded.stack import EmbeddedStack
from tests.integration.browser import (
    body_of,
    console_errors,
    dashboard,
    number,
    status_of,
    text,
    wait_for,
    wait_until,
)
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration

READ_TIMINGS = """
const pick = (e) => ({name: e.name, start_ms: e.startTime, duration_ms: e.duration});
const fcp = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint');
const mark = performance.getEntriesByName('pipeline-figures-filled')[0];
const api = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/pipeline'));
return {
  first_contentful_paint_ms: fcp ? fcp.startTime : null,
  figures_filled_ms: mark ? mark.startTime : null,
  measures: performance.getEntriesByType('measure').map(pick),
  api_calls_before_filled: mark ? api.filter((e) => e.startTime < mark.startTime).length : null,
  first_api_call: api.length ? {start_ms: api[0].startTime, duration_ms: api[0].duration,
                                bytes: api[0].encodedBodySize} : null,
};
"""
"""The browser's first contentful paint and the page's mark once the first poll's figures are written (ms since
navigation), the first render's script time and the first /api/pipeline call."""


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


def lay_out_this_hour(directory: Path, vehicles: int, duration_s: int, lines_per_file: int) -> tuple[int, int]:
    """``vehicles`` simulated at 1 s for the ``duration_s`` before now, stored as the consumer would: this hour's
    readings cut into batch files of ``lines_per_file``, each named by its last reading (about one a second at
    1,000 vehicles). Returns this hour's (files, bytes)."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(seconds=duration_s)
    jsonl, _ = simulate(directory, vehicles, 1, 1, 1000, 7, duration_s=duration_s, start=start)
    lay_out(jsonl, directory / "raw")
    jsonl.unlink()
    for whole in batch_files(directory / "raw", now):
        with whole.open("rb") as lines:
            for index, chunk in enumerate(iter(lambda: list(islice(lines, lines_per_file)), [])):
                last = datetime.fromisoformat(orjson.loads(chunk[-1])["ingest_received_at"].replace("Z", "+00:00"))
                name = batch_file_name(int(last.timestamp() * 1000), f"t{index}")  # unique: two may end alike
                (whole.parent / name).write_bytes(b"".join(chunk))
        whole.unlink()
    files = batch_files(directory / "raw", now)
    return len(files), sum(path.stat().st_size for path in files)


def figures_filled(driver: WebDriver) -> dict[str, Any]:
    wait_for(driver, lambda: driver.execute_script(READ_TIMINGS)["figures_filled_ms"] is not None, "the figures mark")
    return dict(driver.execute_script(READ_TIMINGS))


@pytest.mark.skipif(not os.environ.get("DASHBOARD_TIMINGS"), reason="set DASHBOARD_TIMINGS=path to time the page")
def test_pipeline_page_timings_with_a_thousand_vehicles_files(
    stack: EmbeddedStack, browser: WebDriver, tmp_path: Path
) -> None:
    """Not a pass/fail check: first contentful paint and the first poll's figures on the page, with 1,000
    vehicles' batch files (3 minutes at 1 s) in this hour, on a fresh dashboard (its fleet reader still reading
    them) and again once it has read them; appended to DASHBOARD_TIMINGS as a JSON line."""
    vehicles = int(os.environ.get("DASHBOARD_TIMINGS_VEHICLES", "1000"))
    data = tmp_path / "large-fleet"
    data.mkdir()
    files, size = lay_out_this_hour(data, vehicles, 180, vehicles)
    measured: dict[str, Any] = {"page": "pipeline", "vehicles": vehicles, "files": files, "raw_mb": round(size / 1e6)}
    with dashboard(stack, tmp_path, DATA_DIR=str(data)) as base:
        browser.get(f"{base}/pipeline")  # at once: a fresh dashboard, nothing read yet
        measured["cold"] = figures_filled(browser)
        measured["cold"]["files_shown"] = number(browser, "files-count")
        wait_until(lambda: len(orjson.loads(body_of(f"{base}/api/fleet", {}))["rows"]) == vehicles, "the live rows")
        browser.get("about:blank")
        browser.get(f"{base}/pipeline")
        measured["warm"] = figures_filled(browser)
        measured["warm"]["files_shown"] = number(browser, "files-count")
        assert console_errors(browser) == []
    measured["load_average"] = os.getloadavg()
    with Path(os.environ["DASHBOARD_TIMINGS"]).open("ab") as out:
        out.write(orjson.dumps(measured) + b"\n")
