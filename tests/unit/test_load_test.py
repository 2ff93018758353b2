"""load_test.py against a fake receiver and a fake consumer: the contract's report, the plot, the options."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from src.common.layout import batch_file_name, hour_partition
from src.common.schema import format_timestamp, natural_key_of
from src.loadtest.disk_index import DiskIndex
from src.loadtest.run import build_report, main, parse_args, plot_path, run_load_test, send_load
from tests.fakes import API_KEY, FakeReceiver

CONTRACT_FIELDS = {
    "sent",
    "accepted",
    "persisted",
    "lost",
    "duplicates",
    "throughput_rps",
    "elapsed_s",
    "e2e_ms",
    "ingest_ms",
}
PERCENTILES = {"p50", "p95", "p99", "max"}


class FakeConsumer:
    """Writes what the fake receiver accepted to batch files, as the consumer would; one reading twice."""

    def __init__(self, receiver: FakeReceiver, raw_dir: Path, duplicate_first: bool = True) -> None:
        self.receiver = receiver
        self.raw_dir = raw_dir
        self.duplicate_first = duplicate_first
        self.written = 0
        self.files = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeConsumer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            end = len(self.receiver.accepted)
            readings = self.receiver.accepted[self.written : end]
            if not readings:
                return
            if self.duplicate_first and self.written == 0:
                readings = [readings[0], *readings]
            self.written = end
            self._write(readings)

    def _write(self, readings: list[dict[str, object]]) -> None:
        received = datetime.now(UTC)
        directory = self.raw_dir / hour_partition(received)
        directory.mkdir(parents=True, exist_ok=True)
        self.files += 1
        lines = [orjson.dumps({**r, "ingest_received_at": format_timestamp(received)}) for r in readings]
        path = directory / batch_file_name(int(time.time() * 1000), f"fake_{self.files:06d}")
        path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture(autouse=True)
def keep_sigterm() -> Iterator[None]:
    """``main`` turns SIGTERM into SystemExit for its stack's sake; give pytest its own handler back."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def consumer(receiver: FakeReceiver, data_dir: Path) -> Iterator[FakeConsumer]:
    with FakeConsumer(receiver, data_dir / "raw") as running:
        yield running


def test_in_process_send_load_keeps_payloads_and_reports_the_contract(
    receiver: FakeReceiver, consumer: FakeConsumer, data_dir: Path
) -> None:
    run = asyncio.run(send_load(receiver.url, API_KEY, 200, 1000, 1, vehicles=20, keep_payloads=True))
    assert len(run.accepted) == 200 and run.payloads is not None
    sent = {natural_key_of(r): r["payload"] for r in receiver.accepted}
    assert run.payloads == sent
    time.sleep(0.2)
    consumer.flush()
    index = DiskIndex(data_dir / "raw")
    index.refresh()
    report = build_report(run, index, index.missing(set(run.accepted)), elapsed_s=1.0)
    assert set(report) == CONTRACT_FIELDS
    assert set(report["e2e_ms"]) == set(report["ingest_ms"]) == PERCENTILES
    assert (report["sent"], report["accepted"], report["persisted"], report["lost"]) == (200, 200, 200, 0)
    assert report["duplicates"] == 1
    assert 0 < report["e2e_ms"]["p50"] <= report["e2e_ms"]["max"]
    assert report["throughput_rps"] == pytest.approx(200 / run.window_s, abs=0.1)


def test_send_load_with_spawned_senders(receiver: FakeReceiver) -> None:
    run = asyncio.run(send_load(receiver.url, API_KEY, 300, 600, 5, vehicles=30, senders=2))
    assert run.senders == 2
    assert len(run.accepted) == 300 == len({natural_key_of(r) for r in receiver.accepted})


def test_refused_and_missing_readings_are_reported(receiver: FakeReceiver, data_dir: Path) -> None:
    run = asyncio.run(send_load(receiver.url, "wrong", 10, 1000, 1, vehicles=5))
    index = DiskIndex(data_dir / "raw")
    report = build_report(run, index, set(), elapsed_s=0.5)
    assert report["refused"] == {"401": 10}
    assert report["accepted"] == 0
    assert report["e2e_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}


def test_cli_against_a_running_receiver_writes_report_and_plot(
    receiver: FakeReceiver, consumer: FakeConsumer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KEY", API_KEY)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    report_path = data_dir.parent / "out" / "report.json"
    argv = ["--messages", "400", "--rate", "800", "--batch-size", "10", "--url", receiver.url]
    assert main([*argv, "--report-json", str(report_path), "--persist-timeout", "10"]) == 0
    report = orjson.loads(report_path.read_bytes())
    assert set(report) == CONTRACT_FIELDS
    assert report["persisted"] == 400 and report["lost"] == 0
    assert report_path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_lost_readings_fail_the_run_and_the_cpu_shares_are_printed(
    receiver: FakeReceiver, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse_args(["--messages", "20", "--rate", "400", "--persist-timeout", "0.3", "--plot", "p.png"])
    args.plot = data_dir / "plot.png"
    used = iter(range(100))
    report = run_load_test(args, receiver.url, API_KEY, data_dir, lambda: {"receiver": float(next(used))})
    assert report["lost"] == report["accepted"] == 20
    assert args.plot.exists()
    err = capsys.readouterr().err
    assert "CPU seconds per second while sending" in err
    assert "receiver" in err and "load generator" in err
    assert f"latency plot written to {args.plot}" in err


def test_cli_without_an_api_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("API_KEY", raising=False)
    assert main(["--messages", "1", "--rate", "1"]) == 2


def test_embedded_stack_size_defaults_to_one_worker_and_one_consumer() -> None:
    """--embedded scales the stack only when asked: the contract's single receiver and consumer by default."""
    args = parse_args(["--messages", "1", "--rate", "1"])
    assert (args.receiver_workers, args.consumers) == (1, 1)
    args = parse_args(["--messages", "1", "--rate", "1", "--receiver-workers", "2", "--consumers", "3"])
    assert (args.receiver_workers, args.consumers) == (2, 3)


def test_plot_goes_next_to_the_report_unless_asked_elsewhere() -> None:
    assert plot_path(parse_args(["--messages", "1", "--rate", "1"])) is None
    with_report = parse_args(["--messages", "1", "--rate", "1", "--report-json", "out/run.json"])
    assert plot_path(with_report) == Path("out/run.png")
    explicit = parse_args(["--messages", "1", "--rate", "1", "--report-json", "r.json", "--plot", "x/y.png"])
    assert plot_path(explicit) == Path("x/y.png")


@pytest.mark.parametrize(
    "bad",
    [
        ["--senders", "0"],
        ["--batch-size", "0"],
        ["--vehicles", "-1"],
        ["--receiver-workers", "0"],
        ["--consumers", "0"],
    ],
)
def test_options_must_be_positive(bad: list[str]) -> None:
    """A count of zero processes or readings is a usage error, not an empty run."""
    with pytest.raises(SystemExit):
        parse_args(["--messages", "10", "--rate", "5", *bad])
