"""`make dashboard`'s runner (src/loadtest/live.py) without a stack: when jobs are due, draining, supervising.

The whole of it, on a real embedded stack, is tests/integration/test_live_dashboard.py.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from src.loadtest import live

HOUR = timedelta(hours=1)
T10 = datetime(2026, 1, 15, 10, tzinfo=UTC)


def test_an_hours_jobs_are_due_once_the_delay_past_its_end_has_passed() -> None:
    jobs = live.HourlyJobs(done_through=T10 - HOUR, delay_s=120)
    assert jobs.due(T10 + timedelta(minutes=30)) == []  # 10:00 has not ended
    assert jobs.due(T10 + HOUR + timedelta(seconds=119)) == []  # ended, but 11:01:59 is before 11:02
    assert jobs.due(T10 + HOUR + timedelta(seconds=120)) == [T10]
    assert jobs.due(T10 + HOUR + timedelta(minutes=30)) == []  # once
    assert jobs.due(T10 + 3 * HOUR + timedelta(minutes=5)) == [T10 + HOUR, T10 + 2 * HOUR]  # after a suspend


def test_arguments_default_to_the_issues_fleet_and_ports() -> None:
    args = live.parse_args([])
    assert (args.vehicles, args.moto_port, args.receiver_port, args.dashboard_port) == (10, 4566, 8000, 8050)
    assert (args.faults, args.fault_kinds, args.history_hours) == (2, "sensor_bias,weak_cell", 3)
    assert live.parse_args(["--vehicles", "1"]).faults == 1  # no more faults than vehicles
    with pytest.raises(SystemExit):
        live.parse_args(["--history-hours", "-1"])


class FakeSQS:
    def __init__(self, depths: Iterator[tuple[int, int]]) -> None:
        self.depths = depths

    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        visible, in_flight = next(self.depths)
        return {
            "Attributes": {
                "ApproximateNumberOfMessages": str(visible),
                "ApproximateNumberOfMessagesNotVisible": str(in_flight),
            }
        }


def fake_stack() -> Any:
    return argparse.Namespace(queues=argparse.Namespace(url="http://q"), settings=lambda: None)


def test_draining_waits_until_nothing_waits_or_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = FakeSQS(iter([(3, 1), (0, 2), (0, 0)]))
    monkeypatch.setattr(live, "sync_client", lambda service, settings: sqs)
    monkeypatch.setattr(live.time, "sleep", lambda s: None)
    assert live.drain(fake_stack()) == 0
    assert next(sqs.depths, None) is None


def test_draining_gives_up_after_its_timeout_with_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = FakeSQS(iter([(5, 0)] * 1000))
    monkeypatch.setattr(live, "sync_client", lambda service, settings: sqs)
    monkeypatch.setattr(live.time, "sleep", lambda s: None)
    assert live.drain(fake_stack(), timeout_s=0) == 5


class FakeProcess:
    def __init__(self, ends_after: int | None) -> None:
        self.polls = 0
        self.ends_after = ends_after

    def poll(self) -> int | None:
        self.polls += 1
        return 1 if self.ends_after is not None and self.polls > self.ends_after else None


@pytest.mark.parametrize(("receiver_ends", "simulator_ends", "named"), [(2, None, "receiver"), (None, 0, "simulator")])
def test_supervising_runs_due_jobs_and_returns_the_first_process_that_ended(
    monkeypatch: pytest.MonkeyPatch, receiver_ends: int | None, simulator_ends: int | None, named: str
) -> None:
    ran: list[list[datetime]] = []
    monkeypatch.setattr(live, "run_hour_jobs", lambda stack, hours: ran.append(hours))
    monkeypatch.setattr(live.time, "sleep", lambda s: None)
    services = [argparse.Namespace(name="receiver", process=FakeProcess(receiver_ends))]
    clock = iter([T10, T10 + HOUR + timedelta(minutes=3), T10 + HOUR + timedelta(minutes=4)])
    jobs = live.HourlyJobs(done_through=T10 - HOUR, delay_s=120)
    ended = live.supervise(
        argparse.Namespace(services=services), FakeProcess(simulator_ends), jobs, lambda: next(clock)
    )  # type: ignore[arg-type]
    assert ended == named
    assert ran == ([[T10]] if named == "receiver" else [])


def test_a_busy_port_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "exit_on_sigterm", lambda: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert live.main(["--dashboard-port", port, "--data-dir", str(tmp_path)]) == 2
    assert f"port(s) {port} in use" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
