"""The dashboard's pipeline page in a real browser, against a real pipeline.

Headless Chromium from Debian's packages (``chromium``, ``chromium-driver``), driven by
Selenium. Each test starts the embedded stack (moto's server, receiver, consumer), the
dashboard as its own uvicorn process pointed at it, and a fresh browser. They protect what
a person watching the page relies on: live figures that move while readings flow, a token
that keeps others out, and a page that says which source is down instead of going blank.
Skipped where Chromium or its driver is missing (``make test`` says so in one line;
``.ci/run`` installs them). ``DASHBOARD_SCREENSHOT=path`` saves the page, as it looks
with readings flowing, to that path (docs/dashboard-pipeline.png was made so).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from src.embedded.processes import free_port, tail
from src.embedded.stack import EmbeddedStack
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (requirements-test.txt)")
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "the browser tests need Chromium and its driver (Debian: chromium chromium-driver)", allow_module_level=True
    )

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

DEADLINE_S = 45.0
"""How long a figure may take to show what a test waits for (the machine is shared; passing tests never wait it)."""
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1100",
)
NUMBER_RE = re.compile(r"-?[\d,]+(?:\.\d+)?")


@contextmanager
def dashboard(stack: EmbeddedStack, log_dir: Path, **settings: str) -> Iterator[str]:
    """The dashboard (the contract's uvicorn command) pointed at ``stack``; its base URL while it runs."""
    port = free_port()
    env = stack.env() | {
        "RECEIVER_URL": stack.receiver_url,
        "CONSUMER_METRICS_URLS": ",".join(f"http://127.0.0.1:{p}/metrics" for p in stack.metrics_ports.values()),
        "DASHBOARD_REFRESH_S": "1",
        **settings,
    }
    log_path = log_dir / "dashboard.log"
    command = [sys.executable, "-m", "uvicorn", "src.dashboard.app:app", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(base, process, log_path), "the dashboard to answer")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers(base: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    """Whether the dashboard answers HTTP at all (a 401 counts: it is up); fails at once if it exited."""
    if process.poll() is not None:
        pytest.fail(f"the dashboard exited with {process.returncode}:\n{tail(log_path)}")
    try:
        return status_of(f"{base}/pipeline") in (200, 401)
    except OSError:
        return False


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def body_of(url: str, headers: dict[str, str]) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        return str(response.read().decode())


def wait_until(check: Callable[[], bool], what: str, within_s: float = DEADLINE_S) -> None:
    """Poll ``check`` (with WebDriverWait's clock and pacing, no browser needed) until true, or fail naming ``what``."""
    try:
        WebDriverWait(None, within_s, poll_frequency=0.2).until(lambda _: check())  # type: ignore[arg-type]
    except TimeoutException:
        pytest.fail(f"timed out after {within_s:.0f} s waiting for {what}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium of its own (fresh profile), its console kept for the checks."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def number(driver: WebDriver, element_id: str) -> float | None:
    """The figure shown in ``element_id`` as a number (``1,234``, ``50.2 /s``), None while it shows none."""
    match = NUMBER_RE.search(text(driver, element_id))
    return float(match[0].replace(",", "")) if match else None


def source_state(driver: WebDriver, key: str) -> str | None:
    items = driver.find_elements(By.CSS_SELECTOR, f'#sources li[data-source="{key}"]')
    return str(items[0].get_attribute("data-ok")) if items else None


def wait_for(driver: WebDriver, check: Callable[[], bool], what: str) -> None:
    """Wait until ``check`` holds on the page, failing with what the page shows."""
    try:
        WebDriverWait(driver, DEADLINE_S, poll_frequency=0.2).until(lambda _: check())
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"timed out after {DEADLINE_S:.0f} s waiting for {what}; the page shows:\n{shown}")


def console_errors(driver: WebDriver) -> list[dict[str, object]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


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
        consumer = browser.find_element(By.CSS_SELECTOR, '#sources li[data-source="consumer-0"]').text
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
