"""One lithium-ion cell as a Thevenin equivalent circuit: OCV(SOC, T), a series resistance and one RC pair::

    V = OCV(SOC, T) + I * R0(SOC, T) + V1        dV1/dt = I / C1 - V1 / (R1 * C1)
    dSOC/dt = 100 * I / (3600 * Q)                (I in A, positive = charge; Q in Ah)

R0 and R1 rise in the cold (Arrhenius) and towards empty; the RC time constant is fixed, so
C1 follows R1. Pure functions of broadcastable numpy arrays. Within a step the current is
held constant, so the RC update is the exact solution over the step, not an Euler step.
Parameters and the PyBaMM check: docs/battery-model.md, docs/cell-model-validation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Values = FloatArray | float  # an array of any shape, or one value (np.float64 is a float)

# Open-circuit voltage of an NMC/graphite cell at 25 °C, on a uniform 5 % SOC grid (0..100 %),
# shaped like the curves published for automotive NMC cells: steep below 10 %, a gentle
# slope through the middle, rising again above 80 %. 0 % and 100 % are the BMS's usable
# window (3.30 V and 4.17 V at rest), not the chemistry's absolute limits.
OCV_GRID_STEP_PCT = 5.0
OCV_25C_V: FloatArray = np.array(
    [3.300, 3.450, 3.530, 3.580, 3.610, 3.630, 3.650, 3.670, 3.690, 3.710, 3.740,
     3.770, 3.810, 3.850, 3.890, 3.930, 3.970, 4.010, 4.060, 4.110, 4.170]
)  # fmt: skip
# Entropic coefficient dOCV/dT (V/K): negative when empty, slightly positive when full. Measured NMC
# curves wiggle around a straight line in SOC; the line is enough for a pack's temperature spread.
DOCV_DT_EMPTY_V_PER_K = -4e-4
DOCV_DT_FULL_V_PER_K = 1e-4
_DOCV_DT_PER_PCT = (DOCV_DT_FULL_V_PER_K - DOCV_DT_EMPTY_V_PER_K) / 100.0

REFERENCE_TEMP_C = 25.0
KELVIN = 273.15
GAS_CONSTANT = 8.314  # J/(mol K)


@dataclass(frozen=True)
class CellParameters:
    """A cell's nominal parameters at 25 °C and mid SOC (before manufacturing spread).

    The defaults are a 94 Ah prismatic NMC cell like the BMW i3's (Samsung SDI): about
    0.75 mΩ of instant resistance and 0.45 mΩ more over a ~40 s diffusion transient.
    """

    capacity_ah: float = 94.0
    r0_ohm: float = 0.00075
    r1_ohm: float = 0.00045
    tau1_s: float = 40.0
    activation_energy_j_per_mol: float = 28_000.0  # resistance x2.8 at 0 °C, x4.5 at -10 °C
    low_soc_rise: float = 0.8  # resistance x1.8 at 0 % SOC, fading out by ~20 %
    low_soc_scale_pct: float = 8.0

    @classmethod
    def for_capacity(cls, capacity_ah: float) -> CellParameters:
        """The same chemistry in another size: resistance scales inversely with capacity (more electrode area)."""
        if capacity_ah <= 0:
            raise ValueError("capacity must be positive")
        reference = cls()
        scale = reference.capacity_ah / capacity_ah
        return cls(capacity_ah=capacity_ah, r0_ohm=reference.r0_ohm * scale, r1_ohm=reference.r1_ohm * scale)

    @property
    def c1_farad(self) -> float:
        return self.tau1_s / self.r1_ohm


def _segments(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Intercept and slope of each grid segment, in units of grid steps: value = a[i] + b[i] * position."""
    slope = np.diff(values)
    intercept = values[:-1] - slope * np.arange(len(slope))
    return intercept, slope


_OCV_A, _OCV_B = _segments(OCV_25C_V)
_TOP_POSITION = (len(OCV_25C_V) - 1) * (1.0 - 1e-12)  # 100 % falls in the last segment, not past it


def open_circuit_voltage(soc_pct: Values, temp_c: Values = REFERENCE_TEMP_C) -> FloatArray:
    """Cell OCV (V) at ``soc_pct`` (%) and ``temp_c`` (°C): the 25 °C curve plus the entropic term."""
    return ocv_and_slope(soc_pct, temp_c)[0]


def ocv_and_slope(soc_pct: Values, temp_c: Values = REFERENCE_TEMP_C) -> tuple[FloatArray, FloatArray]:
    """Cell OCV (V) and its slope dOCV/dSOC (V per %) at ``soc_pct`` and ``temp_c``.

    Linear interpolation in the tables above, SOC clamped to 0..100 %; the slope feeds
    :func:`step_resistance`. Segments are found by truncation on the uniform grid, faster than
    ``np.interp`` (docs/battery-model.md, "Speed").
    """
    soc = np.minimum(np.maximum(soc_pct, 0.0), 100.0)
    position = np.minimum(soc * (1.0 / OCV_GRID_STEP_PCT), _TOP_POSITION)
    index = position.astype(np.intp)
    delta_t = np.asarray(temp_c) - REFERENCE_TEMP_C
    table_slope = _OCV_B.take(index)
    ocv = _OCV_A.take(index) + table_slope * position + (DOCV_DT_EMPTY_V_PER_K + _DOCV_DT_PER_PCT * soc) * delta_t
    slope: FloatArray = table_slope * (1.0 / OCV_GRID_STEP_PCT) + _DOCV_DT_PER_PCT * delta_t
    return ocv, slope


def step_resistance(
    r0_ohm: Values, r1_ohm: Values, ocv_slope: Values, capacity_ah: Values, dt_s: float, decay: float
) -> FloatArray:
    """How much a cell's end-of-step voltage rises per ampere held over the step (ohm).

    V_end = OCV + v1 * decay + I * (R0 + R1 * (1 - decay) + dOCV/dSOC * dSOC/dI): the
    instant drop, the part of the RC pair that charges within the step, and the OCV the
    step's own charge adds. The BMS uses it to pick a current that lands exactly on a
    voltage limit at the end of the step rather than overshooting it.
    """
    result: FloatArray = np.asarray(r0_ohm) + np.asarray(r1_ohm) * (1.0 - decay)
    result += np.asarray(ocv_slope) * soc_change_pct(1.0, dt_s, capacity_ah)
    return result


def resistance_factor(soc_pct: Values, temp_c: Values, params: CellParameters) -> FloatArray:
    """How much R0 and R1 exceed their 25 °C mid-SOC values: Arrhenius in temperature, a rise near empty."""
    kelvin = np.asarray(temp_c) + KELVIN
    arrhenius = np.exp(
        (params.activation_energy_j_per_mol / GAS_CONSTANT) * (1.0 / kelvin - 1.0 / (REFERENCE_TEMP_C + KELVIN))
    )
    low_soc = 1.0 + params.low_soc_rise * np.exp(-np.asarray(soc_pct) * (1.0 / params.low_soc_scale_pct))
    result: FloatArray = arrhenius * low_soc
    return result


def rc_decay(dt_s: float, tau_s: float) -> float:
    """The fraction of the RC voltage left after ``dt_s``: exp(-dt / tau)."""
    return float(np.exp(-dt_s / tau_s))


def relax_rc(v1: Values, current_a: Values, r1_ohm: Values, decay: float) -> FloatArray:
    """The RC voltage after one step at constant current: the exact solution of dV1/dt = I/C1 - V1/(R1 C1)."""
    result: FloatArray = np.asarray(v1) * decay + np.asarray(current_a) * r1_ohm * (1.0 - decay)
    return result


def soc_change_pct(current_a: Values, dt_s: float, capacity_ah: Values) -> FloatArray:
    """Coulomb counting: the SOC change (percentage points) of ``dt_s`` at ``current_a``."""
    result: FloatArray = np.asarray(current_a) * (dt_s * 100.0 / 3600.0) / capacity_ah
    return result


@dataclass(frozen=True)
class CellTrace:
    """One cell's response to a current profile, sampled at the end of each step."""

    soc_pct: FloatArray
    voltage_v: FloatArray
    v1_v: FloatArray


def simulate_cell(
    current_a: FloatArray,
    dt_s: float,
    params: CellParameters,
    soc0_pct: float,
    temp_c: float = REFERENCE_TEMP_C,
) -> CellTrace:
    """Drive one cell through ``current_a`` (one value per step, positive = charge) at a fixed temperature.

    The same equations, in the same order, as the fleet model uses for each of its cells:
    the resistances and the OCV's slope are taken at the start of the step, SOC and the RC
    voltage advance over it, and the terminal voltage is taken at its end with that step's
    current still flowing. Used to validate the model against an independent implementation.
    """
    decay = rc_decay(dt_s, params.tau1_s)
    soc = np.empty(len(current_a))
    voltage = np.empty(len(current_a))
    v1_trace = np.empty(len(current_a))
    state_soc, v1 = float(soc0_pct), 0.0
    for k, current in enumerate(np.asarray(current_a, dtype=np.float64)):
        factor = float(resistance_factor(state_soc, temp_c, params))
        ocv, slope = (float(x) for x in ocv_and_slope(state_soc, temp_c))
        v1 = float(relax_rc(v1, current, params.r1_ohm * factor, decay))
        moved_pct = float(soc_change_pct(current, dt_s, params.capacity_ah))
        state_soc = min(max(state_soc + moved_pct, 0.0), 100.0)
        ocv += slope * moved_pct
        soc[k] = state_soc
        v1_trace[k] = v1
        voltage[k] = ocv + current * params.r0_ohm * factor + v1
    return CellTrace(soc_pct=soc, voltage_v=voltage, v1_v=v1_trace)
