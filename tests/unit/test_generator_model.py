"""The battery model behaves like a battery: each physical law checked on simulated output.

Most checks run on the readings the offline simulator writes (5 vehicles, one simulated
hour: the issue's 90,000 readings), because that is what users and the pipeline see,
quantised to the DBC's resolution. The rest hold the fleet in one activity (highway
driving, parking, charging) to isolate one behaviour at a time.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from src.common.schema import SIGNALS, Reading
from src.generator.battery_model import (
    CAPACITY_VARIANTS_AH,
    CELLS_IN_SERIES,
    NOMINAL_PACK_V,
    Activity,
    BatteryFleet,
    BmsLimits,
    Fleet,
    PackSnapshot,
    Variation,
)
from src.generator.cell import CellParameters, open_circuit_voltage
from src.generator.dbc_signals import decode, encode
from src.generator.simulator import SimulatorOptions, write_offline
from src.generator.vehicle import Route

FloatArray = np.ndarray
DT = 0.2
LIMITS = BmsLimits()
NOMINAL_AH = 94.0
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Hour:
    """The offline simulator's output for one hour, as arrays of shape (ticks, vehicles)."""

    lines: list[bytes]
    signals: dict[str, FloatArray]


@pytest.fixture(scope="module")
def hour() -> Hour:
    """5 vehicles for one simulated hour at 200 ms: the issue's 90,000 readings."""
    out = io.BytesIO()
    count = write_offline(SimulatorOptions(vehicles=5, duration_s=3600.0, seed=2026, start=START), out)
    assert count == 90_000
    lines = out.getvalue().splitlines()
    payloads = [orjson.loads(line)["payload"] for line in lines]
    signals = {name: np.array([p[name] for p in payloads]).reshape(-1, 5) for name in SIGNALS}
    return Hour(lines, signals)


def run(fleet: Fleet, seconds: float, dt: float = 1.0) -> Iterator[PackSnapshot]:
    for _ in range(round(seconds / dt)):
        yield fleet.step(dt)


def settle(fleet: Fleet, seconds: float, dt: float = 1.0) -> PackSnapshot:
    """Run for ``seconds`` and return the last snapshot."""
    *_, last = run(fleet, seconds, dt)
    return last


# --- the offline hour ------------------------------------------------------------------------


def test_every_reading_of_the_hour_is_valid_and_what_the_dbc_decodes(hour: Hour) -> None:
    """The simulator feeds the pipeline: all 90,000 readings must pass the receiver's schema,
    and a payload must be exactly what a gateway decoding the DBC's frames reports."""
    for line in hour.lines:
        Reading.model_validate_json(line)
    for line in hour.lines[::45]:  # 2,000 through cantools: the full set would take ~10 s
        payload = orjson.loads(line)["payload"]
        assert decode(encode(payload)) == payload


def test_soc_follows_the_integrated_current_with_the_packs_capacity(hour: Hour) -> None:
    """Coulomb counting: SOC changes by the charge moved divided by the capacity, at every reading.
    The tolerance covers the 0.1 % / 0.1 A quantisation and the cells' ~1 % capacity spread,
    which acts on all the charge that flowed in either direction."""
    soc, current = hour.signals["battery_soc"], hour.signals["battery_current"]
    to_pct = DT / 3600.0 / NOMINAL_AH * 100.0
    charge_pct = np.cumsum(current[1:], axis=0) * to_pct
    throughput_pct = np.cumsum(np.abs(current[1:]), axis=0) * to_pct
    moved = soc[1:] - soc[0]
    assert np.abs(charge_pct).max() > 3.0, "the hour should move a few percent of charge"
    np.testing.assert_array_less(np.abs(moved - charge_pct), 0.1 + 0.02 * throughput_pct)


def test_pack_voltage_lies_between_96_times_its_weakest_and_strongest_cell(hour: Hour) -> None:
    """96 cells in series: the pack voltage is their sum, so it is bounded by the extremes x 96."""
    s = hour.signals
    slack = 0.05 + CELLS_IN_SERIES * 0.0005  # the 0.1 V and 1 mV quantisation
    assert np.all(s["battery_voltage"] >= CELLS_IN_SERIES * s["cell_voltage_min"] - slack)
    assert np.all(s["battery_voltage"] <= CELLS_IN_SERIES * s["cell_voltage_max"] + slack)


def test_voltage_rises_with_current_by_the_internal_resistance(hour: Hour) -> None:
    """Within any minute of driving the OCV barely moves, so V = E + I*R: the fitted slope is the
    pack's resistance (96 x R0 at least, up to R0+R1 and the cold), never negative."""
    cell = CellParameters()
    nominal = CELLS_IN_SERIES * cell.r0_ohm
    slopes = []
    voltage, current = hour.signals["battery_voltage"], hour.signals["battery_current"]
    for start in range(0, len(voltage) - 300, 300):
        for v in range(5):
            i = current[start : start + 300, v]
            if np.ptp(i) > 50.0:
                slopes.append(np.polyfit(i, voltage[start : start + 300, v], 1)[0])
    assert len(slopes) > 20
    assert np.percentile(slopes, 5) > 0.8 * nominal
    assert np.percentile(slopes, 95) < 6.0 * CELLS_IN_SERIES * (cell.r0_ohm + cell.r1_ohm)


def test_values_stay_within_the_cells_limits(hour: Hour) -> None:
    """The BMS keeps every cell in its window; the rate limits bound the current."""
    s = hour.signals
    assert s["cell_voltage_min"].min() >= LIMITS.cell_v_min - 0.0005
    assert s["cell_voltage_max"].max() <= LIMITS.cell_v_max + 0.0005
    assert np.all((s["battery_soc"] >= 0) & (s["battery_soc"] <= 100))
    assert np.all(s["battery_current"] >= -LIMITS.max_discharge_c * NOMINAL_AH - 0.05)
    assert np.all(s["battery_current"] <= LIMITS.max_charge_c * NOMINAL_AH + 0.05)
    assert np.all(s["cell_temp_min"] <= s["cell_temp_max"])
    assert np.all(s["cell_voltage_min"] <= s["cell_voltage_max"])


def test_cell_spread_looks_like_a_real_pack(hour: Hour) -> None:
    """Cells differ by millivolts and tenths of a degree, not by nothing and not by volts."""
    s = hour.signals
    v_spread = s["cell_voltage_max"] - s["cell_voltage_min"]
    t_spread = s["cell_temp_max"] - s["cell_temp_min"]
    assert 0.002 <= np.median(v_spread) <= 0.05
    assert v_spread.max() <= 0.15
    assert 0.3 <= np.median(t_spread) <= 4.0


def test_the_hour_has_driving_regen_and_rest(hour: Hour) -> None:
    """A realistic hour mixes discharge, regenerative braking and standstill, not one constant current."""
    current = hour.signals["battery_current"]
    assert np.mean(current < -5.0) > 0.2
    assert np.mean(current > 5.0) > 0.01
    assert np.mean(current == 0.0) > 0.02
    assert current.min() < -100.0


# --- one behaviour at a time -----------------------------------------------------------------


def test_pack_voltage_is_the_sum_of_its_cells_and_soc_their_mean() -> None:
    """The BMS view is an aggregate of the 96 cells the model simulates, not a separate guess."""
    fleet = Fleet(4, seed=1)
    for snap in run(fleet, 120.0, DT):
        np.testing.assert_allclose(snap.voltage, fleet.cell_voltages().sum(axis=1), rtol=1e-12)
        np.testing.assert_allclose(snap.soc, fleet.cell_soc().mean(axis=1), rtol=1e-12)
        np.testing.assert_array_equal(snap.cell_voltage_min, fleet.cell_voltages().min(axis=1))


def test_voltage_sags_under_discharge_and_rises_under_charge_and_regen() -> None:
    """Terminal voltage departs from OCV in the direction of the current: down when the pack
    delivers, up when it is charged or recuperates, by about I x R."""
    fleet = Fleet(6, seed=2, ambient_c=20.0, initial_soc_pct=60.0)
    fleet.hold(Activity.DRIVING, Route.URBAN)
    snaps = list(run(fleet, 1800.0))
    current = np.concatenate([s.current for s in snaps])
    gap = np.concatenate([s.voltage - s.open_circuit_voltage for s in snaps])
    strong = np.abs(current) > 40.0
    assert np.count_nonzero(strong & (current > 0)) > 50, "urban driving must recuperate"
    assert np.mean(np.sign(gap[strong]) == np.sign(current[strong])) > 0.95
    ratio = gap[strong] / current[strong]
    assert np.median(ratio) > CELLS_IN_SERIES * CellParameters().r0_ohm * 0.9
    fleet.hold(Activity.CHARGING)
    charging = [s for s in run(fleet, 600.0)][60:]
    assert all(np.all(s.voltage > s.open_circuit_voltage) for s in charging)
    assert all(np.all(s.current > 20.0) for s in charging)


def test_resistance_rises_in_the_cold() -> None:
    """The same drive sags a cold pack more: lithium-ion resistance roughly doubles near 0 °C."""

    def sag_per_amp(ambient_c: float) -> float:
        fleet = Fleet(4, seed=3, ambient_c=ambient_c, initial_soc_pct=70.0, variation=Variation.none())
        fleet.hold(Activity.DRIVING, Route.HIGHWAY)
        snaps = list(run(fleet, 300.0))
        gap = np.concatenate([s.open_circuit_voltage - s.voltage for s in snaps])
        current = np.concatenate([-s.current for s in snaps])
        return float(np.median(gap[current > 30.0] / current[current > 30.0]))

    assert sag_per_amp(-5.0) > 1.8 * sag_per_amp(25.0)


def test_temperatures_rise_under_sustained_load_and_relax_when_parked() -> None:
    """I²R heats the modules on a long fast drive; parked, they cool back towards ambient."""
    fleet = Fleet(3, seed=4, ambient_c=18.0, initial_soc_pct=95.0)
    before = fleet.step(1.0).cell_temp_max
    fleet.hold(Activity.DRIVING, Route.HIGHWAY)
    hot = settle(fleet, 3600.0).cell_temp_max
    assert np.all(hot > before + 1.0)
    assert np.all(fleet.speed_mps > 10.0)  # still on the motorway
    assert np.all(fleet.module_temperatures().mean(axis=1) > 18.0 + 1.0)  # the modules, not just a cell
    fleet.hold(Activity.PARKED)
    cooled = settle(fleet, 4 * 3600.0).cell_temp_max
    assert np.all(cooled - 18.0 < 0.5 * (hot - 18.0))
    assert np.all(fleet.speed_mps == 0.0)


def test_dc_charging_heats_the_pack_and_the_coolant_keeps_it_in_check() -> None:
    """A 50 kW session is the hardest sustained load: temperatures rise, but cooling holds them."""
    fleet = Fleet(2, seed=5, ambient_c=25.0, initial_soc_pct=10.0)
    fleet.hold(Activity.CHARGING, charger_w=50_000.0)
    temps = [s.cell_temp_max for s in run(fleet, 2400.0)]
    assert np.all(temps[-1] > temps[0] + 3.0)
    assert np.all(np.max(temps, axis=0) < 45.0)


def test_protection_limits_the_current_near_empty() -> None:
    """Driving on an almost empty pack: the BMS derates discharge so no cell leaves its window."""
    fleet = Fleet(3, seed=6, ambient_c=20.0, initial_soc_pct=4.0)
    fleet.hold(Activity.DRIVING, Route.HIGHWAY)
    snaps = list(run(fleet, 1800.0))
    assert min(s.cell_voltage_min.min() for s in snaps) >= LIMITS.cell_v_min - 1e-4
    assert min(s.soc.min() for s in snaps) >= 0.0
    assert np.all(fleet.cell_soc() >= 0.0)
    assert max(float(-s.current.min()) for s in snaps[-60:]) < max(float(-s.current.min()) for s in snaps[:120])


def test_cc_cv_charging_tapers_at_the_top_and_never_overcharges() -> None:
    """CC-CV: the charger's current until the highest cell reaches 4.15 V, then a tapering current
    that holds it there; no cell ever exceeds the limit, SOC never 100 % plus."""
    fleet = Fleet(2, seed=7, ambient_c=22.0, initial_soc_pct=70.0)
    fleet.hold(Activity.CHARGING, charger_w=50_000.0)
    snaps = list(run(fleet, 3600.0))
    cell_max = np.array([s.cell_voltage_max for s in snaps])
    current = np.array([s.current for s in snaps])
    # The BMS aims each step's current to land on the limit; a step that crosses a point of the
    # OCV table can land a few microvolts past it, far below the DBC's 1 mV resolution.
    assert cell_max.max() <= LIMITS.cv_voltage + 1e-4
    cv = cell_max > LIMITS.cv_voltage - 1e-4
    assert np.any(cv[:, 0])
    first_cv = int(np.argmax(cv[:, 0]))
    assert first_cv > 100
    rated = min(50_000.0 / NOMINAL_PACK_V, LIMITS.max_charge_c * NOMINAL_AH)
    np.testing.assert_allclose(current[: first_cv - 1, 0], rated)  # constant current before
    assert current[-1, 0] < 0.3 * current[first_cv - 5, 0]  # tapered after
    assert np.all(np.diff(current[first_cv + 5 :, 0]) <= 1e-6)
    assert np.all(fleet.cell_soc() <= 100.0)


def test_regeneration_into_a_full_pack_is_refused() -> None:
    """Braking with a full pack: the BMS allows no charge current (friction brakes do the work)."""
    fleet = Fleet(3, seed=8, ambient_c=20.0, initial_soc_pct=99.9)
    fleet.hold(Activity.DRIVING, Route.URBAN)
    snaps = list(run(fleet, 300.0, DT))
    assert max(s.cell_voltage_max.max() for s in snaps) <= LIMITS.cell_v_max + 1e-4
    assert np.all(fleet.cell_soc() <= 100.0)


def test_spread_between_cells_comes_from_the_variation() -> None:
    """Identical cells stay identical; the seeded manufacturing spread is what separates min and max."""
    uniform = Fleet(2, seed=9, variation=Variation.none())
    uniform.hold(Activity.PARKED)
    snap = settle(uniform, 10.0)
    np.testing.assert_allclose(snap.cell_voltage_max - snap.cell_voltage_min, 0.0, atol=1e-12)
    np.testing.assert_allclose(snap.cell_temp_max - snap.cell_temp_min, 0.0, atol=1e-12)
    spread = Fleet(2, seed=9)
    spread.hold(Activity.PARKED)
    snap = settle(spread, 10.0)
    assert np.all(snap.cell_voltage_max - snap.cell_voltage_min > 0.002)
    assert np.all(snap.cell_temp_max - snap.cell_temp_min > 0.2)


def test_parked_vehicles_rest_at_their_open_circuit_voltage() -> None:
    """No current, no sag: after the RC transient decays the pack reads its OCV."""
    fleet = Fleet(3, seed=10, variation=Variation.none(), ambient_c=25.0, initial_soc_pct=50.0)
    fleet.hold(Activity.PARKED)
    snap = settle(fleet, 600.0)
    assert np.all(snap.current == 0.0)
    expected = CELLS_IN_SERIES * open_circuit_voltage(np.float64(50.0), 25.0)
    np.testing.assert_allclose(snap.voltage, expected, atol=0.05)


def test_a_day_in_service_drives_parks_and_charges() -> None:
    """Left to its duty cycle, a fleet drives, pauses and goes to charge when its packs run low."""
    fleet = Fleet(20, seed=11, initial_soc_pct=35.0)
    seen = np.zeros((20, 3), dtype=bool)
    for _ in range(6 * 3600 // 5):
        fleet.step(5.0)
        seen[np.arange(20), fleet.activity] = True
    assert seen[:, Activity.DRIVING].all()
    assert seen[:, Activity.PARKED].mean() > 0.8
    assert seen[:, Activity.CHARGING].mean() > 0.3


def test_mixed_fleet_uses_every_capacity_variant() -> None:
    """``capacity_ah=None`` gives a fleet of 60, 94 and 120 Ah packs, each counting with its own capacity."""
    fleet = Fleet(30, seed=12, capacity_ah=None)
    assert set(fleet.capacity_ah) == set(CAPACITY_VARIANTS_AH)


def test_same_seed_gives_identical_trajectories_and_other_seeds_differ() -> None:
    """Offline output is byte-identical per seed only if the model is deterministic per seed."""

    def trajectory(seed: int) -> np.ndarray:
        fleet = Fleet(5, seed=seed)
        return np.array([[getattr(s, f) for f in PackSnapshot.__dataclass_fields__] for s in run(fleet, 60.0, DT)])

    np.testing.assert_array_equal(trajectory(42), trajectory(42))
    assert not np.array_equal(trajectory(42), trajectory(43))


def test_fleet_satisfies_the_simulators_protocol() -> None:
    """The simulator depends only on BatteryFleet, so models can be swapped."""
    fleet: BatteryFleet = Fleet(3, seed=0)
    assert fleet.n_vehicles == 3
    assert fleet.step(0.2).soc.shape == (3,)


@pytest.mark.parametrize(
    ("kwargs", "dt"),
    [({"n_vehicles": 0}, 0.2), ({"n_vehicles": 1, "capacity_ah": 0.0}, 0.2), ({"n_vehicles": 1}, 0.0)],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, float], dt: float) -> None:
    """Nonsense in (no vehicles, no capacity, time standing still) is an error, not garbage out."""
    with pytest.raises(ValueError):
        Fleet(seed=0, **kwargs).step(dt)  # type: ignore[arg-type]


def test_release_returns_the_fleet_to_its_duty_cycle() -> None:
    """After an experiment the fleet goes back to its own schedule."""
    fleet = Fleet(10, seed=13)
    fleet.hold(Activity.PARKED)
    settle(fleet, 600.0, 5.0)
    assert np.all(fleet.activity == Activity.PARKED)
    fleet.release()
    settle(fleet, 3 * 3600.0, 5.0)
    assert np.any(fleet.activity != Activity.PARKED)
