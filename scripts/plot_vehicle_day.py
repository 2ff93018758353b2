"""Simulate one vehicle for a day and plot what its battery did: the model's picture, for people.

    python scripts/plot_vehicle_day.py [--seed 7] [--hours 24] [--capacity 94] [--output docs/vehicle-day.png]

The vehicle is stepped at the simulator's 200 ms period (so this is exactly the physics the
simulator reports), and sampled once a second for the plot: speed and activity, SOC,
current, pack voltage against its open-circuit voltage, the cell voltage spread, and the
coldest and hottest cell against ambient. A short summary (distance, energy, consumption,
charging sessions) is printed, to quote in docs/battery-model.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.generator.battery_model import CAPACITY_VARIANTS_AH, Activity, Fleet
from src.generator.cell import FloatArray

ACTIVITY_COLOURS = {Activity.DRIVING: "#d8e8f8", Activity.CHARGING: "#d9f2d9"}


@dataclass
class DayTrace:
    """One sample per second of the quantities plotted, as arrays of equal length."""

    hours: FloatArray
    speed_kmh: FloatArray
    activity: FloatArray
    soc: FloatArray
    current: FloatArray
    voltage: FloatArray
    ocv: FloatArray
    cell_v_min: FloatArray
    cell_v_max: FloatArray
    temp_min: FloatArray
    temp_max: FloatArray
    ambient_c: float
    step_s: float
    energy_out_kwh: float
    energy_in_kwh: float
    distance_km: float


def simulate(seed: int, hours: float, capacity_ah: float, step_ms: int) -> DayTrace:
    """Run one vehicle for ``hours``, keeping one sample per simulated second."""
    fleet = Fleet(1, seed=seed, capacity_ah=capacity_ah)
    dt = step_ms / 1000.0
    steps = round(hours * 3600.0 / dt)
    every = max(1, round(1.0 / dt))
    columns: dict[str, list[float]] = {name: [] for name in DayTrace.__dataclass_fields__ if name != "hours"}
    energy_out = energy_in = distance = 0.0
    began = time.perf_counter()
    for k in range(steps):
        snap = fleet.step(dt)
        power_kw = float(snap.voltage[0] * snap.current[0]) / 1000.0
        energy_out += max(-power_kw, 0.0) * dt / 3600.0
        energy_in += max(power_kw, 0.0) * dt / 3600.0
        speed = float(fleet.speed_mps[0])
        distance += speed * dt / 1000.0
        if k % every == 0:
            values = {
                "speed_kmh": speed * 3.6,
                "activity": float(fleet.activity[0]),
                "soc": float(snap.soc[0]),
                "current": float(snap.current[0]),
                "voltage": float(snap.voltage[0]),
                "ocv": float(snap.open_circuit_voltage[0]),
                "cell_v_min": float(snap.cell_voltage_min[0]),
                "cell_v_max": float(snap.cell_voltage_max[0]),
                "temp_min": float(snap.cell_temp_min[0]),
                "temp_max": float(snap.cell_temp_max[0]),
            }
            for name, value in values.items():
                columns[name].append(value)
        if k % (steps // 10 or 1) == 0 and k:
            print(f"  {k / steps:4.0%} simulated ({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
    arrays = {name: np.array(values) for name, values in columns.items() if values}
    samples = len(arrays["soc"])
    return DayTrace(
        hours=np.arange(samples, dtype=np.float64) * (every * dt / 3600.0),
        ambient_c=float(fleet.ambient_c[0]),
        step_s=dt,
        energy_out_kwh=energy_out,
        energy_in_kwh=energy_in,
        distance_km=distance,
        **arrays,
    )


def charging_sessions(activity: FloatArray) -> int:
    charging = activity == Activity.CHARGING
    return int(np.count_nonzero(charging[1:] & ~charging[:-1]) + charging[0])


def summary(trace: DayTrace) -> str:
    consumption = trace.energy_out_kwh * 1000.0 / trace.distance_km if trace.distance_km > 0 else float("nan")
    return "\n".join(
        [
            f"distance {trace.distance_km:.1f} km, "
            f"driving {np.mean(trace.activity == Activity.DRIVING):.0%} of the time",
            f"energy out {trace.energy_out_kwh:.2f} kWh, in {trace.energy_in_kwh:.2f} kWh (regen and charging), "
            f"{consumption:.0f} Wh/km drawn while driving",
            f"charging sessions {charging_sessions(trace.activity)}, SOC {trace.soc.min():.1f}-{trace.soc.max():.1f} %",
            f"current {trace.current.min():.0f} to {trace.current.max():.0f} A, "
            f"pack {trace.voltage.min():.1f}-{trace.voltage.max():.1f} V, "
            f"cells {trace.cell_v_min.min():.3f}-{trace.cell_v_max.max():.3f} V",
            f"cell temperature {trace.temp_min.min():.1f}-{trace.temp_max.max():.1f} °C "
            f"(ambient {trace.ambient_c:.1f} °C)",
        ]
    )


def plot(trace: DayTrace, output: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(6, 1, figsize=(12, 14), sharex=True, constrained_layout=True)
    hours = trace.hours
    for ax in axes:
        for activity, colour in ACTIVITY_COLOURS.items():
            ax.fill_between(
                hours, 0, 1, where=trace.activity == activity, color=colour, transform=ax.get_xaxis_transform()
            )
        ax.grid(alpha=0.3)
    speed, soc, current, voltage, cells, temps = axes
    speed.plot(hours, trace.speed_kmh, lw=0.5, color="tab:blue")
    speed.set_ylabel("speed (km/h)")
    speed.set_title(f"{title}\nblue band: driving, green band: charging")
    soc.plot(hours, trace.soc, color="tab:green")
    soc.set_ylabel("SOC (%)")
    soc.set_ylim(0, 100)
    current.plot(hours, trace.current, lw=0.4, color="tab:red")
    current.axhline(0, color="black", lw=0.5)
    current.set_ylabel("current (A)\n< 0 discharge")
    voltage.plot(hours, trace.voltage, lw=0.4, color="tab:purple", label="terminal")
    voltage.plot(hours, trace.ocv, lw=1.0, color="black", label="open circuit")
    voltage.set_ylabel("pack voltage (V)")
    voltage.legend(loc="lower left")
    cells.fill_between(hours, trace.cell_v_min, trace.cell_v_max, color="tab:orange", alpha=0.7, lw=0)
    cells.set_ylabel("cell voltage\nmin-max (V)")
    temps.plot(hours, trace.temp_max, color="tab:red", label="hottest cell")
    temps.plot(hours, trace.temp_min, color="tab:blue", label="coldest cell")
    temps.axhline(trace.ambient_c, color="gray", ls="--", lw=1, label="ambient")
    temps.set_ylabel("temperature (°C)")
    temps.set_xlabel("simulated time (h)")
    temps.legend(loc="upper left")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--capacity", type=float, choices=CAPACITY_VARIANTS_AH, default=94.0, help="cell Ah")
    parser.add_argument("--step-ms", type=int, default=200, help="model step (the simulator's --rate-ms)")
    parser.add_argument("--output", type=Path, default=Path("docs/vehicle-day.png"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"simulating one {args.capacity:.0f} Ah vehicle for {args.hours:g} h (seed {args.seed})", file=sys.stderr)
    trace = simulate(args.seed, args.hours, args.capacity, args.step_ms)
    text = summary(trace)
    print(text)
    title = f"One vehicle, {args.hours:g} simulated hours ({args.capacity:.0f} Ah pack, seed {args.seed})"
    plot(trace, args.output, title)
    print(f"plot: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
