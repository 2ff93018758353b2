"""The simulator's command line: offline output that is reproducible, live runs that count honestly."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import itertools
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import orjson
import pytest

from src.common.schema import Reading, format_timestamp, parse_timestamp
from src.generator import simulator
from src.generator.battery_model import BatteryFleet, Fleet, PackSnapshot
from src.generator.health import FaultKind, HealthOptions
from src.generator.readings import fixed_timestamp
from src.generator.sender import RetryPolicy
from src.generator.simulator import (
    PARALLEL_MIN_VEHICLES,
    SimulatorOptions,
    main,
    parse_args,
    run_live,
    stepped_in_worker,
    stepped_inline,
    write_offline,
)
from tests.fakes import API_KEY, FakeReceiver
from tests.paths import REPO_ROOT

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


OUTPUT_BEFORE_ISSUE_14 = "4b9630f73870003270c1d87b5967ec038eb053b073dc7280cbe213639b44bf44"
"""sha256 of ``offline(tmp_path, ...)`` with --start 2026-01-15T08:00:00Z, written by the simulator before ageing,
faults and the fixed timestamp form existed (commit 7d99fcd), its timestamps as ``format_timestamp`` wrote them."""


def test_offline_output_without_the_new_flags_is_the_readings_written_before_them(tmp_path: Path) -> None:
    """Ageing and faults are off by default: the same readings, byte for byte, as before they existed; only the
    timestamp text changed (``...08:00:00Z`` is now ``...08:00:00.000000Z``), which this undoes before hashing."""
    out = offline(tmp_path, "a.jsonl", "--start", "2026-01-15T08:00:00Z")
    as_before = b"".join(
        orjson.dumps(row | {"timestamp": format_timestamp(parse_timestamp(str(row["timestamp"])))}) + b"\n"
        for row in lines(out)
    )
    assert hashlib.sha256(as_before).hexdigest() == OUTPUT_BEFORE_ISSUE_14
    truth = offline(tmp_path, "b.jsonl", "--start", "2026-01-15T08:00:00Z", "--truth-json", str(tmp_path / "t.json"))
    assert truth.read_bytes() == out.read_bytes()  # writing the truth changes nothing either


def test_offline_timestamps_have_one_fixed_form_so_lines_sort_by_time_as_text(tmp_path: Path) -> None:
    """Every offline timestamp has six fractional digits and Z: a whole second never reads shorter than the rest."""
    out = offline(tmp_path, "a.jsonl", "--rate-ms", "250")
    stamps = [str(row["timestamp"]) for row in lines(out)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp) for stamp in stamps)
    assert "2025-10-19T17:00:01.000000Z" in stamps and "2025-10-19T17:00:01.250000Z" in stamps
    assert sorted(stamps) == sorted(stamps, key=parse_timestamp)
    assert fixed_timestamp(datetime(2026, 1, 15, 9, tzinfo=UTC)) == "2026-01-15T09:00:00.000000Z"
    assert fixed_timestamp(datetime(2026, 1, 15, 10, 0, 1, 200000, tzinfo=UTC)) == "2026-01-15T10:00:01.200000Z"


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
        assert row["timestamp"] == fixed_timestamp(start + timedelta(milliseconds=250 * (index // 4)))
        Reading.model_validate_json(orjson.dumps(row))
    assert "wrote 32 readings" in capsys.readouterr().out
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert report["mode"] == "offline" and report["sent"] == 32


def test_offline_start_accepts_offsets_and_defaults_to_now(tmp_path: Path) -> None:
    """--start takes any zone (stored as UTC); without it the run starts now."""
    out = offline(tmp_path, "a.jsonl", "--start", "2025-10-19T19:00:00+02:00")
    assert lines(out)[0]["timestamp"] == "2025-10-19T17:00:00.000000Z"
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vehicles", "3", "--faults", "4"], "--faults 4 needs as many vehicles"),
        (["--vehicles", "3", "--faults", "-1"], "cannot be negative"),
        (["--vehicles", "3", "--faults", "1", "--faults-at-start", "2"], "more than --faults 1"),
        (["--vehicles", "3", "--faults", "1", "--fault-kinds", "weak_cell,leaky"], "choose from weak_cell, self_dis"),
    ],
)
def test_impossible_fault_options_exit_2_naming_the_problem(args: list[str], message: str, capsys) -> None:
    """More faults than vehicles, or a kind the model does not know, is a usage error, not a silently different run."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*args, "--duration", "1"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_health_options_default_off_and_parse_into_the_options() -> None:
    """Without the flags nothing is drawn; with them the options say exactly what to draw and where the truth goes."""
    plain = parse_args(["--vehicles", "3", "--duration", "1"])
    assert plain.health == HealthOptions() and not plain.health.active and plain.health_plan() is None
    assert plain.truth_json is None
    args = ["--vehicles", "5", "--duration", "1", "--aging", "--faults", "3", "--faults-at-start", "1"]
    options = parse_args([*args, "--fault-kinds", "sensor_bias,cooling", "--truth-json", "t.json"])
    assert options.health == HealthOptions(
        aging=True, faults=3, faults_at_start=1, fault_kinds=(FaultKind.SENSOR_BIAS, FaultKind.COOLING)
    )
    assert options.truth_json == Path("t.json")
    plan = options.health_plan()
    assert plan is not None and len(plan.faults) == 3 and plan.faults[0].start_s == 0.0


def test_tick_count_absorbs_float_noise() -> None:
    """0.6 s at 200 ms is three ticks, not two (0.6 * 1000 / 200 is not exactly 3 in floats)."""
    assert SimulatorOptions(vehicles=1, duration_s=0.6, rate_ms=200).ticks == 3


@pytest.mark.parametrize(("text", "capacity"), [("60", 60.0), ("94", 94.0), ("120", 120.0), ("mixed", None)])
def test_capacity_accepts_the_three_variants_and_mixed(text: str, capacity: float | None) -> None:
    """--capacity picks one cell variant for the fleet, or ``mixed`` (None) for all three."""
    assert parse_args(["--vehicles", "1", "--duration", "1", "--capacity", text]).capacity_ah == capacity


def test_capacity_defaults_to_94_and_rejects_other_values_naming_the_choices(capsys) -> None:
    """A capacity the model has no cells for is a usage error (exit 2) that lists what is valid."""
    assert parse_args(["--vehicles", "1", "--duration", "1"]).capacity_ah == 94.0
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--vehicles", "1", "--duration", "1", "--capacity", "50"])
    assert exit_info.value.code == 2
    assert "--capacity: choose one of 60, 94, 120 or mixed" in capsys.readouterr().err


def test_offline_capacity_changes_the_output(tmp_path: Path) -> None:
    """--capacity reaches the model: 60 Ah packs give other readings than the default 94 Ah for the same seed."""
    default = offline(tmp_path, "a.jsonl").read_bytes()
    assert offline(tmp_path, "b.jsonl", "--capacity", "60").read_bytes() != default
    assert offline(tmp_path, "c.jsonl", "--capacity", "94").read_bytes() == default


PROGRESS = re.compile(r"\[\s*\d+\.\d s\] (\d+) readings, (\d+)% of the simulated time")


def test_offline_progress_goes_to_stderr_and_counts_the_readings(capsys) -> None:
    """Long offline runs say how far they are, on stderr so the output and the summary stay clean."""
    options = SimulatorOptions(vehicles=4, duration_s=1.0, start=datetime(2025, 10, 19, 17, tzinfo=UTC))
    out = io.BytesIO()
    assert write_offline(options, out, progress_s=0.0) == 20  # an interval of 0: a line after every tick
    captured = capsys.readouterr()
    assert captured.out == ""
    progress = [PROGRESS.fullmatch(line) for line in captured.err.splitlines()]
    assert all(progress), captured.err
    assert [int(m[1]) for m in progress if m] == [4, 8, 12, 16, 20]
    percents = [int(m[2]) for m in progress if m]
    assert percents == sorted(percents) and percents[0] >= 0 and percents[-1] <= 100
    assert len(out.getvalue().splitlines()) == 20


def test_offline_without_a_progress_interval_prints_nothing(capsys) -> None:
    """write_offline is quiet by default (run_offline is what asks for progress)."""
    write_offline(SimulatorOptions(vehicles=2, duration_s=0.4), io.BytesIO())
    assert capsys.readouterr().err == ""


def test_run_offline_reports_progress_at_the_options_interval(tmp_path: Path, capsys) -> None:
    """run_offline hands the options' progress interval to write_offline."""
    options = SimulatorOptions(vehicles=2, duration_s=0.4, output=tmp_path / "a.jsonl", progress_interval_s=0.0)
    simulator.run_offline(options)
    assert len(PROGRESS.findall(capsys.readouterr().err)) == 2


# --- offline: the worker process ------------------------------------------------------------------

WORKER_OPTIONS = SimulatorOptions(
    vehicles=PARALLEL_MIN_VEHICLES, duration_s=1.0, seed=3, start=datetime(2025, 10, 19, 17, tzinfo=UTC)
)


def fleet_that_fails() -> BatteryFleet:
    """A picklable fleet factory that fails in the worker, as a broken model would."""
    raise ValueError("no fleet today")


class StuckFleet(Fleet):
    """A fleet that hangs after two steps, in a worker that ignores SIGTERM: stuck in a handler or a lock."""

    def step(self, dt_s: float) -> PackSnapshot:
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps > 2:
            time.sleep(60)
        return super().step(dt_s)


def stuck_fleet_deaf_to_sigterm() -> BatteryFleet:
    """A picklable factory: it runs in the worker, so that is where SIGTERM is ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return StuckFleet(10, 0, 94.0)


def test_a_worker_that_ignores_sigterm_is_killed_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Abandoning the snapshots never hangs: a worker still alive after the grace period is killed."""
    monkeypatch.setattr(simulator, "WORKER_STOP_TIMEOUT_S", 0.5)
    snapshots = stepped_in_worker(stuck_fleet_deaf_to_sigterm, 50, 0.2)
    next(snapshots), next(snapshots)
    [worker] = multiprocessing.active_children()
    snapshots.close()
    assert not multiprocessing.active_children()
    assert worker.exitcode == -signal.SIGKILL


def test_worker_process_output_is_byte_identical_to_stepping_inline() -> None:
    """From PARALLEL_MIN_VEHICLES on the fleet is stepped in a worker process: that must not change one byte."""
    in_worker, inline = io.BytesIO(), io.BytesIO()
    assert write_offline(WORKER_OPTIONS, in_worker) == 100 * 5  # no fleet given, 100 vehicles: the worker path
    assert write_offline(WORKER_OPTIONS, inline, fleet=Fleet(100, 3, 94.0)) == 100 * 5
    assert not multiprocessing.active_children()
    assert in_worker.getvalue() == inline.getvalue()
    assert len(in_worker.getvalue().splitlines()) == 500


def test_a_worker_that_dies_early_is_an_error_naming_its_exit_code(capfd: pytest.CaptureFixture[str]) -> None:
    """A failed worker must not look like a short, successful run: the reader raises instead of stopping."""
    snapshots = stepped_in_worker(fleet_that_fails, 3, 0.2)
    with pytest.raises(RuntimeError, match=r"fleet worker process ended early \(exit code 1\)"):
        next(snapshots)
    assert not multiprocessing.active_children()
    assert "ValueError: no fleet today" in capfd.readouterr().err  # the child got as far as the factory


def test_abandoning_the_snapshots_early_stops_the_worker() -> None:
    """Closing the generator before the last tick terminates and joins the worker: no process is left behind."""
    snapshots = stepped_in_worker(partial(Fleet, 200, 0, 94.0), 50, 0.2)  # far more than the pipe buffers
    next(snapshots), next(snapshots)
    [worker] = multiprocessing.active_children()  # blocked on a full pipe
    snapshots.close()
    assert not multiprocessing.active_children()
    assert worker.exitcode in (-signal.SIGTERM, -signal.SIGKILL)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_ends_the_run_with_an_error_instead_of_hanging() -> None:
    """A failed write must end the process (status 1) and its worker, not leave it waiting on a full pipe."""
    command = [sys.executable, "-m", "src.generator.simulator", "--vehicles", "200", "--duration", "10"]
    command += ["--start", START, "--output", "/dev/full"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "No space left on device" in done.stderr


def test_step_and_send_sends_every_snapshot_then_closes_the_pipe() -> None:
    """The worker's job, run here: build the fleet, send each tick's snapshot in order, then its faults'
    expressions, close its end."""
    receiving, sending = multiprocessing.Pipe(duplex=False)
    simulator._step_and_send(partial(Fleet, 1, 0, 94.0), 3, 0.2, sending)  # small pickles: the pipe buffers them
    assert sending.closed
    expected = list(stepped_inline(Fleet(1, 0, 94.0), 3, 0.2))
    for want in expected:
        got = receiving.recv()
        for field in dataclasses.fields(want):
            np.testing.assert_array_equal(getattr(got, field.name), getattr(want, field.name))
    assert receiving.recv() == {}  # last, the fleet's cooling-fault expressions (none here) for the truth
    with pytest.raises(EOFError):
        receiving.recv()
    receiving.close()


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
