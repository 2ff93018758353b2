"""Battery analytics of the hourly job, scored against the simulator's ground truth.

The simulated tests drive the battery model (src/generator, imported here only) for a small
aged fleet, lay its readings out as the consumer stores them, run the hourly job's compaction
and rollup, and compare the analytics block with what the simulator knows: each pack's
resistance and capacity (its truth), the exact terminal power, when it was charging, which pack
has a biased voltage sensor. Both at 200 ms and at 1 s sampling. The hand-made tests pin each
definition and every figure that cannot be computed (null, with a reason).

``python -m tests.unit.test_aggregator_analytics --vehicles 40 --duration 3600 --rate-ms 200``
prints the resistance and capacity errors of a larger fleet (docs/battery-analytics.md).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pytest

from src.aggregator import analytics, queries
from src.aggregator.hourly_stats import curate_and_aggregate, main
from src.common.layout import raw_hour_dir
from src.common.schema import SIGNALS, format_timestamp
from src.common.settings import AggregatorSettings
from src.generator.battery_model import Activity, Fleet
from src.generator.health import Fault, FaultKind, HealthOptions, HealthPlan, draw_health
from src.generator.readings import readings, vehicle_ids
from src.generator.truth import truth_document

START = datetime(2026, 1, 1, 10, tzinfo=UTC)
TH = analytics.Thresholds.from_settings(AggregatorSettings.model_construct())

# Tolerances, from the errors measured on larger fleets (docs/battery-analytics.md, "Measured against the truth").
RESISTANCE_TOLERANCE = 0.05  # measured: within ±2.6 % at 200 ms and 1 s
CAPACITY_TOLERANCE = 0.01  # measured: within ±0.1 % for swings of 20 points or more


# --- A simulated fleet, through the hourly job ----------------------------------------------------


@dataclass
class Simulation:
    """What the simulator did (exact values, activity, truth) and what the hourly job made of its readings."""

    rate_ms: int
    ids: list[str]
    truth: dict[str, dict[str, Any]]
    seconds: np.ndarray  # (ticks,) time of each tick since START
    present: np.ndarray  # (ticks, vehicles) whether the reading was kept (gaps are cut out)
    decoded: dict[str, np.ndarray]  # signal -> (ticks, vehicles), as the readings carry them
    exact_v: np.ndarray  # (ticks, vehicles) the pack's terminal voltage before quantisation (bias included)
    exact_i: np.ndarray
    activity: np.ndarray  # (ticks, vehicles) Activity after each step
    blocks: dict[str, dict[str, Any]]  # vehicle id -> its analytics block

    @property
    def period_s(self) -> float:
        return self.rate_ms / 1000.0


BIASED = 1  # the vehicle whose pack-voltage sensor reads 5 V low
GAPPED = 0  # the vehicle with 30 s of readings missing


def fleet_plan(n: int) -> HealthPlan:
    wear = np.linspace(0.0, 1.0, n)
    return HealthPlan(
        capacity_factor=1.0 - 0.25 * wear,
        resistance_factor=1.0 + 0.8 * wear,
        faults=(Fault(BIASED, FaultKind.SENSOR_BIAS, 0.0, -5.0),),
    )


def simulate(
    directory: Path,
    rate_ms: int,
    duration_s: float,
    n: int = 6,
    seed: int = 6,
    plan: HealthPlan | None = None,
    initial_soc_pct: float | None = 35.0,
    gap_s: tuple[float, float] | None = (600.0, 630.0),
    thresholds: analytics.Thresholds = TH,
) -> Simulation:
    """Simulate, write the readings as one raw batch file of the hour, run the hourly job on it."""
    period = rate_ms / 1000.0
    fleet = Fleet(n, seed, capacity_ah=None, initial_soc_pct=initial_soc_pct, health=plan or fleet_plan(n))
    ids = vehicle_ids(n)
    truth = truth_document(fleet, ids, START, timedelta(milliseconds=rate_ms))["vehicles"]
    ticks = round(duration_s / period)
    seconds = np.arange(ticks) * period
    present = np.ones((ticks, n), dtype=bool)
    if gap_s is not None:
        present[(seconds >= gap_s[0]) & (seconds < gap_s[1]), GAPPED] = False
    decoded = {name: np.empty((ticks, n)) for name in SIGNALS}
    exact_v, exact_i, activity = np.empty((ticks, n)), np.empty((ticks, n)), np.empty((ticks, n), dtype=np.int64)
    raw_dir, curated_dir, aggregated_dir = directory / "raw", directory / "curated", directory / "aggregated"
    hour_dir = raw_hour_dir(raw_dir, START)
    hour_dir.mkdir(parents=True, exist_ok=True)
    with (hour_dir / "batch-1767261600000.jsonl").open("wb") as out:
        for k in range(ticks):
            snapshot = fleet.step(period)
            exact_v[k], exact_i[k], activity[k] = snapshot.voltage, snapshot.current, fleet.activity
            moment = START + timedelta(seconds=float(seconds[k]))
            stamp = format_timestamp(moment)
            lines = []
            for j, reading in enumerate(readings(snapshot, moment, ids)):
                for name in SIGNALS:
                    decoded[name][k, j] = reading["payload"][name]
                if present[k, j]:
                    lines.append(orjson.dumps(reading | {"ingest_received_at": stamp}))
            out.write(b"\n".join(lines) + b"\n")
    _, result, _ = curate_and_aggregate(raw_dir, curated_dir, aggregated_dir, START, 256, thresholds)
    assert result.analytics is not None and result.analytics["thresholds"] == asdict(thresholds)
    blocks = {block.pop("vehicle_id"): block for block in result.analytics["vehicles"]}
    return Simulation(rate_ms, ids, truth, seconds, present, decoded, exact_v, exact_i, activity, blocks)


@pytest.fixture(scope="module", params=[200, 1000], ids=["200ms", "1s"])
def sim(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulation]:
    """Six aged vehicles of mixed capacity at 35 % SOC (so most charge soon), one with a biased
    voltage sensor, one with a 30 s gap: 40 simulated minutes at 200 ms, an hour at 1 s."""
    rate_ms = int(request.param)
    directory = tmp_path_factory.mktemp(f"sim-{rate_ms}")
    yield simulate(directory, rate_ms, 2400.0 if rate_ms == 200 else 3600.0)
    shutil.rmtree(directory, ignore_errors=True)


def intervals(s: Simulation, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Indexes of vehicle ``j``'s kept readings, and the interval ending at each (NaN for the first)."""
    kept = np.flatnonzero(s.present[:, j])
    dt = np.concatenate([[np.nan], np.diff(s.seconds[kept])])
    return kept, dt


# --- Against the truth and the simulator's own numbers ---------------------------------------------


def test_energy_and_charge_match_the_exact_terminal_power_and_gaps_are_not_bridged(sim: Simulation) -> None:
    """kWh and Ah in and out equal the simulator's exact V·I over the kept intervals (each reading's current
    held over the interval ending at it); the 30 s hole is one gap, counted and not bridged."""
    for j, vid in enumerate(sim.ids):
        kept, dt = intervals(sim, j)
        bridged = dt <= TH.gap_s
        v, i = sim.exact_v[kept][bridged, j], sim.exact_i[kept][bridged, j]
        step = dt[bridged]
        energy = sim.blocks[vid]["energy"]
        assert energy["charged_kwh"] == pytest.approx(np.sum((v * i * step)[i > 0]) / 3.6e6, rel=2e-3, abs=2e-3)
        assert energy["discharged_kwh"] == pytest.approx(-np.sum((v * i * step)[i < 0]) / 3.6e6, rel=2e-3, abs=2e-3)
        assert energy["charged_ah"] == pytest.approx(np.sum((i * step)[i > 0]) / 3600, rel=2e-3, abs=5e-3)
        assert energy["discharged_ah"] == pytest.approx(-np.sum((i * step)[i < 0]) / 3600, rel=2e-3, abs=5e-3)
        assert energy["throughput_ah"] == pytest.approx(energy["charged_ah"] + energy["discharged_ah"], abs=1e-5)
        soc = sim.decoded["battery_soc"][kept, j]
        cycles = np.sum(np.abs(np.diff(soc))[bridged[1:]]) / 200
        assert energy["equivalent_full_cycles"] == pytest.approx(cycles, abs=1e-6)
        gaps = sim.blocks[vid]["gaps"]
        expected_gaps = 1 if j == GAPPED else 0
        assert (gaps["count"], gaps["seconds"]) == (expected_gaps, pytest.approx((30.0 + sim.period_s) * expected_gaps))
    assert sum(sim.blocks[vid]["energy"]["charged_kwh"] > 1.0 for vid in sim.ids) >= 2  # real charging happened


def test_charging_sessions_are_the_simulators_charging(sim: Simulation) -> None:
    """Each stretch the simulator spent charging is one session, starting and ending within one reading,
    with the SOC it started and ended at; regenerative braking while driving is never a session."""
    seen = 0
    for j, vid in enumerate(sim.ids):
        charging = sim.activity[:, j] == Activity.CHARGING
        edges = np.flatnonzero(np.diff(np.concatenate([[0], charging.astype(int), [0]])))
        spans = [(sim.seconds[a], sim.seconds[b - 1]) for a, b in zip(edges[0::2], edges[1::2], strict=True)]
        sessions = sim.blocks[vid]["charging_sessions"]
        assert len(sessions) == len(spans), vid
        for session, (start, end) in zip(sessions, spans, strict=True):
            got_start = (datetime.fromisoformat(session["start"]) - START).total_seconds()
            got_end = (datetime.fromisoformat(session["end"]) - START).total_seconds()
            assert abs(got_start - start) <= sim.period_s + 1e-6
            assert abs(got_end - end) <= sim.period_s + 1e-6  # the simulator ends a session after its last step
            first = round(got_start / sim.period_s)
            assert session["soc_from"] == sim.decoded["battery_soc"][first, j]
            assert session["soc_to"] > session["soc_from"] and session["energy_kwh"] > 0
            assert session["peak_power_kw"] == pytest.approx(
                np.max(sim.decoded["battery_voltage"][charging, j] * sim.decoded["battery_current"][charging, j])
                / 1000,
                rel=0.01,
            )
            seen += 1
        time_s = sim.blocks[vid]["time_s"]
        kept, dt = intervals(sim, j)
        bridged = dt <= TH.gap_s
        expected = np.sum(dt[bridged & (sim.activity[kept, j] == Activity.CHARGING)])
        assert time_s["charging"] == pytest.approx(expected, abs=2 * sim.period_s * max(1, len(spans)))
        total = time_s["driving"] + time_s["charging"] + time_s["parked"]
        assert total == pytest.approx(np.nansum(dt[bridged]), abs=1e-3)
        driving = np.sum(dt[bridged & (sim.activity[kept, j] == Activity.DRIVING)])
        assert time_s["driving"] == pytest.approx(driving, rel=0.02, abs=10 * sim.period_s)
    assert seen >= 2


def test_resistance_is_within_tolerance_of_the_truth(sim: Simulation) -> None:
    """ΔV/ΔI on current steps, at 25 °C, against the truth's resistance_mohm_25c (the string's R0)."""
    estimated = 0
    for vid in sim.ids:
        resistance = sim.blocks[vid]["resistance"]
        if resistance["mohm_25c"] is None:
            assert resistance["reason"] and resistance["steps"] < TH.min_steps
            continue
        truth = sim.truth[vid]["resistance_mohm_25c"]
        assert resistance["mohm_25c"] == pytest.approx(truth, rel=RESISTANCE_TOLERANCE), vid
        estimated += 1
    assert estimated >= 4


def test_capacity_is_within_tolerance_of_the_truth_when_a_swing_qualifies(sim: Simulation) -> None:
    estimated = 0
    for vid in sim.ids:
        capacity = sim.blocks[vid]["capacity"]
        if capacity["swing_pct"] < TH.capacity_min_swing_pct:
            assert capacity["ah"] is None and "largest SOC swing" in capacity["reason"]
            continue
        assert capacity["ah"] == pytest.approx(sim.truth[vid]["capacity_ah"], rel=CAPACITY_TOLERANCE), vid
        window = capacity["window"]
        assert abs(window["soc_to"] - window["soc_from"]) == pytest.approx(capacity["swing_pct"], abs=1e-6)
        assert window["start"] < window["end"]
        estimated += 1
    assert estimated >= 2


def test_a_biased_voltage_sensor_breaks_pack_consistency_and_healthy_packs_keep_it(sim: Simulation) -> None:
    for j, vid in enumerate(sim.ids):
        pack = sim.blocks[vid]["pack_voltage"]
        if j == BIASED:
            assert pack["fraction_outside"] > 0.99 and pack["max_outside_v"] > 4.0
        else:
            assert (pack["readings_outside"], pack["max_outside_v"]) == (0, 0.0)


def test_spreads_and_temperature_are_the_readings_percentiles(sim: Simulation) -> None:
    """Percentiles of cell-voltage and temperature spread equal numpy's over the readings; at rest means
    |I| <= 0.5 A for 5 minutes, counted again here; a healthy pack's spread is millivolts, not nothing."""
    for j, vid in enumerate(sim.ids):
        kept, dt = intervals(sim, j)
        values = {name: sim.decoded[name][kept, j] for name in SIGNALS}
        block = sim.blocks[vid]
        spread = (values["cell_voltage_max"] - values["cell_voltage_min"]) * 1000
        got = block["cell_voltage_spread_mv"]
        assert [got["p50"], got["p95"], got["max"]] == pytest.approx(
            [np.percentile(spread, 50), np.percentile(spread, 95), spread.max()], abs=1e-3
        )
        assert 5 <= got["p50"] <= 100
        temp = values["cell_temp_max"] - values["cell_temp_min"]
        got_t = block["cell_temp_spread_c"]
        assert [got_t["p50"], got_t["p95"], got_t["max"]] == pytest.approx(
            [np.percentile(temp, 50), np.percentile(temp, 95), temp.max()], abs=1e-3
        )
        t = sim.seconds[kept]
        breaks = (np.abs(values["battery_current"]) > TH.rest_current_a) | ~(dt <= TH.gap_s)
        rest_from = np.maximum.accumulate(np.where(breaks, t, -np.inf))
        at_rest = ~breaks & (t - rest_from >= TH.rest_min_s)
        rest = block["cell_voltage_spread_mv"]["at_rest"]
        assert rest["readings"] == int(at_rest.sum())
        if at_rest.any():
            assert rest["p50"] == pytest.approx(np.percentile(spread[at_rest], 50), abs=1e-3)
        else:
            assert rest["p50"] is None and "no reading at rest" in rest["reason"]
        soc = block["rest_soc_spread_pct"]  # the cell_imbalance figure: each extreme cell's SOC off the OCV curve
        grid = np.linspace(0.0, 100.0, len(TH.ocv_curve_v))
        soc_spread = (np.interp(values["cell_voltage_max"], TH.ocv_curve_v, grid) - np.interp(
            values["cell_voltage_min"], TH.ocv_curve_v, grid))[at_rest]  # fmt: skip
        assert soc["readings"] == rest["readings"] and soc["reason"] == rest["reason"]
        if at_rest.any():
            assert [soc["p50"], soc["p95"], soc["max"]] == pytest.approx(
                [np.percentile(soc_spread, 50), np.percentile(soc_spread, 95), soc_spread.max()], abs=1e-3
            )
        bridged = dt <= TH.gap_s
        hot = np.sum(dt[bridged & (values["cell_temp_max"] > TH.temp_warning_c)]) / 60
        assert block["temperature"]["minutes_above_warning"] == pytest.approx(hot, abs=1e-3)
        assert block["temperature"]["max_c"] == values["cell_temp_max"].max()
    assert sum(sim.blocks[vid]["cell_voltage_spread_mv"]["at_rest"]["readings"] > 0 for vid in sim.ids) >= 1


# --- Hand-made hours: every definition, every figure that cannot be computed -----------------------


def row(
    second: float,
    current: float = 0.0,
    voltage: float = 360.0,
    soc: float = 50.0,
    vehicle: str = "veh-1",
    can_id: str = "0x1F0",
    cell_min: float = 3.740,
    cell_max: float = 3.760,
    temp_min: float = 24.0,
    temp_max: float = 26.0,
) -> tuple[object, ...]:
    moment = START + timedelta(seconds=second)
    return (vehicle, can_id, moment, moment, soc, voltage, current, cell_min, cell_max, temp_min, temp_max)


def run(
    tmp_path: Path, rows: list[tuple[object, ...]], thresholds: analytics.Thresholds = TH
) -> dict[str, dict[str, Any]]:
    """The analytics of ``rows`` (written as a curated file in the given order) by DuckDB."""
    path = tmp_path / f"hour-{len(list(tmp_path.glob('hour-*')))}.parquet"
    columns = ", ".join(f'"{name}" {kind}' for name, kind in queries.COLUMNS)
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute(f"CREATE TABLE hour ({columns})")
        connection.executemany(f"INSERT INTO hour VALUES ({', '.join('?' * len(queries.COLUMNS))})", rows)
        connection.execute(f"COPY hour TO '{path}' (FORMAT parquet)")
        return analytics.run_duckdb(connection, [path], thresholds)


def test_a_single_reading_gives_nulls_with_reasons_never_a_crash(tmp_path: Path) -> None:
    block = run(tmp_path, [row(0, current=-50.0)])["veh-1"]
    reason = "a single reading: no interval between readings"
    assert block["energy"] == {
        "charged_kwh": None,
        "discharged_kwh": None,
        "charged_ah": None,
        "discharged_ah": None,
        "throughput_ah": None,
        "equivalent_full_cycles": None,
        "reason": reason,
    }
    assert block["time_s"] == {"driving": None, "charging": None, "parked": None, "reason": reason}
    assert block["temperature"]["minutes_above_warning"] is None and block["temperature"]["reason"] == reason
    assert block["samples"] == {
        "readings": 1,
        "duplicate_timestamps": 0,
        "first": "2026-01-01T10:00:00Z",
        "last": "2026-01-01T10:00:00Z",
        "intervals": 0,
        "median_interval_s": None,
    }
    assert block["resistance"]["mohm_25c"] is None and block["resistance"]["reason"].startswith("no current step")
    assert block["capacity"] == {"ah": None, "swing_pct": 0.0, "window": None, "reason": reason}
    assert block["charging_sessions"] == []
    assert block["cell_voltage_spread_mv"]["p50"] == pytest.approx(20.0)
    assert block["cell_voltage_spread_mv"]["at_rest"]["reason"].startswith("no reading at rest")
    assert block["pack_voltage"]["readings_outside"] == 0


def test_readings_further_apart_than_the_gap_threshold_are_never_bridged(tmp_path: Path) -> None:
    block = run(tmp_path, [row(10.0 * k, current=-100.0) for k in range(4)])["veh-1"]
    assert block["gaps"] == {"count": 3, "seconds": 30.0}
    assert block["energy"]["discharged_kwh"] is None
    assert block["energy"]["reason"] == "every interval between readings is a gap (longer than 5 s)"
    wider = run(tmp_path, [row(10.0 * k, current=-100.0) for k in range(4)], replace(TH, gap_s=11.0))["veh-1"]
    assert wider["energy"]["discharged_kwh"] == pytest.approx(360.0 * 100.0 * 30 / 3.6e6)
    assert wider["gaps"]["count"] == 0


def test_energy_holds_each_readings_current_over_the_interval_ending_at_it(tmp_path: Path) -> None:
    """1 s at -100 A then 2 s at +50 A (regen outside a session: driving), at 360 V."""
    rows = [row(0, -100.0), row(1, -100.0), row(2, 50.0), row(3, 50.0)]
    block = run(tmp_path, rows)["veh-1"]
    assert block["energy"]["discharged_kwh"] == pytest.approx(360 * 100 / 3.6e6)
    assert block["energy"]["charged_kwh"] == pytest.approx(360 * 50 * 2 / 3.6e6)
    assert block["energy"]["throughput_ah"] == pytest.approx((100 + 100) / 3600, abs=1e-6)
    assert block["time_s"] == {"driving": 3.0, "charging": 0.0, "parked": 0.0, "reason": None}


def test_out_of_order_and_second_can_id_readings_change_nothing_but_the_count(tmp_path: Path) -> None:
    rng = random.Random(5)
    ordered = [row(0.2 * k, current=-30.0 - (k % 7) * 10, soc=60 - k * 0.01) for k in range(200)]
    shuffled = ordered[:]
    rng.shuffle(shuffled)
    other_frame = row(0.2 * 50, current=999.0, can_id="0x2A0")  # same instant, later CAN id: not a sample
    baseline = run(tmp_path, ordered)["veh-1"]
    messy = run(tmp_path, [*shuffled, other_frame])["veh-1"]
    assert messy["samples"].pop("duplicate_timestamps") == 1
    baseline["samples"].pop("duplicate_timestamps")
    assert messy == baseline


def test_constant_current_has_no_steps_and_few_steps_are_not_enough(tmp_path: Path) -> None:
    constant = run(tmp_path, [row(0.2 * k, current=-80.0) for k in range(100)])["veh-1"]["resistance"]
    assert constant == {
        "mohm_25c": None,
        "steps": 0,
        "steps_seen": 0,
        "reason": "no current step of at least 20 A between readings at most 1.5 s apart",
    }
    few = [row(0.2 * k, current=-80.0 if (k // 10) % 2 else -20.0) for k in range(60)]
    assert run(tmp_path, few)["veh-1"]["resistance"]["reason"] == (
        "5 current step(s) at or above 30 % SOC (5 in all); at least 10 needed"
    )
    low_soc = [row(0.2 * k, current=-80.0 if k % 2 else -20.0, soc=20.0) for k in range(60)]
    assert run(tmp_path, low_soc)["veh-1"]["resistance"]["reason"] == (
        "0 current step(s) at or above 30 % SOC (59 in all); at least 10 needed"
    )


def test_resistance_is_dv_over_di_normalised_to_25c_with_the_rc_share_removed(tmp_path: Path) -> None:
    """A pack of exactly 100 mΩ at 25 °C: read at 0 °C it drops 100 mΩ times the Arrhenius factor, and the
    estimate divides that out; with the RC pair's share (rho = 0.6, tau = 40 s, over 1 s) in the data, too."""
    factor_0c = math.exp(TH.activation_energy_j_per_mol / 8.314 * (1 / 273.15 - 1 / 298.15))
    rc_share = 1 + TH.rc_ratio * (1 - math.exp(-1.0 / TH.rc_tau_s))
    currents = [-20.0 if k % 2 else -120.0 for k in range(40)]
    rows = [
        row(k, c, voltage=370.0 + 0.1 * factor_0c * rc_share * c, temp_min=-1.0, temp_max=1.0)
        for k, c in enumerate(currents)
    ]
    resistance = run(tmp_path, rows)["veh-1"]["resistance"]
    assert resistance["mohm_25c"] == pytest.approx(100.0, abs=1e-3)
    assert resistance["steps"] == 39
    no_rc = run(tmp_path, rows, replace(TH, rc_ratio=0.0))["veh-1"]["resistance"]
    assert no_rc["mohm_25c"] == pytest.approx(100.0 * rc_share, abs=1e-3)


def test_charging_sessions_merge_short_pauses_split_on_discharge_and_ignore_regen(tmp_path: Path) -> None:
    rows = [row(k, 30.0, soc=40 + k * 0.01) for k in range(0, 300)]  # 5 min at 30 A
    rows += [row(k, 0.0, soc=43.0) for k in range(300, 340)]  # a 40 s pause: the same session
    rows += [row(k, 30.0, soc=43 + (k - 340) * 0.01) for k in range(340, 600)]
    rows += [row(k, -40.0, soc=45.6) for k in range(600, 610)]  # a drive
    rows += [row(k, 30.0 if k % 20 < 5 else -40, soc=45.6) for k in range(610, 900)]  # regen bursts
    rows += [row(k, 30.0, soc=46.0) for k in range(900, 1200)]  # a second session, at the end of the hour
    block = run(tmp_path, rows)["veh-1"]
    first, second = block["charging_sessions"]
    assert first == {
        "start": "2026-01-01T10:00:00Z",
        "end": "2026-01-01T10:09:59Z",
        "duration_s": 599.0,
        "soc_from": 40.0,
        "soc_to": pytest.approx(45.59),
        "energy_kwh": pytest.approx(360 * 30 * 559 / 3.6e6),  # the first reading has no interval; pauses: 0 A
        "peak_power_kw": pytest.approx(10.8),
        "open_start": True,
        "open_end": False,
    }
    assert (second["start"], second["end"], second["open_end"]) == (
        "2026-01-01T10:15:00Z",
        "2026-01-01T10:19:59Z",
        True,
    )
    assert block["time_s"]["charging"] == pytest.approx(599 + 300)
    assert block["time_s"]["parked"] == 0.0
    assert block["time_s"]["driving"] == pytest.approx(1199 - 899)
    never = run(tmp_path, [row(k, -40.0, soc=80 - k * 0.01) for k in range(600)])["veh-1"]
    assert never["charging_sessions"] == []
    assert never["capacity"]["reason"] == "the largest SOC swing without a gap is 6.0 points; at least 20 are needed"


def test_capacity_is_charge_over_soc_between_soc_transitions(tmp_path: Path) -> None:
    """50 Ah packs charging at 50 A for 30 min: SOC rises 1 point every 36 s, reported at 0.1 resolution
    and cut where the reported value just changed; 50 points moved by 25 Ah is 50 Ah."""
    rows = [row(k, 50.0, soc=math.floor((20 + k / 36) * 10 + 0.5) / 10) for k in range(1800)]
    capacity = run(tmp_path, rows)["veh-1"]["capacity"]
    assert capacity["ah"] == pytest.approx(50.0, rel=2e-3)
    assert capacity["window"]["soc_from"] == pytest.approx(20.1)
    assert capacity["window"]["soc_to"] == pytest.approx(70.0)


def test_temperature_minutes_and_pack_consistency_count_what_they_say(tmp_path: Path) -> None:
    rows = [row(k, -10.0, temp_max=50.0 if 60 <= k < 180 else 30.0) for k in range(300)]
    rows += [row(300, -10.0, voltage=96 * 3.760 + 0.11), row(301, -10.0, voltage=96 * 3.740 - 0.09)]
    block = run(tmp_path, rows)["veh-1"]
    assert block["temperature"]["minutes_above_warning"] == pytest.approx(2.0)
    assert block["temperature"]["minutes_above_critical"] == 0.0
    assert block["pack_voltage"]["readings_outside"] == 1  # 0.11 V above: outside; 0.09 V below: rounding
    assert block["pack_voltage"]["fraction_outside"] == pytest.approx(1 / 302, abs=1e-6)


def test_the_at_rest_soc_spread_reads_the_same_imbalance_alike_wherever_the_ocv_curve_is_steep(
    tmp_path: Path,
) -> None:
    """Protects the cell_imbalance figure: two cells 2 SOC points apart read 8 mV at 40 % (the curve's flat middle,
    4 mV a point) and 20 mV at 92 % (10 mV a point), yet the figure is 2.0 points in both; it counts the at-rest
    readings only (rest 300 s), clamps voltages beyond the curve's ends to 0 and 100 %, and a curve that does not
    rise is refused."""
    mid = [row(k, cell_min=3.690, cell_max=3.698, soc=41.0, vehicle="mid") for k in range(600)]
    full = [row(k, cell_min=4.080, cell_max=4.100, soc=93.0, vehicle="full") for k in range(600)]
    loaded = [row(k, -30.0, cell_min=3.690, cell_max=3.740, vehicle="loaded") for k in range(600)]
    beyond = [row(k, cell_min=3.200, cell_max=4.250, vehicle="beyond") for k in range(600)]
    blocks = run(tmp_path, mid + full + loaded + beyond)
    for vehicle, mv in (("mid", 8.0), ("full", 20.0)):
        assert blocks[vehicle]["cell_voltage_spread_mv"]["at_rest"]["p50"] == pytest.approx(mv)  # unchanged meaning
        assert blocks[vehicle]["rest_soc_spread_pct"] == {
            "readings": 300, "p50": 2.0, "p95": 2.0, "max": 2.0, "reason": None,
        }  # fmt: skip
    assert blocks["loaded"]["rest_soc_spread_pct"]["p50"] is None
    assert blocks["loaded"]["rest_soc_spread_pct"]["reason"].startswith("no reading at rest")
    assert blocks["beyond"]["rest_soc_spread_pct"]["max"] == 100.0
    with pytest.raises(ValueError, match="rise strictly"):
        analytics.soc_of_voltage("cv", (3.3, 3.3, 4.2))


def test_thresholds_are_spliced_as_numbers_only() -> None:
    assert analytics._num(5) == "5.0E0" and analytics._num(1e-7) == "1E-07"
    with pytest.raises(ValueError, match="finite"):
        analytics._num(float("nan"))


# --- The hourly job --------------------------------------------------------------------------------


def test_the_hourly_job_adds_the_block_after_unchanged_keys_with_its_settings_and_can_leave_it_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unit.test_aggregator_hourly_stats import output, record, write_batch

    rows = [record(vehicle, s, battery_current=-10.0) for vehicle in ("veh-00002", "veh-00001") for s in range(20)]
    write_batch("batch-1760893200000.jsonl", rows)
    monkeypatch.setenv("ANALYTICS_GAP_S", "0.5")
    assert main(["--hour", "2025-10-19T17"]) == 0
    document = output()
    assert list(document) == ["aggregation_timestamp", "time_range", "vehicles", "quality", "analytics"]
    assert all(list(vehicle) == ["vehicle_id", "message_count", *SIGNALS] for vehicle in document["vehicles"])
    block = document["analytics"]
    assert block["thresholds"] == orjson.loads(orjson.dumps(asdict(TH) | {"gap_s": 0.5}))  # type: ignore[index]
    assert [v["vehicle_id"] for v in block["vehicles"]] == ["veh-00001", "veh-00002"]  # type: ignore[index]
    first = block["vehicles"][0]  # type: ignore[index]
    assert first["samples"]["readings"] == 20 and first["gaps"]["count"] == 19  # one reading a second: all gaps
    monkeypatch.setenv("ANALYTICS_ENABLED", "false")
    assert main(["--hour", "2025-10-19T17"]) == 0
    assert "analytics" not in output()


# --- Measuring the errors on a larger fleet --------------------------------------------------------


def measure(argv: list[str] | None = None) -> None:
    """Resistance and capacity errors against the truth, per vehicle and in summary (docs/battery-analytics.md)."""
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m tests.unit.test_aggregator_analytics")
    parser.add_argument("--vehicles", type=int, default=40)
    parser.add_argument("--duration", type=float, default=3600.0)
    parser.add_argument("--rate-ms", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--initial-soc", type=float, default=None, help="default: each pack in 30-95 %%")
    parser.add_argument("--rc-ratio", type=float, default=TH.rc_ratio, help="0: no RC correction")
    args = parser.parse_args(argv)
    plan = draw_health(args.vehicles, args.seed, HealthOptions(aging=True), args.duration, args.rate_ms / 1000)
    th = replace(TH, rc_ratio=args.rc_ratio)
    with tempfile.TemporaryDirectory() as directory:
        s = simulate(
            Path(directory), args.rate_ms, args.duration, args.vehicles, args.seed, plan, args.initial_soc, None, th
        )
    r_errors, c_errors = [], []
    for vid in s.ids:
        block, truth = s.blocks[vid], s.truth[vid]
        r, c = block["resistance"]["mohm_25c"], block["capacity"]["ah"]
        r_err = None if r is None else 100 * (r / truth["resistance_mohm_25c"] - 1)
        c_err = None if c is None else 100 * (c / truth["capacity_ah"] - 1)
        r_errors += [] if r_err is None else [r_err]
        c_errors += [] if c_err is None else [c_err]
        print(
            f"{vid} R {truth['resistance_mohm_25c']:8.2f} est {r if r is not None else '-':>8} "
            f"({r_err if r_err is None else f'{r_err:+.2f} %'}, {block['resistance']['steps']} steps) "
            f"C {truth['capacity_ah']:7.2f} est {c if c is not None else '-':>8} "
            f"({c_err if c_err is None else f'{c_err:+.3f} %'}, swing {block['capacity']['swing_pct']})"
        )
    for name, errors in (("resistance", r_errors), ("capacity", c_errors)):
        if errors:
            e = np.array(errors)
            print(
                f"{name}: {len(e)}/{len(s.ids)} vehicles estimated, error median {np.median(e):+.2f} %, "
                f"mean {e.mean():+.2f} %, min {e.min():+.2f} %, max {e.max():+.2f} %, "
                f"max |error| {np.abs(e).max():.2f} %"
            )


if __name__ == "__main__":
    measure()


def test_module_lag_is_the_hottest_cell_above_both_the_pump_point_and_the_coolest(tmp_path: Path) -> None:
    """Protects the cooling_fault figure: under the coolant (current flowing, hottest >= 30 °C) a module that
    sheds heat is held near 30 °C, so least(spread, hottest - 30) stays small for a pack that only runs hot
    (all modules up, small spread) or cold (wide gradient, hottest just above 30); a module that cannot shed
    its heat makes both large. The heater's mirror: least(spread, 10 °C - coolest) while charging in a session."""
    lagging = [row(k, -50.0, temp_min=29.0, temp_max=40.0) for k in range(200)]  # least(11, 10): 200 s
    hot = [row(k, -50.0, temp_min=32.0, temp_max=34.5, vehicle="hot") for k in range(200)]  # least(2.5, 4.5)
    cold = [row(k, -50.0, temp_min=26.0, temp_max=32.6, vehicle="cold") for k in range(200)]  # least(6.6, 2.6)
    parked = [row(k, 0.0, temp_min=29.0, temp_max=40.0, vehicle="parked") for k in range(200)]  # no pump
    heater = [row(k, 30.0, temp_min=5.0, temp_max=11.2, vehicle="heater") for k in range(300)]  # least(6.2, 5)
    warming = [row(k, 30.0, temp_min=8.2, temp_max=11.2, vehicle="warming") for k in range(300)]  # least(3, 1.8)
    blocks = run(tmp_path, lagging + hot + cold + parked + heater + warming)
    lag = blocks["veh-1"]["module_lag"]
    assert lag["cooling"] == {"readings": 200, "p95_c": 10.0, "seconds": 199.0}  # the first has no interval
    assert lag["heating"] == {"readings": 0, "p95_c": None, "seconds": 0.0}
    assert lag["first"] == "2026-01-01T10:00:00Z" and lag["reason"] is None
    for healthy in ("hot", "cold", "warming"):
        figure = blocks[healthy]["module_lag"]
        assert figure["cooling"]["seconds"] == figure["heating"]["seconds"] == 0.0 and figure["first"] is None
    assert blocks["cold"]["module_lag"]["cooling"]["p95_c"] == pytest.approx(2.6)
    assert blocks["cold"]["cooled_temp_spread_c"]["p95"] == pytest.approx(6.6)  # the old figure: unchanged
    assert blocks["parked"]["module_lag"]["reason"].startswith("no reading under the coolant")
    assert blocks["heater"]["module_lag"]["heating"] == {"readings": 300, "p95_c": 5.0, "seconds": 299.0}
    assert blocks["warming"]["module_lag"]["heating"]["p95_c"] == pytest.approx(1.8)
