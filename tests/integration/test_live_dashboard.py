"""`make dashboard` (src/loadtest/live.py) as a person runs it: up, history laid out, streaming, then Ctrl-C.

One run on free ports with a small fleet and one hour of history: the dashboard answers,
the consumer writes the live readings, the history's full hour is aggregated with its
day's fleet health; SIGINT (what Ctrl-C sends) stops it with status 0, every reading the
simulator was answered 202 for is on disk (the queue was drained), and no process it
started is left.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from src.common.layout import batch_file_ms
from src.embedded.processes import free_port
from tests.integration.leftovers import processes_with_data_dir
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration

DEADLINE_S = 120.0


def wait_until(check: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``check`` until true; fail at once if ``process`` ended, or after the deadline, with its output."""
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"waiting for {what}; make dashboard said:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def status_of(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def listens(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def consumer_files(data_dir: Path) -> list[Path]:
    """Batch files the consumer wrote (a writer id in the name), not the history's (one per hour, no id)."""
    return [p for p in (data_dir / "raw").rglob("batch-*-*.jsonl") if batch_file_ms(p.name) is not None]


def test_make_dashboard_streams_with_history_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "out.txt"
    ports = [free_port(), free_port(), free_port()]
    command = [sys.executable, "scripts/dashboard.py", "--vehicles", "2", "--faults", "1", "--history-hours", "1"]
    command += ["--history-rate-ms", "10000"]  # a few hundred ticks however late in the hour: a quick test
    command += ["--moto-port", str(ports[0]), "--receiver-port", str(ports[1]), "--dashboard-port", str(ports[2])]
    command += ["--data-dir", str(data_dir)]
    with out.open("wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{ports[2]}"
        wait_until(lambda: status_of(f"{base}/pipeline") == 200, "the pipeline page", process, out)
        wait_until(lambda: bool(consumer_files(data_dir)), "a live reading on disk", process, out)
        wait_until(lambda: "history ready" in out.read_text(), "the history's jobs", process, out)
        assert list((data_dir / "aggregated").glob("aggregated-*.json")), "the history's full hour is aggregated"
        assert list((data_dir / "aggregated").glob("fleet-health-*.json")), "and its day's fleet health"
        said = out.read_text()
        assert f"{base}/pipeline" in said and f"{base}/fleet" in said
        assert "sensor_bias from the start: " + f"{base}/vehicles/veh-0000" in said
        assert processes_with_data_dir(data_dir.resolve()), "the services run with this DATA_DIR"

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=DEADLINE_S) == 0, out.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    said = out.read_text()
    assert "stopping: the simulator first" in said and "stopped: every process it started has ended" in said
    assert processes_with_data_dir(data_dir.resolve()) == []
    assert [port for port in ports if listens(port)] == []
    # Drained: every reading the simulator was answered 202 for is in a batch file.
    accepted = orjson.loads((data_dir / "logs" / "simulator-report.json").read_bytes())["accepted"]
    keys = {
        (record["vehicle_id"], record["can_id"], record["timestamp"])
        for path in consumer_files(data_dir)
        for record in map(orjson.loads, path.read_bytes().splitlines())
    }
    assert accepted > 0 and len(keys) == accepted
