"""The battery model: deterministic, physically plausible, and consistent with its own physics."""

from __future__ import annotations

import numpy as np
import pytest

from src.generator.battery_model import (
    CELL_T_LIMITS,
    CELL_V_LIMITS,
    OCV_SOC_PCT,
    BatteryFleet,
    Fleet,
    PackSnapshot,
    open_circuit_voltage,
)


def run(fleet: Fleet, steps: int, dt_s: float = 0.2) -> list[PackSnapshot]:
    return [fleet.step(dt_s) for _ in range(steps)]


def arrays(snapshot: PackSnapshot) -> dict[str, np.ndarray]:
    return {name: getattr(snapshot, name) for name in snapshot.__dataclass_fields__}


def test_same_seed_gives_identical_trajectories() -> None:
    """Offline output is byte-identical per seed only if the model is deterministic per seed."""
    a, b = run(Fleet(7, seed=42), 200), run(Fleet(7, seed=42), 200)
    for snap_a, snap_b in zip(a, b, strict=True):
        for name, values in arrays(snap_a).items():
            np.testing.assert_array_equal(values, getattr(snap_b, name))


def test_different_seeds_give_different_fleets() -> None:
    """A seed must actually change the fleet, or --seed would be meaningless."""
    a, b = Fleet(7, seed=1).step(0.2), Fleet(7, seed=2).step(0.2)
    assert not np.array_equal(a.soc, b.soc)
    assert not np.array_equal(a.voltage, b.voltage)


def test_values_stay_within_physical_bounds_over_an_hour() -> None:
    """Every reading must pass the receiver's validation, even after long runs that drain packs."""
    fleet = Fleet(20, seed=3)
    for snap in run(fleet, 720, dt_s=5.0):
        assert snap.soc.shape == (20,)
        assert np.all((snap.soc >= 0) & (snap.soc <= 100))
        assert np.all(snap.cell_voltage_min >= CELL_V_LIMITS[0])
        assert np.all(snap.cell_voltage_max <= CELL_V_LIMITS[1])
        assert np.all(snap.cell_voltage_min <= snap.cell_voltage_max)
        assert np.all(snap.cell_temp_min <= snap.cell_temp_max)
        assert np.all((snap.cell_temp_min >= CELL_T_LIMITS[0]) & (snap.cell_temp_max <= CELL_T_LIMITS[1]))
        assert np.all(np.abs(snap.current) <= 400.0)
        # A pack of 96 cells: its voltage lies between the cell extremes times 96.
        assert np.all(snap.voltage >= 96 * snap.cell_voltage_min - 1e-9)
        assert np.all(snap.voltage <= 96 * snap.cell_voltage_max + 1e-9)


def test_fleet_mostly_discharges_with_some_regen_and_parking() -> None:
    """The drive model must produce the mix real telemetry has, not one constant current."""
    currents = np.concatenate([s.current for s in run(Fleet(50, seed=5), 600, dt_s=1.0)])
    assert np.mean(currents < 0) > 0.5
    assert np.any(currents > 0)
    assert np.any(currents == 0)


def test_soc_follows_coulomb_counting() -> None:
    """SOC changes by the charge the reported current moved: the model's SOC and current agree."""
    fleet = Fleet(10, seed=11, capacity_ah=94.0)
    first = fleet.step(1.0)
    snaps = run(fleet, 300, dt_s=1.0)
    charge_ah = sum(s.current for s in snaps) * 1.0 / 3600.0
    expected = first.soc + charge_ah / 94.0 * 100.0
    np.testing.assert_allclose(snaps[-1].soc, expected, atol=0.01)
    discharging = charge_ah < -0.1
    assert discharging.any()
    assert np.all(snaps[-1].soc[discharging] < first.soc[discharging])


def test_voltage_sags_under_discharge_and_rises_under_regen() -> None:
    """Terminal voltage = OCV + I*R: below the open-circuit voltage whenever current is drawn."""
    snaps = run(Fleet(30, seed=8), 300, dt_s=1.0)
    current = np.concatenate([s.current for s in snaps])
    sag = np.concatenate([s.voltage - s.open_circuit_voltage for s in snaps])
    assert np.all(sag[current < 0] < 0)
    assert np.all(sag[current > 0] > 0)
    np.testing.assert_allclose(sag[current == 0], 0.0, atol=1e-9)


def test_cells_heat_under_load() -> None:
    """I^2*R heating: a fleet under sustained load ends warmer than it started."""
    fleet = Fleet(30, seed=9)
    start = fleet.step(1.0)
    end = run(fleet, 1200, dt_s=1.0)[-1]
    assert end.cell_temp_max.mean() > start.cell_temp_max.mean()


def test_ocv_curve_is_monotonic_nmc_between_3_0_and_4_2_volts() -> None:
    """The OCV table drives both voltage and its sag; it must be a plausible NMC curve."""
    ocv = open_circuit_voltage(np.linspace(0, 100, 101))
    assert ocv[0] == pytest.approx(3.0) and ocv[-1] == pytest.approx(4.2)
    assert np.all(np.diff(ocv) > 0)
    assert OCV_SOC_PCT[0] == 0 and OCV_SOC_PCT[-1] == 100


def test_fleet_satisfies_the_protocol_later_models_implement() -> None:
    """Callers depend on BatteryFleet, so a full physics model can replace Fleet unchanged."""
    fleet: BatteryFleet = Fleet(3, seed=0)
    assert fleet.n_vehicles == 3
    assert fleet.step(0.2).current.shape == (3,)


@pytest.mark.parametrize(("n", "capacity", "dt"), [(0, 94.0, 0.2), (2, 0.0, 0.2), (2, 94.0, 0.0)])
def test_invalid_arguments_are_refused(n: int, capacity: float, dt: float) -> None:
    """Nonsense sizes fail loudly at once rather than producing NaN telemetry."""
    with pytest.raises(ValueError):
        Fleet(n, seed=0, capacity_ah=capacity).step(dt)
