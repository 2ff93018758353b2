"""--truth-json: the contract's keys and types, offline and live, and values that the readings bear out."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from src.common.schema import parse_timestamp
from src.generator.battery_model import CAPACITY_VARIANTS_AH, Activity, Fleet
from src.generator.health import Fault, FaultKind, HealthOptions, HealthPlan
from src.generator.readings import vehicle_ids
from src.generator.simulator import PARALLEL_MIN_VEHICLES, SimulatorOptions, main, write_offline
from src.generator.truth import truth_document, with_expressions
from tests.fakes import API_KEY, FakeReceiver

START = "2026-01-15T08:00:00Z"
FIXED_FORM = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"


def offline_run(tmp_path: Path, *extra: str, vehicles: int = 6, duration: str = "60") -> tuple[Path, dict[str, Any]]:
    out, truth = tmp_path / "out.jsonl", tmp_path / "truth.json"
    args = ["--vehicles", str(vehicles), "--duration", duration, "--seed", "14", "--start", START]
    assert main([*args, "--output", str(out), "--truth-json", str(truth), *extra]) == 0
    return out, orjson.loads(truth.read_bytes())


def check_contract(document: dict[str, Any], ids: list[str]) -> None:
    """The shape /work/shared/contract.md gives, key by key and type by type."""
    assert list(document) == ["vehicles"]
    assert list(document["vehicles"]) == ids
    for entry in document["vehicles"].values():
        assert {"nominal_capacity_ah", "capacity_ah", "resistance_mohm_25c", "faults"} <= set(entry)
        for key in ("nominal_capacity_ah", "capacity_ah", "resistance_mohm_25c"):
            assert type(entry[key]) is float and entry[key] > 0
        assert isinstance(entry["faults"], list)
        for fault in entry["faults"]:
            assert fault["kind"] in {kind.value for kind in FaultKind}
            assert isinstance(fault["start"], str)
            assert parse_timestamp(fault["start"]).tzinfo is not None
            assert re.match(FIXED_FORM, fault["start"])


def test_offline_truth_has_the_contracts_keys_and_every_fault_starts_at_a_reading(tmp_path: Path) -> None:
    """--aging --faults 4: every vehicle aged, four faulty with all four kinds, each start a reading's timestamp."""
    out, document = offline_run(tmp_path, "--aging", "--faults", "4")
    ids = vehicle_ids(6)
    check_contract(document, ids)
    vehicles = document["vehicles"]
    faults = [(vid, f) for vid, entry in vehicles.items() for f in entry["faults"]]
    assert len(faults) == 4 and len({vid for vid, _ in faults}) == 4
    assert {f["kind"] for _, f in faults} == set(FaultKind)
    stamps = {orjson.loads(line)["timestamp"] for line in out.read_bytes().splitlines()}
    run_start = parse_timestamp(START)
    for _, fault in faults:
        assert fault["start"] in stamps
        assert timedelta(seconds=6) - timedelta(milliseconds=200) <= parse_timestamp(fault["start"]) - run_start
        assert parse_timestamp(fault["start"]) - run_start <= timedelta(seconds=30)
    extras = {f["kind"]: f for _, f in faults}
    assert 0 <= extras["weak_cell"]["cell"] < 96 and 2.5 <= extras["weak_cell"]["resistance_factor"] <= 4.0
    assert 0 <= extras["cooling"]["module"] < 8 and 4.0 <= abs(extras["sensor_bias"]["bias_v"]) <= 8.0
    assert 10.0 <= extras["self_discharge"]["leak_pct_per_day"] <= 20.0 and extras["self_discharge"]["leak_a"] > 0.3
    for entry in vehicles.values():
        assert entry["nominal_capacity_ah"] == 94.0
        assert 0.74 * 94.0 < entry["capacity_ah"] < 94.0 * 1.01
        assert entry["soh_pct"] == pytest.approx(100.0 * entry["capacity_ah"] / 94.0, abs=1e-5)
    assert min(entry["capacity_ah"] for entry in vehicles.values()) < 0.97 * 94.0  # ageing did something
    second = offline_run(tmp_path / "again", "--aging", "--faults", "4")[1]
    assert second == document  # the same seed, the same truth


def test_truth_without_ageing_or_faults_describes_the_fresh_packs(tmp_path: Path) -> None:
    """--truth-json alone: fresh packs (their manufacturing spread only), no faults; any capacity variant."""
    _, document = offline_run(tmp_path, "--capacity", "mixed", vehicles=12, duration="1")
    check_contract(document, vehicle_ids(12))
    for entry in document["vehicles"].values():
        nominal = entry["nominal_capacity_ah"]
        assert nominal in CAPACITY_VARIANTS_AH and entry["faults"] == []
        assert entry["capacity_ah"] == pytest.approx(nominal, rel=0.01)
        # 96 cells x 0.75 mOhm (94 Ah; inversely with capacity) x 1.0015 at 50 % SOC, within the cells' spread
        assert entry["resistance_mohm_25c"] == pytest.approx(96 * 0.75 * 94.0 / nominal * 1.0015, rel=0.03)
        assert entry["resistance_growth"] == 1.0


def test_truth_capacity_is_borne_out_by_the_readings(tmp_path: Path) -> None:
    """What an analytic can do with the output: charge counted from battery_current over the change in
    battery_soc gives each aged pack's capacity_ah, to the readings' 0.1 % / 0.1 A resolution."""
    out, document = offline_run(tmp_path, "--aging", "--rate-ms", "1000", vehicles=5, duration="3600")
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    soc = np.array([r["payload"]["battery_soc"] for r in rows]).reshape(-1, 5)
    current = np.array([r["payload"]["battery_current"] for r in rows]).reshape(-1, 5)
    checked = 0
    for v, vid in enumerate(vehicle_ids(5)):
        charge_ah = np.cumsum(current[1:, v]) * 1.0 / 3600.0  # each reading's current held over its 1 s step
        moved = soc[1:, v] - soc[0, v]
        if np.ptp(moved) < 8.0:  # too little charge moved to measure to a percent
            continue
        slope = np.polyfit(charge_ah, moved, 1)[0]  # SOC points per Ah
        assert 100.0 / slope == pytest.approx(document["vehicles"][vid]["capacity_ah"], rel=0.01)
        checked += 1
    assert checked >= 3


def test_truth_from_the_worker_path_equals_the_inline_one_and_so_does_the_output(tmp_path: Path) -> None:
    """From PARALLEL_MIN_VEHICLES on, a worker steps the fleet: the plan travels with it, the truth is the same."""
    options = SimulatorOptions(
        vehicles=PARALLEL_MIN_VEHICLES,
        duration_s=0.6,
        seed=3,
        start=datetime(2026, 1, 15, 8, tzinfo=UTC),
        health=HealthOptions(aging=True, faults=8, faults_at_start=8),
        truth_json=tmp_path / "worker.json",
    )
    in_worker, inline = io.BytesIO(), io.BytesIO()
    write_offline(options, in_worker)
    inline_options = SimulatorOptions(**{**options.__dict__, "truth_json": tmp_path / "inline.json"})
    write_offline(inline_options, inline, fleet=inline_options.fleet_factory()())
    assert in_worker.getvalue() == inline.getvalue()
    assert (tmp_path / "worker.json").read_bytes() == (tmp_path / "inline.json").read_bytes()
    fresh = SimulatorOptions(**{**options.__dict__, "health": HealthOptions()})
    plain = io.BytesIO()
    write_offline(fresh, plain, fleet=fresh.fleet_factory()())
    assert plain.getvalue() != inline.getvalue()  # the faults (all started) and ageing reached the worker's fleet


def test_truth_is_taken_before_the_first_step_only() -> None:
    """A stepped fleet may carry started faults in its resistances: its truth would not be the plan's."""
    fleet = Fleet(2, 0)
    ids = vehicle_ids(2)
    truth_document(fleet, ids, datetime(2026, 1, 15, tzinfo=UTC), timedelta(milliseconds=200))
    fleet.step(0.2)
    with pytest.raises(ValueError, match="before its first step"):
        truth_document(fleet, ids, datetime(2026, 1, 15, tzinfo=UTC), timedelta(milliseconds=200))
    with pytest.raises(ValueError, match="3 vehicle ids"):
        truth_document(Fleet(2, 0), vehicle_ids(3), datetime(2026, 1, 15, tzinfo=UTC), timedelta(milliseconds=200))


def test_live_run_writes_the_truth_before_its_first_tick_with_starts_on_its_schedule(
    receiver: FakeReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live: the truth's starts are in the live schedule's time (wall start + k x period); a fault forced to the
    start is stamped with the first tick's time."""
    monkeypatch.setenv("API_KEY", API_KEY)
    truth = tmp_path / "truth.json"
    args = ["--vehicles", "5", "--duration", "1", "--rate-ms", "200", "--url", receiver.url, "--seed", "4"]
    args += ["--aging", "--faults", "4", "--faults-at-start", "1", "--truth-json", str(truth)]
    args += ["--accepted-log", str(tmp_path / "accepted.jsonl")]
    before = datetime.now(UTC) - timedelta(seconds=1)
    main(args)  # veh-00003 is refused by the fake receiver: exit 1, the truth is written all the same
    document = orjson.loads(truth.read_bytes())
    check_contract(document, vehicle_ids(5))
    stamps = sorted({parse_timestamp(str(r["timestamp"])) for r in receiver.accepted})
    assert len(stamps) == 5 and before <= stamps[0]
    starts = [parse_timestamp(f["start"]) for e in document["vehicles"].values() for f in e["faults"]]
    assert len(starts) == 4 and min(starts) == stamps[0]
    for start in starts:
        assert (start - stamps[0]) % timedelta(milliseconds=200) == timedelta(0)
        assert start <= stamps[-1]


def _cooling_fleet(ambient_c: float, activity: Activity) -> tuple[Fleet, list[str], dict[str, Any]]:
    """One vehicle with a cooling fault from the start at ``ambient_c``, held in ``activity``; its truth."""
    plan = HealthPlan(faults=(Fault(0, FaultKind.COOLING, 0.0, 0.1, module=2),))
    fleet = Fleet(1, 5, ambient_c=ambient_c, health=plan)
    ids = vehicle_ids(1)
    document = truth_document(fleet, ids, datetime(2026, 1, 15, tzinfo=UTC), timedelta(seconds=1))
    fleet.hold(activity, charger_w=50_000.0)
    for _ in range(120):
        fleet.step(1.0)
    return fleet, ids, document


def test_a_cooling_fault_is_expressed_when_its_modules_pump_first_runs_and_latent_if_never() -> None:
    """Protects the truth's latent marking: a cooling fault changes no reading until coolant (or the heater)
    is pumped through its module; ``expressed`` is that reading's stamp, ``null`` if it never happened."""
    start, second = datetime(2026, 1, 15, tzinfo=UTC), timedelta(seconds=1)
    warm, ids, document = _cooling_fleet(32.0, Activity.DRIVING)  # above 30 °C and active: the coolant runs
    (record,) = warm.fault_expressions().values()
    assert record.expressed_s == 0.0 and record.cooled_s == 120.0 and record.heated_s == 0.0
    (fault,) = with_expressions(document, warm.health.faults, warm.fault_expressions(), ids, start, second)["vehicles"][
        "veh-00001"
    ]["faults"]
    assert (fault["expressed"], fault["cooled_s"]) == ("2026-01-15T00:00:00.000000Z", 120.0)
    assert "expressed" not in document["vehicles"]["veh-00001"]["faults"][0]  # the first truth is left as it was
    cold, ids, document = _cooling_fleet(-5.0, Activity.PARKED)  # parked in the cold: no pump ever
    (fault,) = with_expressions(document, cold.health.faults, cold.fault_expressions(), ids, start, second)["vehicles"][
        "veh-00001"
    ]["faults"]
    assert (fault["expressed"], fault["cooled_s"], fault["heated_s"]) == (None, 0.0, 0.0)
    charging, _, _ = _cooling_fleet(-5.0, Activity.CHARGING)  # charging in the cold: the heater runs
    (record,) = charging.fault_expressions().values()
    assert record.expressed_s == 0.0 and record.heated_s == 120.0
    never_started = with_expressions(
        document, (Fault(0, FaultKind.COOLING, 9e9, 0.1, module=2),), {}, ids, start, second
    )
    assert never_started["vehicles"]["veh-00001"]["faults"][0]["expressed"] is None


def test_the_offline_truth_is_rewritten_at_the_end_only_when_a_cooling_fault_needs_it(tmp_path: Path) -> None:
    """The readings never change; the truth gains ``expressed`` for a cooling fault at the run's end."""
    _, document = offline_run(tmp_path, "--aging", "--faults", "4", "--fault-kinds", "cooling,weak_cell")
    faults = [f for entry in document["vehicles"].values() for f in entry["faults"]]
    assert {f["kind"] for f in faults} == {"cooling", "weak_cell"}
    for fault in faults:
        assert ("expressed" in fault) == (fault["kind"] == "cooling")
