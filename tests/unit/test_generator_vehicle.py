"""The vehicle model: road-load power at the battery, and drive cycles that look like driving."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from src.generator.vehicle import (
    MAX_SPEED_MPS,
    DriveCycles,
    FloatArray,
    Route,
    VehicleParameters,
    battery_power_w,
)

PARAMS = VehicleParameters()
KMH = 1 / 3.6
A_MAX = 3.5  # m/s^2: no ordinary driver exceeds it either way
DT = 0.2  # the simulator's step


def power(speed: float, accel: float, grade: float = 0.0, params: VehicleParameters = PARAMS) -> float:
    return float(battery_power_w(np.array([speed]), np.array([accel]), params, grade)[0])


def road_load_n(speed: float, grade: float = 0.0) -> float:
    """The steady-state wheel force, written out independently of the module."""
    theta = np.arctan(grade)
    weight = PARAMS.mass_kg * PARAMS.gravity_mps2
    drag = 0.5 * PARAMS.air_density_kg_m3 * PARAMS.drag_area_m2 * speed**2
    return float(weight * PARAMS.rolling_resistance * np.cos(theta) + drag + weight * np.sin(theta))


@dataclass
class Run:
    """Every vehicle's speed at the start and end of each step (``speed[0]`` is the start), and each step's accel."""

    speed: FloatArray  # (steps + 1, vehicles)
    accel: FloatArray  # (steps, vehicles)
    dt: float

    @property
    def mid_speed(self) -> FloatArray:
        return (self.speed[1:] + self.speed[:-1]) / 2


def drive(cycles: DriveCycles, seconds: float, dt: float = DT) -> Run:
    speeds, accels = [cycles.speed_mps.copy()], []
    for _ in range(round(seconds / dt)):
        speed, accel = cycles.step(dt)
        speeds.append(speed)
        accels.append(accel)
    return Run(np.array(speeds), np.array(accels), dt)


def fleet(n: int, route: int | np.ndarray, seed: int = 1) -> DriveCycles:
    cycles = DriveCycles(n, np.random.default_rng(seed))
    cycles.start(np.ones(n, dtype=bool), route)
    return cycles


ROUTES = np.arange(30) % 3  # ten vehicles on each route


def on(route: Route) -> np.ndarray:
    """Which of the hour's vehicles drive ``route``."""
    return np.equal(ROUTES, route)


@pytest.fixture(scope="module")
def hour() -> Run:
    """An hour of thirty vehicles, ten per route, at 1 s steps (long enough for stable means, quick to run)."""
    return drive(fleet(30, ROUTES), 3600.0, dt=1.0)


# --- power at the battery ----------------------------------------------------------------------


def test_steady_cruise_draws_the_road_load() -> None:
    """At constant speed on the flat the battery supplies rolling + drag losses through the drivetrain,
    plus the drivetrain's fixed losses."""
    v = 100 * KMH
    expected = road_load_n(v) * v / PARAMS.drivetrain_efficiency + PARAMS.drivetrain_loss_w
    assert power(v, 0.0) == pytest.approx(expected)
    assert 10_000 < power(v, 0.0) < 15_000  # an i3 at 100 km/h: ~14 kW


def test_acceleration_draws_more_than_cruising() -> None:
    """Accelerating adds m*k*a*v at the wheels: the rotating-mass factor counts."""
    v, a = 50 * KMH, 1.0
    inertia_n = PARAMS.mass_kg * PARAMS.rotating_mass_factor * a
    wheel_w = (road_load_n(v) + inertia_n) * v
    assert power(v, a) == pytest.approx(wheel_w / PARAMS.drivetrain_efficiency + PARAMS.drivetrain_loss_w)
    assert power(v, a) > power(v, 0.0) > 0


def test_braking_regenerates_within_the_limit() -> None:
    """Braking returns wheel power times efficiency, less the drivetrain's fixed losses, never more than
    the regen limit (friction brakes do the rest)."""
    v = 50 * KMH
    wheel_w = (road_load_n(v) - PARAMS.mass_kg * PARAMS.rotating_mass_factor * 1.0) * v
    assert power(v, -1.0) == pytest.approx(wheel_w * PARAMS.drivetrain_efficiency + PARAMS.drivetrain_loss_w)
    assert power(v, -1.0) < 0
    assert power(100 * KMH, -2.5) == pytest.approx(-PARAMS.max_regen_power_w)


def test_standstill_draws_nothing() -> None:
    """A car at rest needs no traction power, whatever the accel or the hill (auxiliaries are the battery model's)."""
    for accel in (-2.0, 0.0, 2.0):
        for grade in (-0.1, 0.0, 0.1):
            assert power(0.0, accel, grade) == 0.0


def test_regen_fades_out_at_low_speed() -> None:
    """Below the fade speed regen falls linearly to zero, as the friction brakes take over the last metres."""
    wheel_w = (road_load_n(1.0) - PARAMS.mass_kg * PARAMS.rotating_mass_factor * 1.0) * 1.0
    assert PARAMS.regen_fade_speed_mps == 2.0
    assert power(1.0, -1.0) == pytest.approx(wheel_w * PARAMS.drivetrain_efficiency * 0.5 + PARAMS.drivetrain_loss_w)
    lossless = VehicleParameters(drivetrain_loss_w=0.0)
    speeds = np.linspace(0.0, lossless.regen_fade_speed_mps, 9)
    regen = battery_power_w(speeds, np.full(9, -1.5), lossless)
    assert regen[0] == 0.0
    assert np.all(np.diff(regen) < 0)  # more regen the faster the car, up to the fade speed


def test_traction_is_capped_at_motor_power() -> None:
    """The battery never supplies more than the motor's rated power, however hard the demand."""
    assert power(30.0, A_MAX) == PARAMS.max_traction_power_w
    assert power(30.0, A_MAX, params=VehicleParameters(max_traction_power_w=60_000.0)) == 60_000.0


def test_grade_adds_the_climbing_force() -> None:
    """A slope (given as rise/run) adds m*g*sin(theta) uphill, and a steep enough descent regenerates."""
    v, grade = 50 * KMH, 0.06
    extra_w = (road_load_n(v, grade) - road_load_n(v)) * v / PARAMS.drivetrain_efficiency
    assert power(v, 0.0, grade) - power(v, 0.0) == pytest.approx(extra_w)
    climbing_n = PARAMS.mass_kg * PARAMS.gravity_mps2 * np.sin(np.arctan(grade))
    assert extra_w == pytest.approx(climbing_n * v / PARAMS.drivetrain_efficiency, rel=0.01)  # rolling barely changes
    assert power(v, 0.0, -0.06) < 0
    per_vehicle = battery_power_w(np.full(3, v), np.zeros(3), PARAMS, np.array([-0.06, 0.0, 0.06]))
    assert per_vehicle[0] < 0 < per_vehicle[1] < per_vehicle[2]


@pytest.mark.parametrize(
    "bad",
    [
        {"mass_kg": 0.0},
        {"drag_area_m2": -0.1},
        {"rolling_resistance": -0.01},
        {"max_regen_power_w": -1.0},
        {"drivetrain_efficiency": 1.2},
        {"drivetrain_efficiency": 0.0},
        {"rotating_mass_factor": 0.9},
    ],
)
def test_nonsense_parameters_are_rejected(bad: dict[str, float]) -> None:
    """Parameters that would divide by zero or create energy fail at construction, not deep in a run."""
    with pytest.raises(ValueError):
        VehicleParameters(**bad)


# --- drive cycles ----------------------------------------------------------------------------


def test_mean_speeds_fit_the_route(hour: Run) -> None:
    """Town trips average town speeds (stops included), motorway trips motorway speeds, mixed ones in between."""
    mean_kmh = {route: hour.speed[1:, on(route)].mean() / KMH for route in Route}
    assert 15 < mean_kmh[Route.URBAN] < 35
    assert 90 < mean_kmh[Route.HIGHWAY] < 125
    assert mean_kmh[Route.URBAN] + 10 < mean_kmh[Route.MIXED] < mean_kmh[Route.HIGHWAY] - 10


def test_town_trips_stop_and_motorway_trips_do_not(hour: Run) -> None:
    """Urban driving waits at lights; on the motorway traffic slows down (to 60-90 km/h) but never stops."""
    urban = hour.speed[1:, on(Route.URBAN)]
    assert 0.05 < (urban == 0).mean() < 0.5
    assert np.all((urban == 0).any(axis=0))  # every urban vehicle stopped at least once
    highway = hour.speed[300:, on(Route.HIGHWAY)]  # after the on-ramp
    assert highway.min() > 45 * KMH  # a 60 km/h slowdown, less the driver's wobble
    assert (highway < 90 * KMH).any()  # there were slowdowns


def test_mixed_trips_alternate_town_and_motorway(hour: Run) -> None:
    """A mixed trip has both town stretches (with stops) and motorway stretches."""
    mixed = hour.speed[1:, on(Route.MIXED)]
    assert (mixed > 90 * KMH).mean() > 0.2
    assert ((mixed > 0) & (mixed < 60 * KMH)).mean() > 0.1
    assert (mixed == 0).any()


def test_speed_stays_bounded_and_continuous() -> None:
    """No negative or absurd speeds, no jumps: each step's change fits a plausible acceleration."""
    cycles = fleet(30, ROUTES, seed=3)
    driving = drive(cycles, 300.0)
    cycles.finish(np.arange(30) % 2 == 0)  # include end-of-trip braking
    speed = np.vstack([driving.speed, drive(cycles, 60.0).speed[1:]])
    assert speed.min() >= 0.0
    assert speed.max() <= MAX_SPEED_MPS
    assert speed.max() > 100 * KMH  # the highway vehicles did get going
    assert np.abs(np.diff(speed, axis=0)).max() <= A_MAX * DT


def test_accel_is_the_mean_over_the_step() -> None:
    """The returned accel is (speed change)/dt, so integrating it reproduces the speed exactly."""
    run = drive(fleet(9, np.arange(9) % 3, seed=4), 120.0)
    np.testing.assert_allclose(run.accel, np.diff(run.speed, axis=0) / DT, atol=1e-12)
    assert np.abs(run.accel).max() <= A_MAX


def test_vehicles_not_on_a_trip_stay_at_rest() -> None:
    """Parked vehicles have speed 0 and accel 0 whatever the others do."""
    cycles = DriveCycles(6, np.random.default_rng(5))
    driving = np.array([True, False, True, False, False, True])
    cycles.start(driving, Route.MIXED)
    np.testing.assert_array_equal(cycles.on_trip, driving)
    run = drive(cycles, 120.0)
    assert np.all(run.speed[:, ~driving] == 0) and np.all(run.accel[:, ~driving] == 0)
    assert np.all(run.speed[:, driving].max(axis=0) > 0)
    assert not cycles.arrived.any()


def test_finish_brakes_to_a_stop_then_arrives() -> None:
    """finish() is an ordinary stop (1-2 m/s^2, no instant halt); then arrived is set and the car stays put."""
    cycles = fleet(8, Route.HIGHWAY, seed=6)
    drive(cycles, 200.0)
    moving_from = cycles.speed_mps.copy()
    assert moving_from.min() > 50 * KMH
    cycles.finish(np.ones(8, dtype=bool))
    run = drive(cycles, 60.0)
    assert np.all(run.speed[1] > 0)  # still rolling one step later
    assert np.all(np.diff(run.speed, axis=0) <= 0)  # only ever slowing down
    decel = -run.accel.min(axis=0)
    assert np.all((decel >= 1.0 - 1e-9) & (decel <= 2.0 + 1e-9))
    assert np.all(run.speed[-1] == 0)
    assert cycles.arrived.all() and not cycles.on_trip.any()
    stopped = drive(cycles, 30.0)
    assert np.all(stopped.speed == 0) and cycles.arrived.all()


def test_finish_while_waiting_at_a_light_arrives_at_once() -> None:
    """A car already standing still has nothing to brake: it arrives at the next step."""
    cycles = fleet(10, Route.URBAN, seed=7)
    for _ in range(2000):
        cycles.step(DT)
        waiting = cycles.on_trip & (cycles.speed_mps == 0)
        if waiting.any():
            break
    assert waiting.any()
    cycles.finish(waiting)
    speed, accel = cycles.step(DT)
    np.testing.assert_array_equal(cycles.arrived, waiting)
    assert np.all(speed[waiting] == 0) and np.all(accel[waiting] == 0)


def test_finish_ignores_vehicles_not_on_a_trip() -> None:
    """Finishing a parked car is a no-op: it does not suddenly report an arrival."""
    cycles = DriveCycles(3, np.random.default_rng(8))
    cycles.finish(np.ones(3, dtype=bool))
    cycles.step(DT)
    assert not cycles.arrived.any() and not cycles.on_trip.any()


def test_start_after_arrival_begins_a_new_trip() -> None:
    """The next start() clears arrived and the car pulls away from standstill on its new route."""
    cycles = fleet(4, Route.URBAN, seed=9)
    drive(cycles, 60.0)
    cycles.finish(np.ones(4, dtype=bool))
    drive(cycles, 30.0)
    assert cycles.arrived.all()
    cycles.start(np.ones(4, dtype=bool), Route.HIGHWAY)
    assert not cycles.arrived.any() and cycles.on_trip.all()
    np.testing.assert_array_equal(cycles.route, Route.HIGHWAY)
    run = drive(cycles, 60.0)
    assert np.all(run.speed[0] == 0) and np.all(run.speed[-1] > 50 * KMH)


def test_start_during_a_trip_changes_route_without_a_jump() -> None:
    """Re-starting a moving car keeps its speed continuous, switches its route and cancels a pending finish."""
    cycles = fleet(6, Route.URBAN, seed=10)
    drive(cycles, 40.0)
    cycles.finish(np.ones(6, dtype=bool))
    cycles.step(DT)
    cycles.start(np.ones(6, dtype=bool), Route.HIGHWAY)
    run = drive(cycles, 120.0)
    assert np.abs(np.diff(run.speed, axis=0)).max() <= A_MAX * DT
    assert not cycles.arrived.any() and cycles.on_trip.all()
    assert np.all(run.speed[-1] > 50 * KMH)


def test_route_per_vehicle_or_one_for_all() -> None:
    """start() takes one route for all, or one per vehicle; only the started vehicles' routes change."""
    cycles = DriveCycles(4, np.random.default_rng(11))
    cycles.start(np.array([True, True, False, False]), Route.HIGHWAY)
    cycles.start(np.array([False, False, True, True]), np.array([0, 0, 2, 1]))
    np.testing.assert_array_equal(cycles.route, [Route.HIGHWAY, Route.HIGHWAY, Route.MIXED, Route.HIGHWAY])


def test_state_is_read_only_for_callers() -> None:
    """The properties are read-only snapshots: callers can neither corrupt the state nor see it change under them."""
    cycles = fleet(3, Route.URBAN)
    cycles.step(DT)
    for view in (cycles.speed_mps, cycles.on_trip, cycles.arrived, cycles.route):
        with pytest.raises(ValueError):
            view[0] = view[1]
    on_trip, arrived = cycles.on_trip, cycles.arrived
    cycles.finish(np.ones(3, dtype=bool))
    drive(cycles, 30.0)
    assert cycles.arrived.all() and on_trip.all() and not arrived.any()


def test_same_seed_gives_the_same_profile() -> None:
    """Deterministic per seed: the whole simulator's output is reproducible only if this is."""
    a = drive(fleet(12, np.arange(12) % 3, seed=42), 120.0)
    b = drive(fleet(12, np.arange(12) % 3, seed=42), 120.0)
    np.testing.assert_array_equal(a.speed, b.speed)
    np.testing.assert_array_equal(a.accel, b.accel)


def test_different_seeds_give_different_profiles() -> None:
    """A seed must actually change the drives."""
    a = drive(fleet(12, np.arange(12) % 3, seed=1), 60.0)
    b = drive(fleet(12, np.arange(12) % 3, seed=2), 60.0)
    assert not np.array_equal(a.speed, b.speed)


def test_randomness_consumed_is_the_same_whatever_the_vehicles_do() -> None:
    """Each step draws a fixed block from the shared generator, so the battery model's draws never shift."""
    rng_a, rng_b = np.random.default_rng(12), np.random.default_rng(12)
    busy, idle = DriveCycles(5, rng_a), DriveCycles(5, rng_b)
    busy.start(np.ones(5, dtype=bool), Route.MIXED)
    for i in range(400):
        busy.step(DT)
        idle.step(DT)
        if i == 200:
            busy.finish(np.array([True, False, True, False, False]))
    assert rng_a.bit_generator.state == rng_b.bit_generator.state


def test_bad_arguments_are_rejected() -> None:
    """Misuse fails loudly at the call, not as a silent wrong profile."""
    with pytest.raises(ValueError):
        DriveCycles(0, np.random.default_rng(0))
    cycles = DriveCycles(3, np.random.default_rng(0))
    with pytest.raises(ValueError):
        cycles.start(np.ones(4, dtype=bool), Route.URBAN)
    with pytest.raises(ValueError):
        cycles.start(np.ones(3, dtype=bool), 7)
    with pytest.raises(ValueError):
        cycles.finish(np.ones(2, dtype=bool))
    with pytest.raises(ValueError):
        cycles.step(0.0)


def test_energy_use_is_that_of_an_i3(hour: Run) -> None:
    """Integrating the battery power over an hour of town and motorway driving gives the i3's ~150 Wh/km."""
    batt_w = battery_power_w(hour.mid_speed, hour.accel, PARAMS)
    distance_m = hour.mid_speed * hour.dt
    wh_per_km = {}
    for route in (Route.URBAN, Route.HIGHWAY):
        mine = on(route)
        wh_per_km[route] = batt_w[:, mine].sum() * hour.dt / 3600 / (distance_m[:, mine].sum() / 1000)
    both = on(Route.URBAN) | on(Route.HIGHWAY)
    combined = batt_w[:, both].sum() * hour.dt / 3600 / (distance_m[:, both].sum() / 1000)
    assert 120 < combined < 220
    assert wh_per_km[Route.URBAN] < wh_per_km[Route.HIGHWAY]  # for an EV, speed (drag) costs more than stops
    assert 40 < wh_per_km[Route.URBAN] < 120
    assert 130 < wh_per_km[Route.HIGHWAY] < 220
