"""A fleet of electric cars and their traction batteries, simulated together with numpy.

Each pack is like the BMW i3's (96 cells in series, 8 modules of 12, 60, 94 or 120 Ah):
equivalent-circuit cells (:mod:`src.generator.cell`) with their own spread, one thermal
mass per module, demand from :mod:`src.generator.vehicle` plus auxiliaries, a BMS that
keeps every cell in its window and charges CC-CV, and a daily duty cycle of trips, pauses
and charging. Every array has the fleet as its first axis; each step holds the current
constant and evaluates cell parameters at its start, exactly as
:func:`src.generator.cell.simulate_cell` does; one seeded generator, consumed in a fixed
pattern, makes a run reproducible per seed. Ageing and faults (:mod:`src.generator.health`)
are applied to the same arrays when a plan asks for them. Model and numbers: docs/battery-model.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from src.generator.cell import (
    REFERENCE_TEMP_C,
    CellParameters,
    FloatArray,
    ocv_and_slope,
    open_circuit_voltage,
    rc_decay,
    relax_rc,
    resistance_factor,
    soc_change_pct,
    step_resistance,
)
from src.generator.health import Fault, FaultKind, HealthPlan
from src.generator.vehicle import DriveCycles, Route, VehicleParameters, battery_power_w

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MODULES = 8
CELLS_PER_MODULE = 12
CELLS_IN_SERIES = MODULES * CELLS_PER_MODULE
CAPACITY_VARIANTS_AH = (60.0, 94.0, 120.0)
NOMINAL_CELL_V = 3.68
NOMINAL_PACK_V = CELLS_IN_SERIES * NOMINAL_CELL_V  # 353 V, what a charger's rating is quoted against


class Activity(IntEnum):
    """What a vehicle is doing; decides where its pack current comes from."""

    PARKED = 0
    DRIVING = 1
    CHARGING = 2


# Plain ints for the hot path: comparing arrays with an IntEnum member costs an enum lookup each time.
_PARKED, _DRIVING, _CHARGING = (int(activity) for activity in Activity)


@dataclass(frozen=True)
class BmsLimits:
    """The protection window the battery management system keeps every cell in."""

    cell_v_min: float = 3.0
    cell_v_max: float = 4.2
    cv_voltage: float = 4.15  # CC-CV switches to constant voltage here, a little below the hard limit
    max_discharge_c: float = 3.5  # ~330 A for the 94 Ah pack: the i3's 125 kW motor at low voltage
    max_charge_c: float = 1.5  # regen and DC charging
    charge_end_c: float = 0.05  # a CV phase ends when the current has tapered to C/20
    cold_charge_full_c: float = 15.0  # full charge rate from this cell temperature up ...
    cold_charge_zero_c: float = 0.0  # ... derated linearly to a trickle at freezing
    cold_charge_floor: float = 0.05  # the trickle, as a fraction of the full rate
    empty_derate_pct: float = 5.0  # discharge derated linearly below this cell SOC
    full_derate_pct: float = 2.0  # charge derated linearly above 100 % minus this


@dataclass(frozen=True)
class Variation:
    """Manufacturing and assembly spread, as relative (or absolute) standard deviations.

    Each cell's value is nominal x (1 + module draw) x (1 + cell draw): modules differ as
    whole production lots do, cells within a module less so. All zero gives identical cells.
    """

    capacity_module: float = 0.004
    capacity_cell: float = 0.008
    resistance_module: float = 0.02
    resistance_cell: float = 0.04
    soc_module_pct: float = 0.6  # absolute, percentage points of SOC (balancing is never perfect)
    soc_cell_pct: float = 0.3
    temp_module_c: float = 0.5  # absolute, °C at the start
    temp_cell_c: float = 0.3  # absolute, °C: a cell's fixed offset from its module (sensor and position)

    @classmethod
    def none(cls) -> Variation:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ThermalParameters:
    """One module's thermal mass and its paths to ambient and coolant."""

    heat_capacity_j_per_k: float = 30_000.0  # 12 cells of ~2 kg at ~1 kJ/(kg K), plus housing
    casing_w_per_k: float = 2.5  # to ambient: about a 3.5 h time constant parked
    coolant_w_per_k: float = 25.0  # with the coolant flowing: about 20 min
    coolant_c: float = 20.0
    cooling_on_c: float = 30.0
    heater_coolant_c: float = 30.0
    heating_below_c: float = 10.0  # warm a cold pack while it charges
    cell_gradient: float = 0.15  # a cell's share of its module's rise above the sink, -/+ edge to centre


@dataclass(frozen=True)
class DutyParameters:
    """How the fleet is used: trip and pause lengths, when and how it charges."""

    mean_pause_s: float = 1500.0
    min_pause_s: float = 300.0
    trip_s: dict[Route, tuple[float, float]] = field(
        default_factory=lambda: {
            Route.URBAN: (600.0, 2400.0),
            Route.HIGHWAY: (1200.0, 4800.0),
            Route.MIXED: (900.0, 3600.0),
        }
    )
    route_weights: tuple[float, float, float] = (0.5, 0.2, 0.3)  # urban, highway, mixed
    charge_below_pct: tuple[float, float] = (20.0, 40.0)  # each driver's threshold, drawn once
    dc_share: float = 0.35
    ac_power_w: float = 11_000.0
    dc_power_w: float = 50_000.0
    ac_target_pct: float = 100.0
    dc_target_pct: float = 80.0
    base_aux_w: float = 300.0  # controllers, pumps, 12 V DC/DC
    hvac_w_per_k: float = 90.0  # heating or cooling the cabin towards 21 °C
    max_hvac_w: float = 4_000.0


@dataclass
class FaultExpression:
    """When a started ``cooling`` fault could first change a reading: its module's coolant (or heater) ran.

    ``expressed_s``: the fleet's elapsed seconds at the start of the first step that pumped through the faulty
    module after the fault's start (None: never so far); ``cooled_s``/``heated_s``: seconds pumped cool or warm.
    Until then the module behaves as a healthy one: the fault is latent (docs/battery-model.md, "Faults").
    """

    expressed_s: float | None = None
    cooled_s: float = 0.0
    heated_s: float = 0.0


@dataclass(frozen=True)
class PackSnapshot:
    """The BMS's view of every vehicle's pack after one step; one entry per vehicle.

    Frozen, with arrays, so a snapshot can be handed to the serialiser while the model
    moves on: the fleet never writes into an array it has returned.
    """

    soc: FloatArray  # %, the mean of the cells' SOC
    voltage: FloatArray  # pack terminal voltage, V: the sum of the cell voltages
    current: FloatArray  # A, negative = discharge
    cell_voltage_min: FloatArray  # V
    cell_voltage_max: FloatArray  # V
    cell_temp_min: FloatArray  # °C
    cell_temp_max: FloatArray  # °C
    open_circuit_voltage: FloatArray  # pack OCV, V: what the voltage would be at rest


class BatteryFleet(Protocol):
    """What the simulator needs from any battery model."""

    @property
    def n_vehicles(self) -> int: ...

    def step(self, dt_s: float) -> PackSnapshot: ...


class Fleet:
    """N vehicles and their packs, advanced together by :meth:`step`; deterministic per ``seed``.

    ``capacity_ah`` picks one variant for the whole fleet; ``None`` mixes the three.
    ``initial_soc_pct`` starts every pack there (default: each somewhere in 30-95 %), and
    ``ambient_c`` sets the weather (default: each vehicle somewhere in -5..32 °C).
    ``health`` ages the packs and schedules faults (:func:`src.generator.health.draw_health`);
    it draws nothing from the fleet's generator, so the fleet is otherwise the same.
    """

    def __init__(
        self,
        n_vehicles: int,
        seed: int,
        capacity_ah: float | None = 94.0,
        vehicle: VehicleParameters | None = None,
        bms: BmsLimits | None = None,
        thermal: ThermalParameters | None = None,
        duty: DutyParameters | None = None,
        variation: Variation | None = None,
        initial_soc_pct: float | None = None,
        ambient_c: float | None = None,
        health: HealthPlan | None = None,
    ) -> None:
        if n_vehicles < 1:
            raise ValueError("a fleet needs at least one vehicle")
        if capacity_ah is not None and capacity_ah <= 0:
            raise ValueError("capacity must be positive")
        self._n = n_vehicles
        self._rng = np.random.default_rng(seed)
        self.vehicle = vehicle or VehicleParameters()
        self.bms = bms or BmsLimits()
        self.thermal = thermal or ThermalParameters()
        self.duty = duty or DutyParameters()
        self.variation = variation or Variation()
        self._cycles = DriveCycles(n_vehicles, self._rng)
        self._draw_packs(capacity_ah, initial_soc_pct, ambient_c)
        self._draw_duty()
        self._held = False
        self._last_cell_v: FloatArray = self._open_circuit_cells()
        self.health = health or HealthPlan()
        self._apply_ageing(self.health)
        self._schedule_faults(self.health.faults)

    # --- set-up --------------------------------------------------------------------------

    def _draw_packs(self, capacity_ah: float | None, initial_soc_pct: float | None, ambient_c: float | None) -> None:
        """Every cell's parameters: nominal, times a module factor, times a cell factor (seeded spread)."""
        rng, n, var = self._rng, self._n, self.variation
        if capacity_ah is None:
            nominal_ah = rng.choice(np.array(CAPACITY_VARIANTS_AH), n)
        else:
            nominal_ah = np.full(n, float(capacity_ah))
        self.capacity_ah: FloatArray = nominal_ah
        reference = CellParameters()
        resistance_scale = reference.capacity_ah / nominal_ah
        self.cell = reference

        def draw(module_sigma: float, cell_sigma: float) -> tuple[FloatArray, FloatArray]:
            """(module, cell) deviations, shaped to broadcast to (vehicles, modules, cells per module)."""
            module = module_sigma * rng.standard_normal((n, MODULES, 1))
            cell = cell_sigma * rng.standard_normal((n, MODULES, CELLS_PER_MODULE))
            return module, cell

        def spread(module_sigma: float, cell_sigma: float) -> FloatArray:
            module, cell = draw(module_sigma, cell_sigma)
            return ((1.0 + module) * (1.0 + cell)).reshape(n, CELLS_IN_SERIES)

        self._cell_capacity_ah: FloatArray = nominal_ah[:, None] * spread(var.capacity_module, var.capacity_cell)
        resistance = resistance_scale[:, None] * spread(var.resistance_module, var.resistance_cell)
        self._r0_nominal: FloatArray = reference.r0_ohm * resistance
        self._r1_nominal: FloatArray = reference.r1_ohm * resistance
        self._decay_dt = -1.0
        self._decay = 0.0

        pack_soc = rng.uniform(30.0, 95.0, n)
        if initial_soc_pct is not None:
            pack_soc[:] = initial_soc_pct
        module_soc, cell_soc = draw(var.soc_module_pct, var.soc_cell_pct)
        self._cell_soc: FloatArray = np.clip(pack_soc[:, None] + (module_soc + cell_soc).reshape(n, -1), 0.0, 100.0)
        self._v1: FloatArray = np.zeros((n, CELLS_IN_SERIES))

        self.ambient_c: FloatArray = rng.uniform(-5.0, 32.0, n)
        if ambient_c is not None:
            self.ambient_c[:] = ambient_c
        module_temp, cell_temp = draw(var.temp_module_c, var.temp_cell_c)
        self._module_temp_c: FloatArray = self.ambient_c[:, None] + module_temp[:, :, 0]
        self._cell_offset_c: FloatArray = cell_temp
        # Cells in the middle of a module run warmer than those at its ends when it heats up.
        position = np.abs(np.linspace(-1.0, 1.0, CELLS_PER_MODULE))
        self._cell_gradient: FloatArray = np.broadcast_to(
            self.thermal.cell_gradient * (0.5 - position), (MODULES, CELLS_PER_MODULE)
        ).reshape(CELLS_IN_SERIES)
        self._cell_offset_c = self._cell_offset_c.reshape(n, CELLS_IN_SERIES)
        self._cell_temp_c: FloatArray = self._cell_temperatures(np.repeat(self.ambient_c[:, None], MODULES, axis=1))

    def _draw_duty(self) -> None:
        """Who is driving at the start, for how long, and each driver's charging habit."""
        rng, n, duty = self._rng, self._n, self.duty
        self._route_cdf: FloatArray = np.cumsum(duty.route_weights) / sum(duty.route_weights)
        self._trip_min_s: FloatArray = np.array([duty.trip_s[route][0] for route in Route])
        self._trip_span_s: FloatArray = np.array([duty.trip_s[route][1] - duty.trip_s[route][0] for route in Route])
        self.activity: IntArray = np.where(rng.random(n) < 0.5, Activity.DRIVING, Activity.PARKED).astype(np.int64)
        self._timer_s: FloatArray = rng.uniform(0.2, 1.0, n) * duty.mean_pause_s
        self._charge_below_pct: FloatArray = rng.uniform(*duty.charge_below_pct, n)
        self._charger_w: FloatArray = np.zeros(n)
        self._charge_target_pct: FloatArray = np.full(n, 100.0)
        driving = self.activity == Activity.DRIVING
        self._start_trips(driving, rng.random(n), rng.random(n))

    def _apply_ageing(self, plan: HealthPlan) -> None:
        """Fewer ampere-hours and more resistance in every cell of an aged pack (state of health, growth)."""
        if plan.capacity_factor is not None:
            self._cell_capacity_ah = self._cell_capacity_ah * _per_vehicle(plan.capacity_factor, self._n)[:, None]
        if plan.resistance_factor is not None:
            growth = _per_vehicle(plan.resistance_factor, self._n)[:, None]
            self._r0_nominal = self._r0_nominal * growth
            self._r1_nominal = self._r1_nominal * growth

    def _schedule_faults(self, faults: tuple[Fault, ...]) -> None:
        """Check the faults and keep them in order of start; the arrays a kind needs exist only if it occurs."""
        n = self._n
        for fault in faults:
            if not 0 <= fault.vehicle < n:
                raise ValueError(f"fault for vehicle index {fault.vehicle} in a fleet of {n}")
            if fault.kind in (FaultKind.WEAK_CELL, FaultKind.SELF_DISCHARGE) and not (
                fault.cell is not None and 0 <= fault.cell < CELLS_IN_SERIES
            ):
                raise ValueError(f"a {fault.kind} fault needs a cell index 0-{CELLS_IN_SERIES - 1}")
            if fault.kind == FaultKind.COOLING and not (fault.module is not None and 0 <= fault.module < MODULES):
                raise ValueError(f"a cooling fault needs a module index 0-{MODULES - 1}")
        kinds = {fault.kind for fault in faults}
        self._elapsed_s = 0.0
        self._pending: list[tuple[int, Fault]] = sorted(enumerate(faults), key=lambda item: item[1].start_s)
        self._expressions: dict[int, FaultExpression] = {}  # by the fault's index in the plan: started cooling faults
        self._watched: list[tuple[FaultExpression, int, int]] = []  # (its record, vehicle, module)
        self._leak_pct_per_s: FloatArray | None = (
            np.zeros((n, CELLS_IN_SERIES)) if FaultKind.SELF_DISCHARGE in kinds else None
        )
        self._coolant_scale: FloatArray | None = np.ones((n, MODULES)) if FaultKind.COOLING in kinds else None
        self._voltage_bias_v: FloatArray | None = np.zeros(n) if FaultKind.SENSOR_BIAS in kinds else None

    def _start_faults(self, dt_s: float) -> None:
        """Start every fault due by this step: the step that begins nearest its start (starts lie on the steps)."""
        due = self._elapsed_s + 0.5 * dt_s
        while self._pending and self._pending[0][1].start_s < due:
            index, fault = self._pending.pop(0)
            v = fault.vehicle
            if fault.kind == FaultKind.WEAK_CELL:
                self._r0_nominal[v, fault.cell] *= fault.magnitude
                self._r1_nominal[v, fault.cell] *= fault.magnitude
            elif fault.kind == FaultKind.SELF_DISCHARGE:
                assert self._leak_pct_per_s is not None
                self._leak_pct_per_s[v, fault.cell] = fault.magnitude / 86_400.0
            elif fault.kind == FaultKind.COOLING:
                assert self._coolant_scale is not None and fault.module is not None
                self._coolant_scale[v, fault.module] = fault.magnitude
                self._expressions[index] = FaultExpression()
                self._watched.append((self._expressions[index], v, fault.module))
            else:
                assert self._voltage_bias_v is not None
                self._voltage_bias_v[v] = fault.magnitude

    # --- public --------------------------------------------------------------------------

    @property
    def n_vehicles(self) -> int:
        return self._n

    @property
    def speed_mps(self) -> FloatArray:
        return self._cycles.speed_mps.copy()

    def cell_voltages(self) -> FloatArray:
        """Every cell's terminal voltage after the last step, shape (vehicles, 96): a copy."""
        return self._last_cell_v.copy()

    def cell_soc(self) -> FloatArray:
        """Every cell's SOC (%) after the last step, shape (vehicles, 96): a copy."""
        return self._cell_soc.copy()

    def module_temperatures(self) -> FloatArray:
        """Every module's temperature (°C) after the last step, shape (vehicles, 8): a copy."""
        return self._module_temp_c.copy()

    def fault_expressions(self) -> dict[int, FaultExpression]:
        """Each started ``cooling`` fault's expression so far, by its index in ``health.faults``: a copy."""
        return {index: replace(record) for index, record in self._expressions.items()}

    @property
    def elapsed_s(self) -> float:
        """Simulated seconds stepped so far (faults start by it)."""
        return self._elapsed_s

    def cell_capacity_ah(self) -> FloatArray:
        """Every cell's capacity (Ah), ageing included, shape (vehicles, 96): a copy."""
        return self._cell_capacity_ah.copy()

    def pack_capacity_ah(self) -> FloatArray:
        """The charge at the terminals that moves each pack's reported SOC by 100 points (Ah).

        The reported SOC is the mean of the cells' SOC and the same current flows through
        every cell, so this is the harmonic mean of the cells' capacities (after ageing).
        """
        result: FloatArray = 1.0 / np.mean(1.0 / self._cell_capacity_ah, axis=1)
        return result

    def cell_r0_ohm(self, soc_pct: float = 50.0, temp_c: float = REFERENCE_TEMP_C) -> FloatArray:
        """Every cell's instant resistance R0 (ohm) at ``soc_pct`` and ``temp_c``, shape (vehicles, 96): ageing
        and the faults started so far included. Its sum over a pack is the series string's R0."""
        result: FloatArray = self._r0_nominal * resistance_factor(soc_pct, temp_c, self.cell)
        return result

    def hold(self, activity: Activity, route: Route = Route.MIXED, charger_w: float | None = None) -> None:
        """Put every vehicle into ``activity`` and keep it there (for experiments, tests and plots).

        Drivers are told to stop (they brake to a standstill) or to set off on ``route``;
        chargers start a CC-CV session at ``charger_w`` (default: the AC charger) towards 100 %.
        """
        everyone = np.ones(self._n, dtype=bool)
        self._held = True
        if activity == Activity.DRIVING:
            self._cycles.start(everyone, int(route))
        else:
            self._cycles.finish(everyone)
        if activity == Activity.CHARGING:
            self._charger_w[:] = self.duty.ac_power_w if charger_w is None else charger_w
            self._charge_target_pct[:] = 100.0
        self.activity[:] = activity

    def release(self) -> None:
        """Return to the fleet's normal duty cycle after :meth:`hold`."""
        self._held = False

    def step(self, dt_s: float) -> PackSnapshot:
        """Advance every vehicle by ``dt_s`` seconds and report each pack at the end of the step."""
        if dt_s <= 0:
            raise ValueError("dt_s must be positive")
        if self._pending:
            self._start_faults(dt_s)
        self._advance_duty(dt_s)
        speed, accel = self._cycles.step(dt_s)
        decay = self._rc_decay(dt_s)
        factor = resistance_factor(self._cell_soc, self._cell_temp_c, self.cell)
        r0 = self._r0_nominal * factor
        r1 = self._r1_nominal * factor
        # Over one step each cell is a source and a resistance: V_end = OCV + v1 * decay + I * R_step.
        ocv, slope = ocv_and_slope(self._cell_soc, self._cell_temp_c)
        source = ocv + self._v1 * decay
        resistance = step_resistance(r0, r1, slope, self._cell_capacity_ah, dt_s, decay)
        current = self._limit(self._demand(speed, accel, source, resistance), source, resistance)
        self._v1 = relax_rc(self._v1, current[:, None], r1, decay)
        moved_pct = soc_change_pct(current[:, None], dt_s, self._cell_capacity_ah)
        if self._leak_pct_per_s is not None:  # a soft short drains its cell inside, past the terminals
            moved_pct = moved_pct - self._leak_pct_per_s * dt_s
        self._cell_soc = np.minimum(np.maximum(self._cell_soc + moved_pct, 0.0), 100.0)
        # The OCV moves along its table segment with the step's charge: exact, unless the step
        # crossed a table point, when it is off by microvolts until the next step looks it up again.
        ocv += slope * moved_pct
        cell_v = ocv + current[:, None] * r0 + self._v1
        self._heat(current, r0, r1, dt_s)
        self._finish_charging(current)
        self._last_cell_v = cell_v
        self._elapsed_s += dt_s
        voltage = cell_v.sum(axis=1)
        if self._voltage_bias_v is not None:  # the sensor's error: reported, not physics
            voltage = voltage + self._voltage_bias_v
        return PackSnapshot(
            soc=self._cell_soc.mean(axis=1),
            voltage=voltage,
            current=current,
            cell_voltage_min=cell_v.min(axis=1),
            cell_voltage_max=cell_v.max(axis=1),
            cell_temp_min=self._cell_temp_c.min(axis=1),
            cell_temp_max=self._cell_temp_c.max(axis=1),
            open_circuit_voltage=ocv.sum(axis=1),
        )

    # --- duty cycle ----------------------------------------------------------------------

    def _advance_duty(self, dt_s: float) -> None:
        """Move vehicles between parked, driving and charging; the random draws happen every step."""
        u_route, u_length, u_charger = self._rng.random((3, self._n))
        if self._held:
            return
        self._timer_s -= dt_s
        soc = self._cell_soc.mean(axis=1)
        driving = self.activity == _DRIVING
        # A trip ends when its time is up or the pack runs low; the car brakes to a stop first.
        self._cycles.finish(driving & ((self._timer_s <= 0) | (soc < self._charge_below_pct - 10.0)))
        arrived = driving & self._cycles.arrived
        wants_charge = arrived & (soc < self._charge_below_pct)
        self._start_charging(wants_charge, u_charger)
        self._park(arrived & ~wants_charge, u_length)
        leaving = (self.activity == _PARKED) & (self._timer_s <= 0)
        low = leaving & (soc < self._charge_below_pct - 10.0)
        self._start_charging(low, u_charger)
        self._start_trips(leaving & ~low, u_route, u_length)

    def _start_trips(self, which: BoolArray, u_route: FloatArray, u_length: FloatArray) -> None:
        if not which.any():  # the common case, and this runs every step
            return
        route = np.searchsorted(self._route_cdf, u_route).astype(np.int64)
        length = self._trip_min_s[route] + u_length * self._trip_span_s[route]
        self._cycles.start(which, route)
        self.activity[which] = Activity.DRIVING
        self._timer_s[which] = length[which]

    def _park(self, which: BoolArray, u_length: FloatArray) -> None:
        if not which.any():
            return
        pause = self.duty.min_pause_s - self.duty.mean_pause_s * np.log1p(-u_length)  # exponential tail
        self.activity[which] = Activity.PARKED
        self._timer_s[which] = pause[which]

    def _start_charging(self, which: BoolArray, u_charger: FloatArray) -> None:
        if not which.any():
            return
        dc = u_charger < self.duty.dc_share
        self.activity[which] = Activity.CHARGING
        self._charger_w[which] = np.where(dc, self.duty.dc_power_w, self.duty.ac_power_w)[which]
        self._charge_target_pct[which] = np.where(dc, self.duty.dc_target_pct, self.duty.ac_target_pct)[which]
        self._timer_s[which] = 0.0  # counts the session's time from here (below zero)

    def _finish_charging(self, current: FloatArray) -> None:
        """A session ends at its target SOC, or when the CV phase has tapered to C/20."""
        if self._held:
            return
        charging = self.activity == _CHARGING
        tapered = current < self.bms.charge_end_c * self.capacity_ah
        reached = self._cell_soc.mean(axis=1) >= self._charge_target_pct
        done = charging & (reached | tapered) & (self._timer_s < -60.0)  # give a session a minute to ramp up
        self.activity[done] = Activity.PARKED
        self._timer_s[done] = self.duty.min_pause_s

    # --- electrical ----------------------------------------------------------------------

    def _rc_decay(self, dt_s: float) -> float:
        if dt_s != self._decay_dt:
            self._decay_dt, self._decay = dt_s, rc_decay(dt_s, self.cell.tau1_s)
        return self._decay

    def _aux_power_w(self) -> FloatArray:
        hvac = np.minimum(self.duty.hvac_w_per_k * np.abs(self.ambient_c - 21.0), self.duty.max_hvac_w)
        return self.duty.base_aux_w + hvac

    def _demand(self, speed: FloatArray, accel: FloatArray, source: FloatArray, resistance: FloatArray) -> FloatArray:
        """The current each vehicle asks of its pack before the BMS limits it (A, positive = charge)."""
        power = battery_power_w(speed, accel, self.vehicle) + self._aux_power_w()
        e, r = source.sum(axis=1), resistance.sum(axis=1)
        # Discharge power P = -I * (E + I R): the root that goes to 0 with P; past the pack's
        # maximum power (negative discriminant) the best it can do is I = -E / 2R.
        discriminant = np.maximum(e * e - 4.0 * r * power, 0.0)
        driving = (-e + np.sqrt(discriminant)) / (2.0 * r)
        charging = self._charger_w * (1.0 / NOMINAL_PACK_V)  # the CC phase: the charger's rated current
        return np.where(self.activity == _DRIVING, driving, np.where(self.activity == _CHARGING, charging, 0.0))

    def _limit(self, demand: FloatArray, source: FloatArray, resistance: FloatArray) -> FloatArray:
        """Clamp the demand to what keeps every cell within the BMS's voltage, rate and SOC limits."""
        bms = self.bms
        to_min = ((bms.cell_v_min - source) / resistance).max(axis=1)
        to_max = ((bms.cell_v_max - source) / resistance).min(axis=1)
        to_cv = ((bms.cv_voltage - source) / resistance).min(axis=1)
        lowest_soc = self._cell_soc.min(axis=1)
        highest_soc = self._cell_soc.max(axis=1)
        coldest = self._cell_temp_c.min(axis=1)
        cold = np.clip(
            (coldest - bms.cold_charge_zero_c) / (bms.cold_charge_full_c - bms.cold_charge_zero_c),
            bms.cold_charge_floor,
            1.0,
        )
        empty = np.clip(lowest_soc / bms.empty_derate_pct, 0.0, 1.0)
        full = np.clip((100.0 - highest_soc) / bms.full_derate_pct, 0.0, 1.0)
        discharge_limit = np.minimum(bms.max_discharge_c * self.capacity_ah, -to_min) * empty
        charge_limit = np.minimum(bms.max_charge_c * self.capacity_ah * cold, to_max) * full
        charge_limit = np.where(self.activity == _CHARGING, np.minimum(charge_limit, to_cv), charge_limit)
        return np.clip(demand, -np.maximum(discharge_limit, 0.0), np.maximum(charge_limit, 0.0)) + 0.0

    # --- thermal -------------------------------------------------------------------------

    def _heat(self, current: FloatArray, r0: FloatArray, r1: FloatArray, dt_s: float) -> None:
        """Advance each module's temperature exactly over the step, towards sink + heat / conductance."""
        th, n = self.thermal, self._n
        loss_w = (current * current)[:, None] * r0 + self._v1 * self._v1 / r1
        module_w = loss_w.reshape(n, MODULES, CELLS_PER_MODULE).sum(axis=2)
        active = self.activity != _PARKED
        cooling = active[:, None] & (self._module_temp_c > th.cooling_on_c)
        heating = (self.activity == _CHARGING)[:, None] & (self._module_temp_c < th.heating_below_c)
        coolant_c = np.where(cooling, th.coolant_c, th.heater_coolant_c)
        pumped = cooling | heating
        if self._watched:
            self._watch_pumps(cooling, heating, dt_s)
        # A cooling fault leaves its module only a fraction of its contact with the coolant.
        coolant_w = th.coolant_w_per_k if self._coolant_scale is None else th.coolant_w_per_k * self._coolant_scale
        conductance = th.casing_w_per_k + np.where(pumped, coolant_w, 0.0)
        sink_c = (
            th.casing_w_per_k * self.ambient_c[:, None] + np.where(pumped, coolant_w * coolant_c, 0.0)
        ) / conductance
        settle_c = sink_c + module_w / conductance
        decay = np.exp(-dt_s * conductance / th.heat_capacity_j_per_k)
        self._module_temp_c = settle_c + (self._module_temp_c - settle_c) * decay
        self._cell_temp_c = self._cell_temperatures(sink_c)

    def _watch_pumps(self, cooling: BoolArray, heating: BoolArray, dt_s: float) -> None:
        """Note, for each started cooling fault, whether this step pumps coolant or heat through its module."""
        for record, v, module in self._watched:
            cooled, heated = bool(cooling[v, module]), bool(heating[v, module])
            if (cooled or heated) and record.expressed_s is None:
                record.expressed_s = self._elapsed_s
            record.cooled_s += dt_s if cooled else 0.0
            record.heated_s += dt_s if heated else 0.0

    def _cell_temperatures(self, sink_c: FloatArray) -> FloatArray:
        """Module temperature per cell, plus its fixed offset and its share of the module's rise."""
        module = np.repeat(self._module_temp_c, CELLS_PER_MODULE, axis=1)
        rise = np.repeat(self._module_temp_c - sink_c, CELLS_PER_MODULE, axis=1)
        cells: FloatArray = module + self._cell_offset_c + self._cell_gradient * rise
        return cells

    def _open_circuit_cells(self) -> FloatArray:
        return open_circuit_voltage(self._cell_soc, self._cell_temp_c)


def _per_vehicle(values: FloatArray, n: int) -> FloatArray:
    """A plan's per-vehicle factors, checked: one positive number per vehicle."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,) or not np.all(array > 0):
        raise ValueError(f"ageing factors must be {n} positive numbers, one per vehicle")
    return array
