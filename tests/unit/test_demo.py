"""`make demo`'s logic (src/loadtest/demo.py) without a stack: the health lines and every failure exit.

The whole demo, on a real embedded stack, is tests/integration/test_end_to_end.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from src.common.schema import NaturalKey
from src.loadtest import demo

FAULT = demo.Fault("veh-00002", "sensor_bias", "2026-01-15T08:00:00.000000Z", {"bias_v": -7.3})
ALERT = {
    "vehicle_id": "veh-00002",
    "kind": "sensor_inconsistency",
    "severity": "critical",
    "first_seen": "2026-01-15T08:00:00.000000Z",
    "evidence": {"readings_outside": 300, "fraction_outside": 1.0},
}
HEALTH = (["/d/aggregated/fleet-health-2026-01-15.json", "s3://b/aggregated/fleet-health-2026-01-15.json", "day"], {})


def test_read_faults_gives_each_fault_of_the_truth_and_none_without_a_file(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    assert demo.read_faults(truth) == []
    fault = {"kind": "sensor_bias", "start": FAULT.start, "bias_v": -7.3}
    truth.write_bytes(orjson.dumps({"vehicles": {"veh-00001": {"faults": []}, "veh-00002": {"faults": [fault]}}}))
    assert demo.read_faults(truth) == [FAULT]


def test_the_faulty_vehicles_alert_is_printed_with_its_evidence(capsys: pytest.CaptureFixture[str]) -> None:
    other = {**ALERT, "vehicle_id": "veh-00007", "kind": "over_temperature", "severity": "warning"}
    assert demo.print_health([FAULT], [(HEALTH[0], {"alerts": [ALERT, other]})]) == []
    out = capsys.readouterr().out
    assert "  fault      veh-00002 sensor_bias (bias_v -7.3) from 2026-01-15T08:00:00.000000Z: a biased" in out
    assert "  alert      veh-00002 sensor_inconsistency  severity critical  first seen 2026-01-15T08:00:00" in out
    assert "             evidence: readings_outside 300, fraction_outside 1.0\n" in out
    assert "  other alerts  veh-00007 over_temperature (warning)\n" in out
    assert "  fleet health  /d/aggregated/fleet-health-2026-01-15.json\n" in out
    assert "                s3://b/aggregated/fleet-health-2026-01-15.json\n" in out


def test_a_fault_without_its_alert_is_said_and_returned(capsys: pytest.CaptureFixture[str]) -> None:
    weak = demo.Fault("veh-00002", "weak_cell", FAULT.start, {"cell": 3})
    assert demo.print_health([weak], [(HEALTH[0], {"alerts": [ALERT]})]) == ["veh-00002"]
    assert "  alert      veh-00002: no weak_cell alert" in capsys.readouterr().out


KEY = NaturalKey("veh-00001", 1, "2026-01-15T08:00:00.000000Z")


class FakeStack:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.aws_endpoint = self.receiver_url = "http://127.0.0.1:1"
        self.dashboard_url = ""

    def start_dashboard(self, port: int) -> None:
        self.dashboard_url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> FakeStack:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FakeIndex:
    def __init__(self, root: Path) -> None:
        self.durable_ms = {KEY: 2.0}

    def refresh(self) -> None:
        return None

    def files_holding(self, keys: set[NaturalKey]) -> set[Path]:
        return {Path("batch-1.jsonl")} if keys else set()


@contextmanager
def patched(
    monkeypatch: pytest.MonkeyPatch,
    accepted: dict[NaturalKey, float],
    missing: set[NaturalKey],
    not_uploaded: set[Path],
    faults: list[demo.Fault],
    alerts: list[dict[str, Any]],
) -> Iterator[None]:
    def run_simulator(stack: Any, args: argparse.Namespace, workdir: Path) -> tuple[dict[str, int], Path, list[Any]]:
        return {"sent": len(accepted)}, workdir / "accepted.jsonl", faults

    monkeypatch.setattr(demo, "EmbeddedStack", FakeStack)
    monkeypatch.setattr(demo, "DiskIndex", FakeIndex)
    monkeypatch.setattr(demo, "exit_on_sigterm", lambda: None)
    monkeypatch.setattr(demo, "run_simulator", run_simulator)
    monkeypatch.setattr(demo, "read_accepted", lambda path: accepted)
    monkeypatch.setattr(demo, "wait_persisted", lambda index, keys, timeout: missing)
    monkeypatch.setattr(demo, "wait_uploaded", lambda stack, files, timeout: not_uploaded)
    monkeypatch.setattr(demo, "aggregate_hours", lambda stack, index, keys, data_dir: [])
    monkeypatch.setattr(demo, "daily_health", lambda stack, hours: [(HEALTH[0], {"alerts": alerts})])
    yield


@pytest.mark.parametrize(
    ("accepted", "missing", "not_uploaded", "faults", "alerts", "message"),
    [
        ({KEY: 1.0}, {KEY}, set(), [FAULT], [ALERT], "1 accepted readings are not on disk"),
        ({}, set(), set(), [FAULT], [ALERT], "the receiver accepted no reading"),
        ({KEY: 1.0}, set(), {Path("batch-1.jsonl")}, [FAULT], [ALERT], "1 batch files are not in S3"),
        ({KEY: 1.0}, set(), set(), [FAULT], [], "no alert for the faulty vehicle ['veh-00002']"),
        ({KEY: 1.0}, set(), set(), [], [], "no alert for the faulty vehicle of the truth"),
        ({KEY: 1.0}, set(), set(), [FAULT], [ALERT], ""),
    ],
)
def test_main_fails_on_what_it_promises_and_passes_otherwise(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    accepted: dict[NaturalKey, float],
    missing: set[NaturalKey],
    not_uploaded: set[Path],
    faults: list[demo.Fault],
    alerts: list[dict[str, Any]],
    message: str,
) -> None:
    with patched(monkeypatch, accepted, missing, not_uploaded, faults, alerts):
        status = demo.main(["--data-dir", str(tmp_path), "--dashboard-port", "8051", "--no-wait"])
    out, err = capsys.readouterr()
    assert "  dashboard  http://127.0.0.1:8051/pipeline\n" in out  # in the summary, whatever the outcome
    assert "             http://127.0.0.1:8051/fleet\n" in out
    for fault in faults:  # each faulty vehicle's page, where its alert shows
        assert f"             http://127.0.0.1:8051/vehicles/{fault.vehicle_id}?window=1h\n" in out
    assert status == (1 if message else 0)
    assert (err.startswith("FAILED: ") and message in err) if message else err == ""


def test_wait_uploaded_polls_until_s3_holds_every_batch_file(monkeypatch: pytest.MonkeyPatch) -> None:
    listings = iter(
        [[], [{"Key": "raw/year=2026/month=01/day=15/hour=08/batch-1796431159302-e9981ac5_000005.jsonl.gz"}]]
    )

    class Client:
        def get_paginator(self, name: str) -> Client:
            return self

        def paginate(self, **kwargs: str) -> list[dict[str, Any]]:
            return [{"Contents": next(listings)}]

    monkeypatch.setattr(demo, "sync_client", lambda service, settings: Client())
    monkeypatch.setattr(demo.time, "sleep", lambda s: None)
    stack = argparse.Namespace(config=argparse.Namespace(s3_bucket="b"), settings=lambda: None)
    assert demo.wait_uploaded(stack, {Path("batch-1796431159302-e9981ac5_000005.jsonl")}, 5.0) == set()  # type: ignore[arg-type]


def test_hold_returns_at_once_without_wait_and_on_enter_or_a_signal_with_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A person at a terminal keeps the dashboard until Enter; a pipe (CI) until SIGINT/SIGTERM; ``--no-wait`` never."""
    waited: list[str] = []
    monkeypatch.setattr("builtins.input", lambda: waited.append("enter") or "")

    def pause() -> None:
        waited.append("signal")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo.signal, "pause", pause)
    demo.hold(False)
    assert waited == []
    monkeypatch.setattr(demo.sys.stdin, "isatty", lambda: True, raising=False)
    demo.hold(True)
    monkeypatch.setattr(demo.sys.stdin, "isatty", lambda: False, raising=False)
    demo.hold(True)
    assert waited == ["enter", "signal"]
    out = capsys.readouterr().out
    assert "press Enter (or Ctrl-C) to stop them" in out and "until SIGINT or SIGTERM" in out
