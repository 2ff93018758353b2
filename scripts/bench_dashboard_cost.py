"""What the dashboard costs the pipeline: the batched load test with and without the pipeline page open.

    python scripts/bench_dashboard_cost.py [--pairs 3] [--messages 600000 --rate 20000 --batch-size 100]

Each run is ``load_test.py --embedded`` (``src.loadtest.run.run_embedded``: a stack of its own,
the same settings) in a child process of its own. In a "with" run the dashboard (the
contract's uvicorn command, default refresh) is started on that stack and a headless
Chromium (Debian's ``chromium`` and ``chromedriver``, Selenium from requirements-test.txt)
keeps ``/pipeline`` open and refreshing from before the first reading until the report is
done. Runs alternate in pairs (without/with, then with/without, ...) so drift on a shared
machine falls on both sides. Prints each run's report figures (accepted: the readings sent
that were answered 202; a loaded machine answers some 503), the dashboard's and the
browser's CPU seconds per second, and per side the median with the range.
Results: docs/performance.md, "Dashboard".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src.embedded.processes import child_pids, process_cpu_seconds
from src.embedded.stack import EmbeddedStack, exit_on_sigterm
from src.loadtest.run import parse_args as load_test_args
from src.loadtest.run import progress, run_embedded

FIGURES = (
    ("accepted", "accepted"),
    ("throughput_rps", "readings/s"),
    ("e2e_ms.p50", "e2e P50"),
    ("e2e_ms.p95", "e2e P95"),
    ("e2e_ms.p99", "e2e P99"),
    ("ingest_ms.p95", "ingest P95"),
    ("lost", "lost"),
    ("dashboard_cpu", "dashboard CPU s/s"),
    ("browser_cpu", "browser CPU s/s"),
)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and every live descendant (a browser is a dozen processes)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += process_cpu_seconds(current) or 0.0
        todo.extend(child_pids(current))
    return total


@contextlib.contextmanager
def pipeline_page_open(stack: EmbeddedStack, costs: dict[str, float]) -> Iterator[None]:
    """The dashboard on ``stack`` and a headless Chromium showing /pipeline, until the block ends;
    their CPU seconds per second over the block go into ``costs``."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    stack.start_dashboard()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        service = webdriver.ChromeService(executable_path=shutil.which("chromedriver") or "chromedriver")
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.get(f"{stack.dashboard_url}/pipeline")
            receiver_ok = '#sources li[data-source="receiver"][data-ok="true"]'
            WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, receiver_ok))
            progress("the pipeline page is open and polling")
            browser_pid = driver.service.process.pid
            dashboard_pid = stack.service("dashboard").process.pid
            before = (time.monotonic(), tree_cpu_seconds(dashboard_pid), tree_cpu_seconds(browser_pid))
            yield
            wall = time.monotonic() - before[0]
            costs["dashboard_cpu"] = round((tree_cpu_seconds(dashboard_pid) - before[1]) / wall, 3)
            costs["browser_cpu"] = round((tree_cpu_seconds(browser_pid) - before[2]) / wall, 3)
        finally:
            driver.quit()


def run_arm(arm: str, load_args: list[str], out: Path) -> None:
    """One load test, with or without the page open; its report (and the costs) as JSON in ``out``."""
    args = load_test_args(["--embedded", *load_args])
    costs: dict[str, float] = {}
    attach = (lambda stack: pipeline_page_open(stack, costs)) if arm == "with" else None
    report = run_embedded(args, attach)
    out.write_text(json.dumps(report | costs))


def run_child(command: list[str]) -> None:
    """Run one arm; if we are stopped meanwhile, stop it with SIGINT (it stops its stack) and wait for it."""
    child = subprocess.Popen(command)
    try:
        if child.wait() != 0:
            raise SystemExit(f"a run failed with exit status {child.returncode}: {' '.join(command)}")
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            child.wait()


def figure(report: dict[str, Any], key: str) -> float | None:
    value: Any = report
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):g} ({min(values):g}-{max(values):g})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=600_000)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--report-json", type=Path, help="every run's report, as a JSON list")
    parser.add_argument("--arm", choices=("with", "without"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    exit_on_sigterm()
    load_args = ["--messages", str(args.messages), "--rate", f"{args.rate:g}", "--batch-size", str(args.batch_size)]
    if args.arm:
        run_arm(args.arm, load_args, args.out)
        return 0
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        for pair in range(args.pairs):
            for arm in ("without", "with") if pair % 2 == 0 else ("with", "without"):
                out = Path(tmp) / f"{pair}-{arm}.json"
                progress(f"pair {pair + 1}/{args.pairs}: load test {arm} the pipeline page open")
                run_child([sys.executable, __file__, "--arm", arm, "--out", str(out), *load_args])
                runs.append({"pair": pair + 1, "arm": arm} | json.loads(out.read_text()))
    if args.report_json:
        args.report_json.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"\nload_test.py --embedded {' '.join(load_args)}, {args.pairs} interleaved pairs\n")
    print("| run | " + " | ".join(label for _, label in FIGURES) + " |")
    print("|---" * (len(FIGURES) + 1) + "|")
    for run in runs:
        cells = [str(figure(run, key)) if figure(run, key) is not None else "-" for key, _ in FIGURES]
        print(f"| {run['pair']} {run['arm']} | " + " | ".join(cells) + " |")
    for arm in ("without", "with"):
        mine = [run for run in runs if run["arm"] == arm]
        cells = [spread([v for run in mine if (v := figure(run, key)) is not None]) for key, _ in FIGURES]
        print(f"| median (range), {arm} | " + " | ".join(cells) + " |")
    return 0 if all(run["lost"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
