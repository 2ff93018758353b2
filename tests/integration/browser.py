"""What the dashboard's browser tests share: the dashboard as its own process, a headless Chromium, waits.

Headless Chromium from Debian's packages (``chromium``, ``chromium-driver``), driven by
Selenium. Importing this module skips the importing test module where Chromium or its
driver is missing (``make test`` says so in one line; ``.ci/run`` installs them). The
``browser`` fixture (tests/integration/conftest.py) is :func:`chromium`.
"""

from __future__ import annotations

import re
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

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (requirements-test.txt)")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (requirements-test.txt)")
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "the browser tests need Chromium and its driver (Debian: chromium chromium-driver)", allow_module_level=True
    )

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
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


@contextmanager
def chromium(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium of its own (fresh profile under ``tmp_path``), its console kept for the checks."""
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
    """The element's text; read again if the page re-rendered it between finding and reading."""
    for _ in range(5):
        try:
            return str(driver.find_element(By.ID, element_id).text)
        except StaleElementReferenceException:
            continue
    return str(driver.find_element(By.ID, element_id).text)


def number(driver: WebDriver, element_id: str) -> float | None:
    """The figure shown in ``element_id`` as a number (``1,234``, ``50.2 /s``), None while it shows none."""
    match = NUMBER_RE.search(text(driver, element_id))
    return float(match[0].replace(",", "")) if match else None


def wait_for(driver: WebDriver, check: Callable[[], bool], what: str) -> None:
    """Wait until ``check`` holds on the page, failing with what the page shows."""
    try:
        stale = (StaleElementReferenceException,)
        wait = WebDriverWait(driver, DEADLINE_S, poll_frequency=0.2, ignored_exceptions=stale)
        wait.until(lambda _: check())
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"timed out after {DEADLINE_S:.0f} s waiting for {what}; the page shows:\n{shown}")


def console_errors(driver: WebDriver) -> list[dict[str, object]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
