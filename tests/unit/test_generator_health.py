"""Ageing and faults in the battery model: drawn reproducibly, applied to the physics, visible in the readings.

The fault tests hold small fleets in one activity and compare a faulty vehicle with itself
before the fault's start and with healthy vehicles beside it, on the values a gateway
decodes from the BMS frames (the DBC's resolution), as an analytic downstream sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from src.common.schema import SIGNALS
from src.generator.battery_model import CELLS_IN_SERIES, Activity, Fleet, PackSnapshot, Variation
from src.generator.cell import CellParameters, resistance_factor
from src.generator.health import (
    Fault,
    FaultKind,
    HealthOptions,
    HealthParameters,
    HealthPlan,
    draw_health,
)
from src.generator.readings import signal_columns
from src.generator.vehicle import Route

DAY_S = 86_400.0
PARAMS = HealthParameters()


def run(fleet: Fleet, seconds: float, dt: float) -> Iterator[PackSnapshot]:
    for _ in range(round(seconds / dt)):
        yield fleet.step(dt)


def decoded(snapshots: list[PackSnapshot]) -> dict[str, np.ndarray]:
    """What a gateway decodes from the BMS frames, per signal, shape (ticks, vehicles)."""
    columns = [signal_columns(s) for s in snapshots]
    return {name: np.array([c[k] for c in columns]) for k, name in enumerate(SIGNALS)}


def one_fault(kind: FaultKind, start_s: float, magnitude: float, **where: int) -> HealthPlan:
    return HealthPlan(faults=(Fault(0, kind, start_s, magnitude, **where),))


# --- off by default -----------------------------------------------------------------------------


def test_an_empty_plan_leaves_the_fleet_bit_for_bit_as_it_was() -> None:
    """Without ageing or faults the fleet must be the one it always was (offline output byte-identical)."""

    def trajectory(health: HealthPlan | None) -> np.ndarray:
        fleet = Fleet(4, seed=21, health=health)
        return np.array([[getattr(s, f) for f in PackSnapshot.__dataclass_fields__] for s in run(fleet, 120.0, 0.2)])

    plain = trajectory(None)
    np.testing.assert_array_equal(trajectory(HealthPlan()), plain)
    np.testing.assert_array_equal(trajectory(draw_health(4, 21, HealthOptions(), 120.0, 0.2)), plain)


def test_health_draws_leave_the_fleets_random_numbers_alone() -> None:
    """Ageing and faults come from streams of their own: the drives and duty cycle stay the same, only physics moves."""
    plan = draw_health(6, 22, HealthOptions(aging=True, faults=4), 600.0, 0.2)
    fresh, aged = Fleet(6, seed=22), Fleet(6, seed=22, health=plan)
    for _ in range(300):
        a, b = fresh.step(0.2), aged.step(0.2)
        np.testing.assert_array_equal(fresh.speed_mps, aged.speed_mps)
        np.testing.assert_array_equal(fresh.activity, aged.activity)
    assert not np.array_equal(a.voltage, b.voltage)


# --- the draws ----------------------------------------------------------------------------------


def test_ageing_is_drawn_in_range_correlated_and_reproducibly() -> None:
    """SOH 75-100 %, resistance x1.0-x2.0, worn packs both weaker and more resistive; the same seed, the same plan."""
    plan = draw_health(500, 1, HealthOptions(aging=True), 3600.0, 0.2)
    soh, growth = plan.capacity_factor, plan.resistance_factor
    assert soh is not None and growth is not None
    assert 0.75 <= soh.min() < 0.77 and 0.98 < soh.max() <= 1.0
    assert 1.0 <= growth.min() < 1.03 and 1.8 < growth.max() <= 2.0
    assert np.corrcoef(soh, growth)[0, 1] < -0.8
    again = draw_health(500, 1, HealthOptions(aging=True), 3600.0, 0.2)
    np.testing.assert_array_equal(again.capacity_factor, soh)
    other = draw_health(500, 2, HealthOptions(aging=True), 3600.0, 0.2)
    assert not np.array_equal(other.capacity_factor, soh)
    with_faults = draw_health(500, 1, HealthOptions(aging=True, faults=7), 3600.0, 0.2)
    np.testing.assert_array_equal(with_faults.capacity_factor, soh)  # adding faults does not re-age the fleet
    smaller = draw_health(20, 1, HealthOptions(aging=True), 3600.0, 0.2)
    np.testing.assert_array_equal(smaller.resistance_factor, growth[:20])  # vehicle k ages the same in any fleet


def test_faults_go_to_distinct_vehicles_cover_every_kind_and_start_on_a_step_within_the_run() -> None:
    """N faults, N vehicles; N >= 4 has all four kinds; starts are whole steps in 10-50 % of the run."""
    duration, period = 7200.0, 0.2
    plan = draw_health(12, 5, HealthOptions(faults=10), duration, period)
    assert plan.capacity_factor is None
    assert len({f.vehicle for f in plan.faults}) == 10
    assert {f.kind for f in plan.faults} == set(FaultKind)
    kinds = [f.kind for f in plan.faults]
    assert kinds[4:8] == kinds[:4] and len(set(kinds[:4])) == 4  # a drawn order, cycled
    for fault in plan.faults:
        ticks = fault.start_s / period
        assert ticks == pytest.approx(round(ticks), abs=1e-9)
        assert 0.1 * duration - period <= fault.start_s <= 0.5 * duration
        if fault.kind in (FaultKind.WEAK_CELL, FaultKind.SELF_DISCHARGE):
            assert fault.cell is not None and 0 <= fault.cell < CELLS_IN_SERIES
        if fault.kind == FaultKind.COOLING:
            assert fault.module is not None and 0 <= fault.module < 8
    assert len({f.start_s for f in plan.faults}) > 5
    assert draw_health(12, 5, HealthOptions(faults=10), duration, period) == plan
    assert draw_health(12, 6, HealthOptions(faults=10), duration, period) != plan


def test_magnitudes_lie_in_their_documented_ranges() -> None:
    """Realistic, yet far beyond a healthy pack's spread (docs/battery-model.md, "Ageing and faults")."""
    plan = draw_health(400, 9, HealthOptions(faults=400), 3600.0, 0.2)
    ranges = {
        FaultKind.WEAK_CELL: PARAMS.weak_cell_factor,
        FaultKind.SELF_DISCHARGE: PARAMS.self_discharge_pct_per_day,
        FaultKind.COOLING: PARAMS.cooling_left,
        FaultKind.SENSOR_BIAS: PARAMS.sensor_bias_v,
    }
    for kind, (low, high) in ranges.items():
        values = np.array([abs(f.magnitude) for f in plan.faults if f.kind == kind])
        assert len(values) == 100
        assert low <= values.min() and values.max() <= high
    biases = [f.magnitude for f in plan.faults if f.kind == FaultKind.SENSOR_BIAS]
    assert min(biases) < 0 < max(biases)  # the sensor reads high or low


def test_faults_can_be_forced_to_start_with_the_run_and_their_kinds_chosen() -> None:
    """What `make demo` needs: a named fault present from the first reading."""
    options = HealthOptions(faults=3, faults_at_start=1, fault_kinds=(FaultKind.WEAK_CELL, FaultKind.SENSOR_BIAS))
    plan = draw_health(5, 3, options, 60.0, 0.2)
    assert [f.kind for f in plan.faults] == [FaultKind.WEAK_CELL, FaultKind.SENSOR_BIAS, FaultKind.WEAK_CELL]
    assert plan.faults[0].start_s == 0.0
    assert all(f.start_s >= 6.0 for f in plan.faults[1:])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: draw_health(3, 0, HealthOptions(faults=4), 60.0, 0.2), "distinct vehicles"),
        (lambda: HealthOptions(faults=1, faults_at_start=2), "faults at start"),
        (lambda: HealthOptions(faults=-1), "negative"),
        (lambda: HealthOptions(faults=1, fault_kinds=()), "at least one kind"),
        (lambda: Fleet(2, 0, health=HealthPlan(faults=(Fault(2, FaultKind.SENSOR_BIAS, 0.0, 5.0),))), "vehicle index"),
        (lambda: Fleet(2, 0, health=HealthPlan(faults=(Fault(0, FaultKind.WEAK_CELL, 0.0, 3.0),))), "cell index"),
        (lambda: Fleet(2, 0, health=one_fault(FaultKind.COOLING, 0.0, 0.1, module=8)), "module index"),
        (lambda: Fleet(2, 0, health=HealthPlan(capacity_factor=np.array([0.9]))), "one per vehicle"),
    ],
)
def test_impossible_plans_are_refused(make: Callable[[], object], message: str) -> None:
    """A plan that cannot be applied fails at once rather than simulating something else."""
    with pytest.raises(ValueError, match=message):
        make()


# --- ageing in the physics ----------------------------------------------------------------------


def test_capacity_truth_is_what_coulomb_counting_the_current_against_the_reported_soc_gives() -> None:
    """capacity_ah: the charge at the terminals per 100 points of reported SOC; an aged pack really holds less."""
    plan = draw_health(4, 30, HealthOptions(aging=True), 1800.0, 1.0)
    fleet = Fleet(4, seed=30, ambient_c=20.0, initial_soc_pct=70.0, health=plan)
    truth = fleet.pack_capacity_ah()
    fleet.hold(Activity.DRIVING, Route.HIGHWAY)
    first = fleet.step(1.0)
    snaps = list(run(fleet, 1800.0, 1.0))
    charge_ah = np.sum([s.current for s in snaps], axis=0) * 1.0 / 3600.0
    moved_pct = snaps[-1].soc - first.soc
    assert np.all(moved_pct < -10.0)
    np.testing.assert_allclose(charge_ah / moved_pct * 100.0, truth, rtol=1e-9)
    assert plan.capacity_factor is not None
    np.testing.assert_allclose(truth / 94.0, plan.capacity_factor, rtol=0.01)  # the SOH, within the cells' spread
    assert truth.min() < 0.95 * 94.0


def test_resistance_truth_is_the_sum_of_the_cells_r0_at_25c_and_mid_soc() -> None:
    """resistance_mohm_25c: 96 cells' R0 at 25 °C and 50 % SOC, ageing included (identical cells, so by hand)."""
    plan = draw_health(3, 31, HealthOptions(aging=True), 60.0, 1.0)
    fleet = Fleet(3, seed=31, capacity_ah=60.0, variation=Variation.none(), health=plan)
    assert plan.resistance_factor is not None
    cell = CellParameters.for_capacity(60.0)
    expected = CELLS_IN_SERIES * cell.r0_ohm * plan.resistance_factor * resistance_factor(50.0, 25.0, cell)
    np.testing.assert_allclose(fleet.cell_r0_ohm().sum(axis=1), expected, rtol=1e-12)


def test_resistance_truth_matches_the_voltage_step_of_a_current_step_at_25c() -> None:
    """ΔV/ΔI of a pack at rest switched to a constant charging current, over a step too short for the RC pair:
    the instant resistance the truth names, for fresh and aged packs alike."""
    no_temperature_spread = Variation(temp_module_c=0.0, temp_cell_c=0.0)
    plan = draw_health(4, 32, HealthOptions(aging=True), 60.0, 1.0)
    measured = {}
    for name, health in (("fresh", None), ("aged", plan)):
        fleet = Fleet(4, seed=32, ambient_c=25.0, initial_soc_pct=50.0, variation=no_temperature_spread, health=health)
        truth = fleet.cell_r0_ohm().sum(axis=1)
        fleet.hold(Activity.PARKED)
        rest = fleet.step(1e-3)
        fleet.hold(Activity.CHARGING, charger_w=11_000.0)
        loaded = fleet.step(1e-3)
        assert np.all(loaded.current > 25.0) and np.all(rest.current == 0.0)
        measured[name] = (loaded.voltage - rest.voltage) / (loaded.current - rest.current)
        np.testing.assert_allclose(measured[name], truth, rtol=0.01)
    assert plan.resistance_factor is not None
    np.testing.assert_allclose(measured["aged"] / measured["fresh"], plan.resistance_factor, rtol=0.01)


# --- faults, each visible after its start and not before -----------------------------------------


def test_weak_cell_sags_more_than_its_neighbours_under_load_once_started() -> None:
    """A cell of 3x resistance: the lowest cell falls far below the pack's average cell under discharge."""
    start = 600.0
    plan = HealthPlan(faults=(Fault(1, FaultKind.WEAK_CELL, start, 3.0, cell=40),))
    fleet = Fleet(3, seed=40, ambient_c=25.0, initial_soc_pct=80.0, health=plan)
    fleet.hold(Activity.DRIVING, Route.MIXED)
    s = decoded(list(run(fleet, 1800.0, 1.0)))
    current = s["battery_current"]
    sag_mohm = (s["battery_voltage"] / CELLS_IN_SERIES - s["cell_voltage_min"]) / -current * 1000.0
    loaded = current < -40.0
    after = (np.arange(len(current)) >= start)[:, None]  # reading k ends step k, which begins at k seconds

    def median_sag(vehicle: int, started: bool) -> float:
        when = (after[:, 0] == started) & loaded[:, vehicle]
        assert when.sum() > 30
        return float(np.median(sag_mohm[when, vehicle]))

    for healthy in (0, 2):
        assert median_sag(healthy, False) < 0.8 and median_sag(healthy, True) < 0.8
    assert median_sag(1, False) < 0.8
    assert median_sag(1, True) > 1.5  # (3 - 1) x 0.75 mOhm, plus the RC pair


def test_self_discharge_makes_one_cell_drift_below_the_others_at_rest() -> None:
    """A leaking cell: parked, the pack's cell spread stays flat before the start and grows steadily after it
    (once the leaking cell has sunk below the pack's weakest, a few hours at 15 %/day)."""
    start, dt = 2 * 3600.0, 30.0
    plan = HealthPlan(faults=(Fault(0, FaultKind.SELF_DISCHARGE, start, 15.0, cell=7),))
    fleet = Fleet(2, seed=41, ambient_c=20.0, initial_soc_pct=60.0, health=plan)
    fleet.hold(Activity.PARKED)
    s = decoded(list(run(fleet, 12 * 3600.0, dt)))
    assert np.all(s["battery_current"] == 0.0)
    spread = (s["cell_voltage_max"] - s["cell_voltage_min"]) * 1000.0  # mV
    hourly = spread[[round(hours * 3600.0 / dt) - 1 for hours in range(1, 13)]]  # after 1 h, 2 h, ... 12 h
    assert np.ptp(hourly[:2, 0]) <= 1.0  # flat before the start
    assert np.ptp(hourly[:, 1]) <= 1.0  # the healthy pack stays flat throughout
    assert hourly[-1, 0] > hourly[1, 0] + 20.0  # 7.5 % of SOC in 10 h through a 6-8 mV/% OCV slope, less the head start
    assert np.all(np.diff(hourly[-5:, 0]) > 2.0)  # still drifting, millivolts an hour
    identical = Fleet(1, seed=41, ambient_c=20.0, initial_soc_pct=60.0, variation=Variation.none(), health=plan)
    identical.hold(Activity.PARKED)  # no head start to use up: the drift shows from the start, and not before
    s = decoded(list(run(identical, 3 * 3600.0, dt)))
    spread = (s["cell_voltage_max"] - s["cell_voltage_min"])[:, 0] * 1000.0
    assert np.all(spread[: round(start / dt)] == 0.0)
    assert spread[-1] >= 3.0  # an hour at 15 %/day: 0.6 % of SOC, 4-5 mV


def test_cooling_fault_runs_hotter_than_comparable_healthy_packs_under_load() -> None:
    """DC charging on a warm day: the coolant holds healthy modules near 30 °C, the degraded one climbs past."""
    start = 600.0
    plan = HealthPlan(faults=(Fault(0, FaultKind.COOLING, start, 0.1, module=3),))
    fleet = Fleet(3, seed=42, ambient_c=25.0, initial_soc_pct=10.0, variation=Variation.none(), health=plan)
    fleet.hold(Activity.CHARGING, charger_w=50_000.0)
    s = decoded(list(run(fleet, 2400.0, 1.0)))
    hottest = s["cell_temp_max"]
    before = int(start) - 1
    np.testing.assert_array_equal(hottest[:before, 0], hottest[:before, 1])  # identical packs until the start
    np.testing.assert_array_equal(hottest[:, 1], hottest[:, 2])
    assert hottest[1800, 0] > hottest[1800, 1] + 4.0
    assert hottest[1800, 1] < 31.0
    spread = s["cell_temp_max"] - s["cell_temp_min"]
    assert spread[1800, 0] > spread[1800, 1] + 4.0  # within its own pack, too


def test_sensor_bias_puts_the_pack_voltage_outside_96_times_the_cell_range() -> None:
    """A biased pack-voltage sensor: after the start the reported voltage no longer fits the cells, before it does;
    the cells themselves are untouched."""
    start, bias = 60.0, -4.5
    plan = one_fault(FaultKind.SENSOR_BIAS, start, bias)
    fleet = Fleet(2, seed=43, ambient_c=20.0, initial_soc_pct=60.0, health=plan)
    twin = Fleet(2, seed=43, ambient_c=20.0, initial_soc_pct=60.0)
    for f in (fleet, twin):
        f.hold(Activity.DRIVING, Route.URBAN)
    snaps, twin_snaps = list(run(fleet, 240.0, 0.2)), list(run(twin, 240.0, 0.2))
    s = decoded(snaps)
    v = s["battery_voltage"]
    low, high = CELLS_IN_SERIES * s["cell_voltage_min"], CELLS_IN_SERIES * s["cell_voltage_max"]
    resolution = 0.1 + CELLS_IN_SERIES * 0.0005  # the pack's 0.1 V, plus 96 half-millivolts of the cells
    inside = (v >= low - resolution) & (v <= high + resolution)
    first = round(start / 0.2)
    assert inside[:first].all()
    assert (v[first:, 0] < low[first:, 0] - 1.0).all()  # below the weakest cell x 96 by volts, not tenths
    assert inside[:, 1].all()
    np.testing.assert_array_equal(s["cell_voltage_min"], decoded(twin_snaps)["cell_voltage_min"])
    np.testing.assert_allclose(snaps[-1].voltage - twin_snaps[-1].voltage, [bias, 0.0], atol=1e-9)
