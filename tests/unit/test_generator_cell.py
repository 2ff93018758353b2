"""The cell's equivalent circuit: each equation checked against its closed-form solution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.common.settings import AggregatorSettings
from src.generator.cell import (
    OCV_25C_V,
    CellParameters,
    ocv_and_slope,
    open_circuit_voltage,
    rc_decay,
    relax_rc,
    resistance_factor,
    simulate_cell,
    soc_change_pct,
    step_resistance,
)

CELL = CellParameters()


def test_the_analytics_default_ocv_curve_is_the_simulated_cells() -> None:
    """ANALYTICS_OCV_CURVE_V's default reads SOC off the very curve the simulated cells follow (same grid, same
    volts), so the simulator's imbalance and the analytics' reading of it cannot drift apart."""
    default = AggregatorSettings.model_fields["analytics_ocv_curve_v"].default
    np.testing.assert_allclose(default, OCV_25C_V, atol=1e-9)


def test_ocv_follows_the_nmc_table_and_rises_with_soc() -> None:
    """OCV(SOC) is the table at its points, linear between them, increasing, and clamped to the usable window."""
    soc = np.linspace(0.0, 100.0, 1001)
    ocv = open_circuit_voltage(soc)
    assert np.all(np.diff(ocv) > 0)
    np.testing.assert_allclose(open_circuit_voltage(np.arange(0.0, 101.0, 5.0)), OCV_25C_V, atol=1e-9)
    assert open_circuit_voltage(np.float64(2.5)) == pytest.approx((OCV_25C_V[0] + OCV_25C_V[1]) / 2)
    assert open_circuit_voltage(np.float64(-5.0)) == pytest.approx(OCV_25C_V[0])
    assert open_circuit_voltage(np.float64(105.0)) == pytest.approx(OCV_25C_V[-1])


def test_ocv_slope_is_the_derivative_of_ocv() -> None:
    """The BMS's step resistance relies on the slope being the true dOCV/dSOC, at any temperature."""
    soc = np.array([1.0, 12.3, 47.0, 81.9, 97.5])
    for temp_c in (-10.0, 25.0, 40.0):
        _, slope = ocv_and_slope(soc, temp_c)
        h = 1e-4
        numeric = (open_circuit_voltage(soc + h, temp_c) - open_circuit_voltage(soc - h, temp_c)) / (2 * h)
        np.testing.assert_allclose(slope, numeric, rtol=1e-6)


def test_entropic_term_moves_ocv_with_temperature_by_fractions_of_a_millivolt_per_kelvin() -> None:
    """dOCV/dT is negative when empty and positive when full, and small: -0.4 to +0.1 mV/K."""
    empty = open_circuit_voltage(np.float64(0.0), 35.0) - open_circuit_voltage(np.float64(0.0), 25.0)
    full = open_circuit_voltage(np.float64(100.0), 35.0) - open_circuit_voltage(np.float64(100.0), 25.0)
    assert empty == pytest.approx(-0.004)
    assert full == pytest.approx(0.001)


def test_resistance_rises_in_the_cold_and_near_empty() -> None:
    """Arrhenius with 28 kJ/mol: x2.8 at 0 °C and x4.5 at -10 °C; x1.8 at 0 % SOC, fading out by ~20 %."""
    assert resistance_factor(50.0, 25.0, CELL) == pytest.approx(1.0, abs=0.01)
    assert resistance_factor(50.0, 0.0, CELL) == pytest.approx(2.8, rel=0.02)
    assert resistance_factor(50.0, -10.0, CELL) == pytest.approx(4.5, rel=0.02)
    assert resistance_factor(50.0, 45.0, CELL) < 0.6
    assert resistance_factor(0.0, 25.0, CELL) == pytest.approx(1.8, rel=0.01)
    assert resistance_factor(20.0, 25.0, CELL) < 1.07


def test_capacity_variants_scale_resistance_inversely() -> None:
    """A 60 Ah cell of the same chemistry has less electrode area, so proportionally more resistance."""
    small, large = CellParameters.for_capacity(60.0), CellParameters.for_capacity(120.0)
    assert small.r0_ohm == pytest.approx(CELL.r0_ohm * 94.0 / 60.0)
    assert large.r1_ohm == pytest.approx(CELL.r1_ohm * 94.0 / 120.0)
    assert small.c1_farad == pytest.approx(small.tau1_s / small.r1_ohm)
    with pytest.raises(ValueError):
        CellParameters.for_capacity(0.0)


def test_rc_pair_follows_its_exact_step_response() -> None:
    """Under a constant current V1 approaches I*R1 as 1 - exp(-t/tau), whatever the step length."""
    for dt in (0.2, 1.0, 10.0):
        v1, decay = 0.0, rc_decay(dt, CELL.tau1_s)
        for k in range(1, 31):
            v1 = float(relax_rc(v1, -100.0, CELL.r1_ohm, decay))
            expected = -100.0 * CELL.r1_ohm * (1.0 - math.exp(-k * dt / CELL.tau1_s))
            assert v1 == pytest.approx(expected, rel=1e-12)


def test_simulated_cell_counts_coulombs_and_relaxes_to_its_ocv() -> None:
    """A 1C discharge for 30 min takes exactly 50 % off; after an hour's rest the cell reads its OCV."""
    current = np.r_[np.full(1800, -CELL.capacity_ah), np.zeros(3600)]
    trace = simulate_cell(current, 1.0, CELL, soc0_pct=90.0)
    assert trace.soc_pct[1799] == pytest.approx(40.0, abs=1e-9)
    assert trace.soc_pct[-1] == pytest.approx(40.0, abs=1e-9)
    assert trace.voltage_v[1799] < open_circuit_voltage(np.float64(40.0)) - 0.05  # sagging under 1C
    assert trace.voltage_v[-1] == pytest.approx(float(open_circuit_voltage(np.float64(40.0))), abs=1e-6)
    assert abs(trace.v1_v[-1]) < 1e-9


def test_step_resistance_predicts_the_end_of_step_voltage() -> None:
    """V_end = OCV + v1*decay + I*R_step exactly, within a table segment: what lets the BMS land on a limit."""
    dt, soc, v1, current = 1.0, 52.0, -0.02, 150.0
    factor = float(resistance_factor(soc, 25.0, CELL))
    r0, r1 = CELL.r0_ohm * factor, CELL.r1_ohm * factor
    ocv, slope = ocv_and_slope(soc)
    decay = rc_decay(dt, CELL.tau1_s)
    predicted = ocv + v1 * decay + current * step_resistance(r0, r1, slope, CELL.capacity_ah, dt, decay)
    soc_end = soc + float(soc_change_pct(current, dt, CELL.capacity_ah))
    actual = open_circuit_voltage(soc_end) + current * r0 + relax_rc(v1, current, r1, decay)
    assert predicted == pytest.approx(float(actual), abs=1e-12)
