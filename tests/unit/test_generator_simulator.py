"""The simulator's command line: offline output that is reproducible, live runs that count honestly."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from src.common.schema import Reading, format_timestamp
from src.generator import simulator
from src.generator.sender import RetryPolicy
from src.generator.simulator import SimulatorOptions, main, parse_args, run_live
from tests.fakes import API_KEY, FakeReceiver

START = "2025-10-19T17:00:00Z"
FAST = RetryPolicy(base_delay_s=0.001, max_delay_s=0.01, max_attempts=5)


def offline(tmp_path: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    args = ["--vehicles", "4", "--duration", "2", "--seed", "7", "--output", str(out), "--start", START, *extra]
    assert main(args) == 0
    return out


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# --- offline ---------------------------------------------------------------------------------


def test_offline_output_is_byte_identical_for_the_same_seed_and_start(tmp_path: Path) -> None:
    """Reproducible data sets: the same options must give the same bytes."""
    assert offline(tmp_path, "a.jsonl").read_bytes() == offline(tmp_path, "b.jsonl").read_bytes()


def test_offline_output_differs_between_seeds(tmp_path: Path) -> None:
    """--seed selects a different fleet."""
    a = offline(tmp_path, "a.jsonl")
    b = offline(tmp_path, "b.jsonl", "--seed", "8")
    assert a.read_bytes() != b.read_bytes()


def test_offline_writes_vehicles_times_ticks_lines_stepping_by_rate(tmp_path: Path, capsys) -> None:
    """N vehicles x duration/rate readings, timestamps start + k * rate, every one valid."""
    out = offline(tmp_path, "a.jsonl", "--rate-ms", "250", "--report-json", str(tmp_path / "r.json"))
    rows = lines(out)
    assert len(rows) == 4 * 8
    start = datetime(2025, 10, 19, 17, tzinfo=UTC)
    for index, row in enumerate(rows):
        assert row["vehicle_id"] == f"veh-{index % 4 + 1:05d}"
        assert row["timestamp"] == format_timestamp(start + timedelta(milliseconds=250 * (index // 4)))
        Reading.model_validate_json(orjson.dumps(row))
    assert "wrote 32 readings" in capsys.readouterr().out
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert report["mode"] == "offline" and report["sent"] == 32


def test_offline_start_accepts_offsets_and_defaults_to_now(tmp_path: Path) -> None:
    """--start takes any zone (stored as UTC); without it the run starts now."""
    out = offline(tmp_path, "a.jsonl", "--start", "2025-10-19T19:00:00+02:00")
    assert lines(out)[0]["timestamp"] == "2025-10-19T17:00:00Z"
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert main(["--vehicles", "1", "--duration", "0.2", "--output", str(tmp_path / "now.jsonl")]) == 0
    first = datetime.fromisoformat(str(lines(tmp_path / "now.jsonl")[0]["timestamp"]))
    assert before <= first <= datetime.now(UTC)


@pytest.mark.parametrize(
    "args",
    [
        ["--vehicles", "0", "--duration", "1"],
        ["--vehicles", "1", "--duration", "-1"],
        ["--vehicles", "1", "--duration", "1", "--start", "2025-10-19T17:00:00"],
        ["--vehicles", "1", "--duration", "1", "--start", "yesterday"],
    ],
)
def test_bad_options_exit_2(args: list[str]) -> None:
    """Mistyped options fail at once with usage, before anything is sent or written."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(args)
    assert exit_info.value.code == 2


def test_tick_count_absorbs_float_noise() -> None:
    """0.6 s at 200 ms is three ticks, not two (0.6 * 1000 / 200 is not exactly 3 in floats)."""
    assert SimulatorOptions(vehicles=1, duration_s=0.6, rate_ms=200).ticks == 3


# --- live ------------------------------------------------------------------------------------


def live_args(url: str, tmp_path: Path, vehicles: int = 2, duration: str = "0.6") -> list[str]:
    return [
        *("--vehicles", str(vehicles), "--duration", duration, "--rate-ms", "200", "--url", url),
        *("--accepted-log", str(tmp_path / "accepted.jsonl"), "--report-json", str(tmp_path / "report.json")),
    ]


def test_live_all_accepted_exits_0_and_logs_every_accepted_key(
    receiver: FakeReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Every accepted reading's natural key is in the accepted log (503s retried), so a harness can find it on disk."""
    monkeypatch.setenv("API_KEY", f"{API_KEY},older-key")
    assert main(live_args(receiver.url, tmp_path, vehicles=2)) == 0
    logged = lines(tmp_path / "accepted.jsonl")
    assert len(logged) == 6
    keys = {(r["vehicle_id"], r["can_id"], r["timestamp"]) for r in receiver.accepted}
    assert {(r["vehicle_id"], r["can_id"], r["timestamp"]) for r in logged} == keys
    stamps = sorted({datetime.fromisoformat(str(r["timestamp"])) for r in receiver.accepted})
    assert [b - a for a, b in itertools.pairwise(stamps)] == [timedelta(milliseconds=200)] * 2
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert report | {"elapsed_s": 0, "rate_per_s": 0} == {
        "mode": "live",
        "ticks": 3,
        "sent": 6,
        "accepted": 6,
        "rejected": 0,
        "gave_up": 0,
        "retries": 3,  # veh-00002's first attempt of each tick gets a 503
        "elapsed_s": 0,
        "rate_per_s": 0,
    }
    assert "sent=6 accepted=6 rejected=0 gave_up=0" in capsys.readouterr().out


def test_live_retries_503_and_exits_1_on_rejections(
    receiver: FakeReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """veh-00002 is retried after a 503 and accepted; veh-00003 gets 422: exit 1, not in the log."""
    monkeypatch.setenv("API_KEY", API_KEY)
    monkeypatch.setenv("RECEIVER_URL", receiver.url)
    args = live_args(receiver.url, tmp_path, vehicles=3)
    args.remove("--url")
    args.remove(receiver.url)  # from the settings instead
    assert main(args) == 1
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert (report["sent"], report["accepted"], report["rejected"], report["gave_up"]) == (9, 6, 3, 0)
    assert report["retries"] == 3
    logged = lines(tmp_path / "accepted.jsonl")
    assert sorted(r["vehicle_id"] for r in logged) == ["veh-00001"] * 3 + ["veh-00002"] * 3


def test_live_without_api_key_exits_2_with_a_clear_message(tmp_path: Path, capsys) -> None:
    """Live mode cannot work without a key: say so instead of collecting 401s."""
    assert main(["--vehicles", "1", "--duration", "1", "--url", "http://127.0.0.1:1"]) == 2
    assert "API_KEY" in capsys.readouterr().err


async def test_live_gives_up_when_the_receiver_is_unreachable_and_reports_progress(tmp_path: Path, capsys) -> None:
    """Sends that can never succeed are counted as given up (exit 1), and progress lines appear."""
    options = SimulatorOptions(vehicles=2, duration_s=0.4, progress_interval_s=0.01)
    report = await run_live(options, "http://127.0.0.1:1", API_KEY, FAST)
    assert report.gave_up == 4 and report.accepted == 0 and report.exit_code == 1
    assert "sent=" in capsys.readouterr().err


async def test_sigterm_stops_new_ticks_and_finishes_in_flight(receiver: FakeReceiver, tmp_path: Path, capsys) -> None:
    """A signal ends the run early but cleanly: no sends are lost, the counts add up."""
    options = SimulatorOptions(vehicles=2, duration_s=60, accepted_log=tmp_path / "acc.jsonl")
    asyncio.get_running_loop().call_later(0.5, os.kill, os.getpid(), signal.SIGTERM)
    report = await run_live(options, receiver.url, API_KEY, FAST)
    assert 0 < report.ticks < 300
    assert report.sent == report.accepted == 2 * report.ticks
    assert len(lines(tmp_path / "acc.jsonl")) == report.accepted
    assert "stopping" in capsys.readouterr().err


async def test_sends_still_pending_after_the_drain_bound_count_as_given_up(receiver: FakeReceiver) -> None:
    """The drain is bounded: a hung receiver cannot keep the simulator from exiting."""
    options = SimulatorOptions(vehicles=1, duration_s=0.2, drain_timeout_s=0.05)

    original = simulator.vehicle_ids
    simulator.vehicle_ids = lambda n: ["slow"] * n  # type: ignore[assignment]
    try:
        report = await run_live(options, receiver.url, API_KEY, FAST)
    finally:
        simulator.vehicle_ids = original
    assert report.gave_up == 1 and report.exit_code == 1
