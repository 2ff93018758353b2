"""A simple, vectorised model of a fleet's traction batteries.

Callers see only :class:`Fleet` (``step(dt_s) -> PackSnapshot``) and the
:class:`BatteryFleet` protocol, so a later full physics model (equivalent-circuit cells
with RC pairs, a proper thermal network, drive cycles, charging) can replace the
internals without touching the simulator. What is here is deliberately modest but
physically consistent, so that the telemetry looks like a battery's:

* 96 cells in series per vehicle, each with its own capacity, resistance and cooling
  (seeded manufacturing spread), so cell min/max differ as they do in real packs;
* open-circuit voltage from an NMC OCV(SOC) table; terminal voltage is OCV + I*R, so
  the pack sags under discharge and rises under regen;
* current from a random but smooth power demand (an Ornstein-Uhlenbeck process:
  mostly discharge, some regen) with parked periods (a two-state Markov switch);
* SOC by coulomb counting, temperatures rising with I^2*R and relaxing to ambient.

Everything is arrays of shape ``(n_vehicles,)`` or ``(n_vehicles, CELLS_IN_SERIES)`` and
driven by one seeded generator, so a run is deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

CELLS_IN_SERIES = 96

# NMC open-circuit voltage per cell against SOC (%): steep at both ends, a gentle slope between.
OCV_SOC_PCT: FloatArray = np.array([0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 100.0])
OCV_VOLTS: FloatArray = np.array([3.00, 3.30, 3.45, 3.53, 3.58, 3.65, 3.71, 3.77, 3.84, 3.92, 4.00, 4.08, 4.13, 4.20])

CELL_RESISTANCE_OHM = 0.0008  # DC internal resistance of a ~94 Ah prismatic cell at 25 °C
CELL_HEAT_CAPACITY_J_PER_K = 2000.0  # about 2 kg of cell at ~1000 J/(kg K)
CELL_COOLING_W_PER_K = 1.1  # thermal time constant of roughly half an hour
MAX_DISCHARGE_A = 400.0
MAX_CHARGE_A = 250.0  # regen limit
CELL_V_LIMITS = (2.5, 4.3)
CELL_T_LIMITS = (-40.0, 80.0)

# Driving power demand (W, negative = drawn from the pack) as an Ornstein-Uhlenbeck process.
POWER_MEAN_W = -12_000.0
POWER_SIGMA_W = 20_000.0
POWER_TAU_S = 15.0
POWER_LIMITS_W = (-150_000.0, 60_000.0)
MEAN_DRIVING_S = 900.0
MEAN_PARKED_S = 180.0


def open_circuit_voltage(soc_pct: FloatArray) -> FloatArray:
    """Cell OCV (V) for SOC (%), interpolated in the NMC table (any array shape)."""
    return np.interp(soc_pct, OCV_SOC_PCT, OCV_VOLTS)


@dataclass(frozen=True)
class PackSnapshot:
    """The BMS's view of every vehicle's pack after one step; one entry per vehicle.

    Frozen, with arrays, so a snapshot can be handed to the serialiser while the model
    moves on: the fleet never writes into an array it has returned.
    """

    soc: FloatArray  # %
    voltage: FloatArray  # pack terminal voltage, V
    current: FloatArray  # A, negative = discharge
    cell_voltage_min: FloatArray  # V
    cell_voltage_max: FloatArray  # V
    cell_temp_min: FloatArray  # °C
    cell_temp_max: FloatArray  # °C
    open_circuit_voltage: FloatArray  # pack OCV, V: what the voltage would be at rest


class BatteryFleet(Protocol):
    """What the simulator needs from any battery model, simple or full physics."""

    @property
    def n_vehicles(self) -> int: ...

    def step(self, dt_s: float) -> PackSnapshot: ...


class Fleet:
    """N vehicles' packs, advanced together by :meth:`step`; deterministic per ``seed``."""

    def __init__(self, n_vehicles: int, seed: int, capacity_ah: float = 94.0) -> None:
        if n_vehicles < 1:
            raise ValueError("a fleet needs at least one vehicle")
        if capacity_ah <= 0:
            raise ValueError("capacity must be positive")
        self._n = n_vehicles
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        shape = (n_vehicles, CELLS_IN_SERIES)
        # Per-cell manufacturing spread: capacity ±1 %, resistance ±5 %, cooling ±10 %.
        self._capacity_ah: FloatArray = capacity_ah * (1.0 + 0.01 * rng.standard_normal(shape))
        self._r25_ohm: FloatArray = CELL_RESISTANCE_OHM * (1.0 + 0.05 * rng.standard_normal(shape))
        self._cooling_w_per_k: FloatArray = CELL_COOLING_W_PER_K * (1.0 + 0.1 * rng.standard_normal(shape))
        np.clip(self._cooling_w_per_k, 0.5 * CELL_COOLING_W_PER_K, None, out=self._cooling_w_per_k)
        # Where a cell sits relative to the coolant shifts its resting temperature a little.
        ambient = rng.uniform(5.0, 30.0, n_vehicles)
        self._cell_ambient_c: FloatArray = ambient[:, None] + 0.4 * rng.standard_normal(shape)
        self._temp_c: FloatArray = self._cell_ambient_c.copy()
        pack_soc = rng.uniform(40.0, 95.0, n_vehicles)
        self._cell_soc: FloatArray = np.clip(pack_soc[:, None] + 0.5 * rng.standard_normal(shape), 0.0, 100.0)
        self._power_w: FloatArray = POWER_MEAN_W + POWER_SIGMA_W * rng.standard_normal(n_vehicles)
        self._driving = rng.random(n_vehicles) < MEAN_DRIVING_S / (MEAN_DRIVING_S + MEAN_PARKED_S)

    @property
    def n_vehicles(self) -> int:
        return self._n

    def step(self, dt_s: float) -> PackSnapshot:
        """Advance every pack by ``dt_s`` seconds and report the state at the end of it."""
        if dt_s <= 0:
            raise ValueError("dt_s must be positive")
        self._advance_drivers(dt_s)
        ocv_cell = open_circuit_voltage(self._cell_soc)
        ocv_pack = ocv_cell.sum(axis=1)
        current = self._current_for(ocv_pack)
        resistance = self._resistance()
        cell_v = np.clip(ocv_cell + current[:, None] * resistance, *CELL_V_LIMITS)
        self._coulomb_count(current, dt_s)
        self._heat(current, resistance, dt_s)
        return PackSnapshot(
            soc=self._cell_soc.mean(axis=1),
            voltage=cell_v.sum(axis=1),
            current=current,
            cell_voltage_min=cell_v.min(axis=1),
            cell_voltage_max=cell_v.max(axis=1),
            cell_temp_min=self._temp_c.min(axis=1),
            cell_temp_max=self._temp_c.max(axis=1),
            open_circuit_voltage=ocv_pack,
        )

    def _advance_drivers(self, dt_s: float) -> None:
        """Park or drive (Markov switch), and move each driver's power demand smoothly (exact OU step)."""
        rng = self._rng
        leave_driving = rng.random(self._n) < -np.expm1(-dt_s / MEAN_DRIVING_S)
        leave_parked = rng.random(self._n) < -np.expm1(-dt_s / MEAN_PARKED_S)
        self._driving = np.where(self._driving, ~leave_driving, leave_parked)
        decay = np.exp(-dt_s / POWER_TAU_S)
        noise = POWER_SIGMA_W * np.sqrt(1.0 - decay * decay) * rng.standard_normal(self._n)
        self._power_w = POWER_MEAN_W + (self._power_w - POWER_MEAN_W) * decay + noise

    def _current_for(self, ocv_pack: FloatArray) -> FloatArray:
        """Pack current (A) that delivers the demanded power, within the pack's limits."""
        power = np.where(self._driving, np.clip(self._power_w, *POWER_LIMITS_W), 0.0)
        current = np.clip(power / ocv_pack, -MAX_DISCHARGE_A, MAX_CHARGE_A)
        # The BMS refuses to drain an empty pack or regenerate into a full one.
        lowest = self._cell_soc.min(axis=1)
        highest = self._cell_soc.max(axis=1)
        current = np.where((current < 0) & (lowest <= 1.0), 0.0, current)
        return np.where((current > 0) & (highest >= 99.0), 0.0, current)

    def _resistance(self) -> FloatArray:
        """Cell resistance rises as the cell cools (about 1 %/K below 25 °C, halved at most above)."""
        return self._r25_ohm * np.clip(1.0 + 0.01 * (25.0 - self._temp_c), 0.5, 3.0)

    def _coulomb_count(self, current: FloatArray, dt_s: float) -> None:
        delta_pct = (current * dt_s / 3600.0)[:, None] / self._capacity_ah * 100.0
        np.clip(self._cell_soc + delta_pct, 0.0, 100.0, out=self._cell_soc)

    def _heat(self, current: FloatArray, resistance: FloatArray, dt_s: float) -> None:
        """First-order thermal step: relax exactly towards ambient + I^2*R / cooling."""
        heat_w = (current * current)[:, None] * resistance
        settle_c = self._cell_ambient_c + heat_w / self._cooling_w_per_k
        decay = np.exp(-dt_s * self._cooling_w_per_k / CELL_HEAT_CAPACITY_J_PER_K)
        self._temp_c = np.clip(settle_c + (self._temp_c - settle_c) * decay, *CELL_T_LIMITS)
