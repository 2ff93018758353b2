"""Ageing and faults: what is wrong with each pack, drawn from a seeded stream of its own.

A :class:`HealthPlan` says how much capacity and resistance each pack has lost to age and
which vehicles develop a fault, of which kind, where in the pack and from when. It is data
only: :class:`src.generator.battery_model.Fleet` applies it to the physics (the cells
really hold less charge, really drop more voltage), :mod:`src.generator.truth` writes it
down as the ground truth a fleet-health job is scored against.

Nothing here draws from the fleet's own generator: :func:`draw_health` seeds a separate
stream per purpose from the run's seed, so switching ageing or faults on changes no other
random number of the run, and without them the fleet is the one it always was.
Magnitudes and their reasons: docs/battery-model.md, "Ageing and faults".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from src.generator.cell import FloatArray

HEALTH_STREAM = 0x4845414C  # "HEAL": the spawn key of the health draws, beside the fleet's own stream
_AGEING, _FAULTS = 0, 1  # one sub-stream each, so adding faults never changes the ageing drawn


class FaultKind(StrEnum):
    """The faults a pack can develop; the values are the names the truth file and alerts use."""

    WEAK_CELL = "weak_cell"  # one cell's internal resistance several times its neighbours'
    SELF_DISCHARGE = "self_discharge"  # one cell leaks charge internally (a soft short)
    COOLING = "cooling"  # one module has lost most of its contact with the coolant
    SENSOR_BIAS = "sensor_bias"  # the pack-voltage measurement reads a few volts off


@dataclass(frozen=True)
class Fault:
    """One vehicle's fault: from ``start_s`` seconds after the run's start, for the rest of the run.

    ``start_s = 0`` makes the vehicle faulty from its first reading. ``magnitude`` means, by kind:

    - ``weak_cell``: the factor on that cell's R0 and R1 (the same cell, degraded);
    - ``self_discharge``: the leakage, in percent of the cell's capacity per day;
    - ``cooling``: the fraction of the module's coolant conductance that is left;
    - ``sensor_bias``: the offset added to the reported pack voltage, in volts.

    ``cell`` (0-95) locates ``weak_cell`` and ``self_discharge``, ``module`` (0-7) ``cooling``.
    """

    vehicle: int
    kind: FaultKind
    start_s: float
    magnitude: float
    cell: int | None = None
    module: int | None = None


@dataclass(frozen=True)
class HealthPlan:
    """Every pack's ageing (per vehicle: capacity left, resistance growth) and the fleet's faults.

    ``capacity_factor`` is the state of health, the fraction of the nominal capacity left
    (1.0 new); ``resistance_factor`` multiplies R0 and R1 (1.0 new). ``None`` means fresh packs.
    """

    capacity_factor: FloatArray | None = None
    resistance_factor: FloatArray | None = None
    faults: tuple[Fault, ...] = ()


@dataclass(frozen=True)
class HealthParameters:
    """The ranges ageing and faults are drawn from (uniformly unless said otherwise)."""

    soh_range: tuple[float, float] = (0.75, 1.0)  # capacity left, fraction of nominal
    resistance_growth_max: float = 1.0  # R x (1 + wear x U(growth_share)) reaches x2.0 at the most worn
    growth_share: tuple[float, float] = (0.6, 1.0)
    weak_cell_factor: tuple[float, float] = (2.5, 4.0)
    self_discharge_pct_per_day: tuple[float, float] = (10.0, 20.0)
    cooling_left: tuple[float, float] = (0.05, 0.2)
    sensor_bias_v: tuple[float, float] = (4.0, 8.0)  # the size; the sign is drawn too
    start_window: tuple[float, float] = (0.1, 0.5)  # a drawn start lies in this part of the run


@dataclass(frozen=True)
class HealthOptions:
    """What to draw: the simulator's ``--aging``, ``--faults N`` and their internal companions.

    ``faults_at_start`` makes the first K faults (in the drawn order) start with the run
    instead of at a drawn time, for demos that must show a faulty vehicle at once.
    ``fault_kinds`` replaces the drawn order of kinds (cycled through, as the drawn one is).
    """

    aging: bool = False
    faults: int = 0
    faults_at_start: int = 0
    fault_kinds: tuple[FaultKind, ...] | None = None
    parameters: HealthParameters = field(default_factory=HealthParameters)

    def __post_init__(self) -> None:
        if self.faults < 0 or self.faults_at_start < 0:
            raise ValueError("fault counts cannot be negative")
        if self.faults_at_start > self.faults:
            raise ValueError(f"{self.faults_at_start} faults at start, but only {self.faults} faults")
        if self.fault_kinds is not None and not self.fault_kinds:
            raise ValueError("fault_kinds, when given, names at least one kind")

    @property
    def active(self) -> bool:
        return self.aging or self.faults > 0


def _stream(seed: int, purpose: int) -> np.random.Generator:
    """A generator of its own for ``purpose``, derived from the run's seed, independent of the fleet's."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(HEALTH_STREAM, purpose)))


def draw_health(n_vehicles: int, seed: int, options: HealthOptions, duration_s: float, period_s: float) -> HealthPlan:
    """The plan for a run of ``duration_s`` at one step per ``period_s``, drawn from ``seed``'s health streams.

    Ageing: each pack gets a wear w ~ U(0, 1); its state of health is 1 - 0.25 w (100-75 %)
    and its resistance grows by the factor 1 + w x U(0.6, 1.0) (x1.0-x2.0), so worn packs
    have both less capacity and more resistance, with some scatter. Drawn two numbers per
    vehicle in vehicle order, so vehicle k ages the same in a fleet of any size.

    Faults: ``options.faults`` distinct vehicles; kinds cycle through a drawn order of the
    four (so N >= 4 has them all); each starts at a whole step within the start window of the
    run (10-50 % of it), so its start is the timestamp of a reading, or at 0 for the first
    ``faults_at_start``. Location and magnitude are drawn per fault.
    """
    if n_vehicles < 1:
        raise ValueError("a fleet needs at least one vehicle")
    if options.faults > n_vehicles:
        raise ValueError(f"{options.faults} faults need as many distinct vehicles; the fleet has {n_vehicles}")
    p = options.parameters
    capacity = resistance = None
    if options.aging:
        draws = _stream(seed, _AGEING).random((n_vehicles, 2))
        wear, share = draws[:, 0], draws[:, 1]
        low, high = p.soh_range
        capacity = high - (high - low) * wear
        growth = p.growth_share[0] + (p.growth_share[1] - p.growth_share[0]) * share
        resistance = 1.0 + p.resistance_growth_max * wear * growth
    faults: tuple[Fault, ...] = ()
    if options.faults:
        faults = _draw_faults(_stream(seed, _FAULTS), n_vehicles, options, duration_s, period_s)
    return HealthPlan(capacity, resistance, faults)


def _draw_faults(
    rng: np.random.Generator, n_vehicles: int, options: HealthOptions, duration_s: float, period_s: float
) -> tuple[Fault, ...]:
    from src.generator.battery_model import CELLS_IN_SERIES, MODULES  # the pack's layout, one place

    p, n = options.parameters, options.faults
    vehicles = rng.choice(n_vehicles, size=n, replace=False)
    every_kind = list(FaultKind)
    order = [every_kind[k] for k in rng.permutation(len(every_kind))]
    kinds = options.fault_kinds or tuple(order)
    ticks = max(1, int(duration_s / period_s + 1e-9))
    first = int(p.start_window[0] * ticks)
    last = max(first, int(p.start_window[1] * ticks))
    start_ticks = rng.integers(first, last + 1, size=n)
    u = rng.random((n, 3))  # magnitude, location, sign: the same count whatever the kind
    faults = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        start_s = 0.0 if i < options.faults_at_start else float(start_ticks[i]) * period_s
        cell = module = None
        if kind == FaultKind.WEAK_CELL:
            magnitude = _within(p.weak_cell_factor, u[i, 0])
            cell = int(u[i, 1] * CELLS_IN_SERIES)
        elif kind == FaultKind.SELF_DISCHARGE:
            magnitude = _within(p.self_discharge_pct_per_day, u[i, 0])
            cell = int(u[i, 1] * CELLS_IN_SERIES)
        elif kind == FaultKind.COOLING:
            magnitude = _within(p.cooling_left, u[i, 0])
            module = int(u[i, 1] * MODULES)
        else:
            magnitude = _within(p.sensor_bias_v, u[i, 0]) * (1.0 if u[i, 2] < 0.5 else -1.0)
        faults.append(Fault(int(vehicles[i]), kind, start_s, float(magnitude), cell, module))
    return tuple(faults)


def _within(bounds: tuple[float, float], u: float) -> float:
    return float(bounds[0] + (bounds[1] - bounds[0]) * u)
