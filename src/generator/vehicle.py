"""How hard each car pulls on its traction battery: road load and drive cycles, vectorised over the fleet.

:func:`battery_power_w` turns speed, acceleration and grade into electrical power at the
battery: the longitudinal force balance (inertia, rolling resistance, drag, climbing)
through one lumped drivetrain efficiency plus fixed losses while rolling, traction and
regeneration capped, regeneration fading out at walking speed; auxiliaries are the battery
model's. :class:`DriveCycles` runs a phase machine per vehicle (stopped, accelerating,
cruising, braking) with town and motorway driving styles. By construction speed is
continuous, ``|a| <= 2.5 m/s^2`` and ``0 <= v <= 150 km/h``; every step draws the same
random numbers whatever the vehicles do, so a profile depends only on the seed and the calls.
Equations, styles and numbers: docs/battery-model.md, "Vehicle".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_Array = TypeVar("_Array", bound=npt.NDArray[Any])

KMH = 1.0 / 3.6  # m/s per km/h

MAX_SPEED_MPS = 150.0 * KMH  # a hard ceiling, well above the highest target plus its wobble
ACCEL_KNEE_MPS = 12.0  # ~43 km/h: above it drivers accelerate at roughly constant power
WANDER_TAU_S = 20.0  # memory of the speed a cruising driver drifts towards
FOOT_LAG_S = 3.0  # how quickly the actual speed follows that intention
WANDER_BOUND_SIGMA = 3.0
MIXED_HIGHWAY_SHARE = 0.15  # chance that a MIXED trip's next manoeuvre is a motorway one
FINISH_BRAKE_MPS2 = (1.0, 2.0)  # an ordinary stop at the end of a trip


class Route(IntEnum):
    """The kind of trip a vehicle drives."""

    URBAN = 0
    HIGHWAY = 1
    MIXED = 2


@dataclass(frozen=True)
class VehicleParameters:
    """A BMW i3-like compact EV (defaults), with sources/reasoning in comments."""

    mass_kg: float = 1440.0  # ~1345 kg kerb + driver (and a little luggage)
    drag_area_m2: float = 0.69  # Cd 0.29 x frontal area 2.38 m^2, the i3's quoted figures
    rolling_resistance: float = 0.0085  # narrow low-rolling-resistance tyres on dry asphalt
    drivetrain_efficiency: float = 0.90  # battery -> wheel, and wheel -> battery in regen
    max_traction_power_w: float = 125_000.0  # the i3's rated motor power
    max_regen_power_w: float = 50_000.0  # at the battery: motor/inverter and cell charge acceptance
    regen_fade_speed_mps: float = 2.0  # regen fades out linearly below this speed (friction brakes take over)
    rotating_mass_factor: float = 1.05  # wheels, motor inertia
    drivetrain_loss_w: float = 600.0  # drawn whenever the car rolls: magnetising, switching, pumps
    air_density_kg_m3: float = 1.2  # dry air at ~20 °C, sea level
    gravity_mps2: float = 9.81

    def __post_init__(self) -> None:
        """Reject values that would make the physics meaningless (dividing by zero, energy from nothing)."""
        positive = (
            self.mass_kg,
            self.drag_area_m2,
            self.max_traction_power_w,
            self.regen_fade_speed_mps,
            self.air_density_kg_m3,
            self.gravity_mps2,
        )
        non_negative = (self.rolling_resistance, self.max_regen_power_w, self.drivetrain_loss_w)
        if min(positive) <= 0 or min(non_negative) < 0:
            raise ValueError("vehicle parameters must be positive")
        if not 0 < self.drivetrain_efficiency <= 1:
            raise ValueError("drivetrain efficiency must be in (0, 1]")
        if self.rotating_mass_factor < 1:
            raise ValueError("rotating mass factor must be at least 1")


def battery_power_w(
    speed_mps: FloatArray, accel_mps2: FloatArray, params: VehicleParameters, grade: FloatArray | float = 0.0
) -> FloatArray:
    """Electrical power the drivetrain asks of the battery (W): positive = discharge (traction), negative = regen.

    ``speed_mps`` must not be negative; ``grade`` is a slope fraction (rise/run, positive uphill).
    Standing still draws nothing, even on a hill: the parking brake holds the car, not the motor.
    Excludes auxiliary loads (the battery model adds HVAC).
    """
    wheel_w = _wheel_force_n(speed_mps, accel_mps2, params, grade) * speed_mps
    loss_w = np.where(np.asarray(speed_mps) > 0.0, params.drivetrain_loss_w, 0.0)
    traction_w = np.minimum(wheel_w / params.drivetrain_efficiency + loss_w, params.max_traction_power_w)
    fade = np.clip(np.asarray(speed_mps) / params.regen_fade_speed_mps, 0.0, 1.0)
    regen_w = np.maximum(wheel_w * params.drivetrain_efficiency * fade + loss_w, -params.max_regen_power_w)
    return np.asarray(np.where(wheel_w >= 0.0, traction_w, regen_w), dtype=np.float64)


def _wheel_force_n(
    speed_mps: FloatArray, accel_mps2: FloatArray, params: VehicleParameters, grade: FloatArray | float
) -> FloatArray:
    """Tractive force the wheels must deliver (N); rolling resistance only acts on a rolling car."""
    cos_theta = 1.0 / np.sqrt(1.0 + np.square(grade))
    sin_theta = np.asarray(grade) * cos_theta
    weight_n = params.mass_kg * params.gravity_mps2
    inertia = params.mass_kg * params.rotating_mass_factor * np.asarray(accel_mps2)
    rolling = np.where(np.asarray(speed_mps) > 0.0, weight_n * params.rolling_resistance * cos_theta, 0.0)
    drag = 0.5 * params.air_density_kg_m3 * params.drag_area_m2 * np.square(speed_mps)
    return np.asarray(inertia + rolling + drag + weight_n * sin_theta, dtype=np.float64)


# --- drive cycles ----------------------------------------------------------------------------

# Phases and characters are plain ints, not enums: the step runs a few dozen array operations
# and an enum attribute lookup per use would cost as much as the arithmetic.
_STOPPED, _ACCELERATING, _CRUISING, _BRAKING = 0, 1, 2, 3
_TOWN, _MOTORWAY = 0, 1
_URBAN, _HIGHWAY, _MIXED = int(Route.URBAN), int(Route.HIGHWAY), int(Route.MIXED)

# Driving styles: per quantity, a uniform (low, high) range for town and for motorway stretches.
# Fixed values (a probability, a wobble size) have low == high.
_STYLE_RANGES: FloatArray = np.array(
    [
        # town                  motorway
        [[25 * KMH, 55 * KMH], [90 * KMH, 130 * KMH]],  # cruise speed, m/s
        [[10.0, 60.0], [60.0, 600.0]],  # cruise duration, s
        [[0.0, 0.0], [60 * KMH, 90 * KMH]],  # interruption speed, m/s: a red light / slow traffic
        [[5.0, 45.0], [20.0, 120.0]],  # interruption duration, s: waiting at the light / in traffic
        [[1.0, 2.0], [0.8, 1.5]],  # acceleration below the knee, m/s^2
        [[1.0, 2.5], [0.5, 1.5]],  # braking, m/s^2 (on the motorway, mostly lifting off)
        [[0.5, 0.5], [0.25, 0.25]],  # chance that a manoeuvre is an interruption
        [[0.4, 0.4], [1.0, 1.0]],  # sigma of the cruising speed wobble, m/s
    ]
)
_CRUISE_MPS, _CRUISE_S, _INTERRUPT_MPS, _INTERRUPT_S, _ACCEL, _BRAKE, _P_INTERRUPT, _WOBBLE = range(len(_STYLE_RANGES))
_STYLE_LOW: FloatArray = np.ascontiguousarray(_STYLE_RANGES[:, :, 0].T)  # (character, quantity)
_STYLE_SPAN: FloatArray = np.ascontiguousarray((_STYLE_RANGES[:, :, 1] - _STYLE_RANGES[:, :, 0]).T)

# Rows of the per-step block of uniforms: each use of randomness has its own.
_U_CHARACTER, _U_INTERRUPT, _U_TARGET, _U_RATE, _U_HOLD, _U_FINISH = range(6)
_N_UNIFORMS = 6


class _Style:
    """Each vehicle's row of the style table, for its character (town or motorway)."""

    def __init__(self, character: IntArray) -> None:
        # take() on the small table: several times faster than fancy indexing it.
        self.low: FloatArray = _STYLE_LOW.take(character, axis=0)
        self.span: FloatArray = _STYLE_SPAN.take(character, axis=0)

    def draw(self, quantity: int, u: FloatArray) -> FloatArray:
        """Map uniforms ``u`` into each vehicle's range for ``quantity``."""
        return self.low[:, quantity] + u * self.span[:, quantity]


def _read_only(values: _Array) -> _Array:
    """A view the caller cannot write through: the fleet's state is not theirs to change.

    The state arrays are replaced, never written in place, so a view is also a snapshot.
    """
    view = values.view()
    view.flags.writeable = False
    return view


class DriveCycles:
    """Speed profiles for a fleet of vehicles, vectorised; deterministic given the rng."""

    def __init__(self, n_vehicles: int, rng: np.random.Generator) -> None:
        if n_vehicles < 1:
            raise ValueError("n_vehicles must be at least 1")
        self._n = n_vehicles
        self._rng = rng
        self._speed: FloatArray = np.zeros(n_vehicles)
        self._phase: IntArray = np.full(n_vehicles, _STOPPED, dtype=np.int64)
        self._route: IntArray = np.full(n_vehicles, _URBAN, dtype=np.int64)
        self._character: IntArray = np.full(n_vehicles, _TOWN, dtype=np.int64)
        self._target: FloatArray = np.zeros(n_vehicles)  # speed the current phase heads for / cruises at
        self._rate: FloatArray = np.zeros(n_vehicles)  # m/s^2 of the current acceleration or braking
        self._timer: FloatArray = np.zeros(n_vehicles)  # s left standing still or cruising
        self._interrupted: BoolArray = np.zeros(n_vehicles, dtype=bool)  # the target is a light / a slowdown
        self._wander: FloatArray = np.zeros(n_vehicles)  # where the cruising driver drifts to, m/s off target
        self._offset: FloatArray = np.zeros(n_vehicles)  # where the car actually is, m/s off target
        self._on_trip: BoolArray = np.zeros(n_vehicles, dtype=bool)
        self._finishing: BoolArray = np.zeros(n_vehicles, dtype=bool)
        self._arrived: BoolArray = np.zeros(n_vehicles, dtype=bool)

    # --- commands --------------------------------------------------------------------------

    def start(self, which: BoolArray, route: IntArray | int) -> None:
        """Begin a trip from standstill for vehicles where `which` is True, on the given route(s).

        ``route`` is a Route per vehicle, or one for all. A vehicle already on a trip is not
        teleported to standstill: it takes the new route from its current speed (a new manoeuvre
        at the next step), and any pending finish() is cancelled.
        """
        which = self._mask(which)
        routes = np.broadcast_to(np.asarray(route, dtype=np.int64), (self._n,))
        if not np.isin(routes[which], list(Route)).all():
            raise ValueError(f"route must be one of {[int(r) for r in Route]}")
        self._route = np.where(which, routes, self._route)
        self._phase = np.where(which, np.where(self._speed > 0.0, _CRUISING, _STOPPED), self._phase)
        self._timer = np.where(which, 0.0, self._timer)  # the first manoeuvre is drawn at the next step
        self._on_trip = self._on_trip | which
        self._finishing = self._finishing & ~which
        self._arrived = self._arrived & ~which

    def finish(self, which: BoolArray) -> None:
        """Ask these vehicles to end their trip.

        They brake to a stop at an ordinary rate (no instant stop), then report `arrived`.
        """
        self._finishing = self._finishing | (self._mask(which) & self._on_trip)

    def step(self, dt_s: float) -> tuple[FloatArray, FloatArray]:
        """Advance every vehicle by dt_s; returns (speed_mps, accel_mps2) per vehicle.

        The acceleration is the mean over the step (speed change / dt), so integrating it gives
        back the speed exactly. Vehicles not on a trip have speed 0, accel 0.
        """
        if dt_s <= 0:
            raise ValueError("dt_s must be positive")
        u = self._rng.random((_N_UNIFORMS, self._n))
        z = self._rng.standard_normal(self._n)
        self._brake_finishers(u[_U_FINISH])
        self._timer = self._timer - dt_s
        holding = (self._phase == _STOPPED) | (self._phase == _CRUISING)
        self._next_manoeuvre(self._on_trip & ~self._finishing & holding & (self._timer <= 0.0), u)
        style = _Style(self._character)
        speed, reached = self._move(dt_s, z, style)
        accel = (speed - self._speed) / dt_s
        self._speed = speed
        self._settle(reached, u[_U_HOLD], style)
        return speed.copy(), accel

    # --- state -----------------------------------------------------------------------------

    @property
    def speed_mps(self) -> FloatArray:
        """Each vehicle's speed after the last step (a read-only view)."""
        return _read_only(self._speed)

    @property
    def on_trip(self) -> BoolArray:
        """Started and not yet arrived (a vehicle braking after finish() is still on its trip)."""
        return _read_only(self._on_trip)

    @property
    def arrived(self) -> BoolArray:
        """Finished trips that have come to a stop (cleared by the next start())."""
        return _read_only(self._arrived)

    @property
    def route(self) -> IntArray:
        """Each vehicle's route (a Route value), as set by the last start()."""
        return _read_only(self._route)

    # --- the phase machine -----------------------------------------------------------------

    def _mask(self, which: BoolArray) -> BoolArray:
        mask = np.asarray(which, dtype=bool)
        if mask.shape != (self._n,):
            raise ValueError(f"expected a boolean mask of shape ({self._n},), got {mask.shape}")
        return mask

    def _brake_finishers(self, u: FloatArray) -> None:
        """Finishing vehicles brake to 0 at an ordinary rate (unless they already are)."""
        heading_home = (self._phase == _BRAKING) & (self._target == 0.0)
        turn = self._finishing & ~heading_home
        rate = FINISH_BRAKE_MPS2[0] + u * (FINISH_BRAKE_MPS2[1] - FINISH_BRAKE_MPS2[0])
        self._phase = np.where(turn, _BRAKING, self._phase)
        self._target = np.where(turn, 0.0, self._target)
        self._rate = np.where(turn, rate, self._rate)
        self._interrupted = self._interrupted & ~turn

    def _next_manoeuvre(self, due: BoolArray, u: FloatArray) -> None:
        """Vehicles whose stop or cruise is over pick a new target speed (and how fast to get there)."""
        mixed_character = np.where(u[_U_CHARACTER] < MIXED_HIGHWAY_SHARE, _MOTORWAY, _TOWN)
        own_character = np.where(self._route == _HIGHWAY, _MOTORWAY, _TOWN)
        character = np.where(self._route == _MIXED, mixed_character, own_character)
        style = _Style(character)
        # An interruption (a light, slow traffic) only makes sense for a car that is moving.
        interrupted = (u[_U_INTERRUPT] < style.low[:, _P_INTERRUPT]) & (self._speed > 0.0)
        target = np.where(interrupted, style.draw(_INTERRUPT_MPS, u[_U_TARGET]), style.draw(_CRUISE_MPS, u[_U_TARGET]))
        faster = target > self._speed
        rate = np.where(faster, style.draw(_ACCEL, u[_U_RATE]), style.draw(_BRAKE, u[_U_RATE]))
        self._character = np.where(due, character, self._character)
        self._interrupted = np.where(due, interrupted, self._interrupted)
        self._target = np.where(due, target, self._target)
        self._phase = np.where(due, np.where(faster, _ACCELERATING, _BRAKING), self._phase)
        self._rate = np.where(due, rate, self._rate)

    def _move(self, dt_s: float, z: FloatArray, style: _Style) -> tuple[FloatArray, BoolArray]:
        """Each vehicle's speed at the end of the step, and which ones reached their phase's target."""
        v = self._speed
        accelerating = self._phase == _ACCELERATING
        braking = self._phase == _BRAKING
        cruising = self._phase == _CRUISING
        # Constant acceleration up to the knee, then roughly constant power (a falls as 1/v).
        accel = self._rate * ACCEL_KNEE_MPS / np.maximum(v, ACCEL_KNEE_MPS)
        rising = np.minimum(v + accel * dt_s, self._target)
        falling = np.maximum(v - self._rate * dt_s, self._target)
        wobbling = self._target + self._wobble(cruising, dt_s, z, style.low[:, _WOBBLE])
        speed = np.where(accelerating, rising, np.where(braking, falling, np.where(cruising, wobbling, 0.0)))
        reached = (accelerating & (rising >= self._target)) | (braking & (falling <= self._target))
        return np.minimum(np.maximum(speed, 0.0), MAX_SPEED_MPS), reached

    def _wobble(self, cruising: BoolArray, dt_s: float, z: FloatArray, sigma: FloatArray) -> FloatArray:
        """Advance the cruising drivers' speed wobble (OU intention, lagged foot); zero for everyone else."""
        keep = np.exp(-dt_s / WANDER_TAU_S)
        bound = WANDER_BOUND_SIGMA * sigma
        wander = np.minimum(np.maximum(self._wander * keep + sigma * np.sqrt(1.0 - keep * keep) * z, -bound), bound)
        offset = self._offset + (wander - self._offset) * -np.expm1(-dt_s / FOOT_LAG_S)
        self._wander = np.where(cruising, wander, 0.0)
        self._offset = np.where(cruising, offset, 0.0)
        return self._offset

    def _settle(self, reached: BoolArray, u_hold: FloatArray, style: _Style) -> None:
        """Vehicles that reached their target cruise, wait at the light, or - at the end of a trip - arrive."""
        at_rest = reached & (self._target == 0.0)
        arriving = at_rest & self._finishing
        waiting = at_rest & ~self._finishing
        cruising = reached & ~at_rest
        hold = np.where(self._interrupted, style.draw(_INTERRUPT_S, u_hold), style.draw(_CRUISE_S, u_hold))
        self._phase = np.where(cruising, _CRUISING, np.where(at_rest, _STOPPED, self._phase))
        self._timer = np.where(cruising | waiting, hold, self._timer)
        self._on_trip = self._on_trip & ~arriving
        self._finishing = self._finishing & ~arriving
        self._arrived = self._arrived | arriving
