"""The load test's latency picture: how end-to-end and ingest latency behaved over a run.

Three panels: each reading's end-to-end latency (its timestamp to its batch file being
durable) against when it was sent, with per-second P50/P95/P99; the ingest round trip
per second with the accepted readings per second; and the histogram of end-to-end
latency with its percentiles marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

QUANTILES = (50, 95, 99)
COLOURS = {50: "tab:blue", 95: "tab:orange", 99: "tab:red"}
MAX_SCATTER = 30_000
"""Points drawn in the scatter (a random sample beyond it); the percentile lines use all."""


@dataclass
class LatencySeries:
    sent_s: np.ndarray
    """Per accepted reading: when it was sent, seconds after the run's start."""
    e2e_ms: np.ndarray
    """Per accepted reading: end-to-end latency; NaN where it was not found on disk."""
    request_s: np.ndarray
    """Per accepted request: when it was sent, seconds after the start."""
    ingest_ms: np.ndarray
    """Per accepted request: the HTTP round trip."""
    title: str = ""
    refused_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per request not accepted: when it was sent, seconds after the start."""
    refused_count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Per request not accepted: the readings it carried."""


def per_second(times_s: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per whole second of ``times_s``: the bin's middle, and P50/P95/P99 of ``values`` (rows)."""
    keep = np.isfinite(values) & np.isfinite(times_s)
    times_s, values = times_s[keep], values[keep]
    if times_s.size == 0:
        return np.zeros(0), np.zeros((len(QUANTILES), 0))
    seconds = np.floor(times_s).astype(np.int64)
    order = np.argsort(seconds, kind="stable")
    seconds, values = seconds[order], values[order]
    bins, starts = np.unique(seconds, return_index=True)
    groups = np.split(values, starts[1:])
    table = np.array([np.percentile(group, QUANTILES) for group in groups]).T
    return bins + 0.5, table


def log_bins(values: np.ndarray, count: int = 60) -> np.ndarray:
    low = max(float(values.min()), 0.1)
    high = max(float(values.max()), low * 1.01)
    return np.geomspace(low, high, count + 1)


def plot_latency(series: LatencySeries, path: Path) -> Path:
    """Render the run to ``path`` (PNG); returns the path."""
    figure = Figure(figsize=(11, 11), layout="constrained")
    over_time, ingest, histogram = figure.subplots(3, 1)
    found = np.isfinite(series.e2e_ms)
    e2e = np.clip(series.e2e_ms[found], 0.1, None)
    sent = series.sent_s[found]
    lost = int((~found).sum())

    _scatter_over_time(over_time, sent, e2e)
    over_time.set_title("end-to-end latency (reading timestamp → batch file durable) by send time")
    over_time.set_ylabel("end-to-end ms")
    if lost:
        over_time.text(0.01, 0.97, f"{lost} accepted readings not on disk", transform=over_time.transAxes, va="top")

    _ingest_over_time(ingest, series)
    _histogram(histogram, e2e)

    if series.title:
        figure.suptitle(series.title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _scatter_over_time(axes: Axes, sent: np.ndarray, e2e: np.ndarray) -> None:
    if e2e.size:
        sample = np.arange(e2e.size)
        if e2e.size > MAX_SCATTER:
            sample = np.random.default_rng(0).choice(e2e.size, MAX_SCATTER, replace=False)
        axes.scatter(sent[sample], e2e[sample], s=2, alpha=0.15, color="grey", rasterized=True, label="readings")
        axes.set_yscale("log")
    _percentile_lines(axes, sent, e2e)
    axes.set_xlabel("send time (s after start)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")


def _ingest_over_time(axes: Axes, series: LatencySeries) -> None:
    _percentile_lines(axes, series.request_s, series.ingest_ms)
    if series.ingest_ms.size and float(np.nanmin(series.ingest_ms)) > 0:
        axes.set_yscale("log")
    axes.set_title("ingest latency (HTTP round trip) per second; readings accepted and refused per second")
    axes.set_ylabel("ingest ms")
    axes.set_xlabel("send time (s after start)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    if series.sent_s.size or series.refused_s.size:
        rate = axes.twinx()
        seconds, accepted = per_second_counts(series.sent_s, np.ones(series.sent_s.size))
        rate.step(seconds, accepted, where="mid", color="green", alpha=0.6, label="accepted readings/s")
        if series.refused_s.size:
            seconds, refused = per_second_counts(series.refused_s, series.refused_count)
            rate.step(seconds, refused, where="mid", color="red", alpha=0.6, label="refused readings/s")
        rate.set_ylabel("readings / s (by send time)")
        rate.set_ylim(bottom=0)
        rate.legend(loc="upper right", fontsize="small")


def per_second_counts(times_s: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per whole second of ``times_s``: the bin's middle and the sum of ``weights`` in it."""
    if not times_s.size:
        return np.zeros(0), np.zeros(0)
    seconds = np.floor(times_s).astype(np.int64)
    first = int(seconds.min())
    sums = np.bincount(seconds - first, weights=np.asarray(weights, dtype=np.float64))
    return np.arange(sums.size) + first + 0.5, sums


def _histogram(axes: Axes, e2e: np.ndarray) -> None:
    axes.set_title("end-to-end latency distribution")
    axes.set_xlabel("end-to-end ms (log scale)")
    axes.set_ylabel("readings")
    if not e2e.size:
        axes.text(0.5, 0.5, "no reading found on disk", transform=axes.transAxes, ha="center")
        return
    axes.hist(e2e, bins=log_bins(e2e).tolist(), color="grey", alpha=0.7)
    axes.set_xscale("log")
    for q, value in zip(QUANTILES, np.percentile(e2e, QUANTILES), strict=True):
        axes.axvline(value, color=COLOURS[q], linestyle="--", label=f"P{q} {value:.0f} ms")
    axes.legend(loc="upper right", fontsize="small")
    axes.grid(True, which="both", alpha=0.3)


def _percentile_lines(axes: Axes, times_s: np.ndarray, values: np.ndarray) -> None:
    middles, table = per_second(times_s, values)
    for q, row in zip(QUANTILES, table, strict=True):
        axes.plot(middles, row, color=COLOURS[q], marker=".", label=f"P{q} per second")
