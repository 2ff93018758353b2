"""The load test's latency plot: a small synthetic run renders to a real PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.loadtest.latency_plot import LatencySeries, log_bins, per_second, per_second_counts, plot_latency

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_run(readings: int = 5000, seconds: float = 10.0, lost: int = 7) -> LatencySeries:
    rng = np.random.default_rng(1)
    sent_s = np.sort(rng.uniform(0, seconds, readings))
    e2e = rng.lognormal(np.log(300), 0.5, readings) + 200 * (sent_s > seconds / 2)
    e2e[rng.choice(readings, lost, replace=False)] = np.nan
    request_s = sent_s[::10]
    refused_s = rng.uniform(seconds / 2, seconds, 50)
    return LatencySeries(
        sent_s,
        e2e,
        request_s,
        rng.lognormal(np.log(20), 0.3, request_s.size),
        title="synthetic",
        refused_s=refused_s,
        refused_count=np.full(refused_s.size, 10),
    )


def test_a_small_run_renders_to_a_non_trivial_png(tmp_path: Path) -> None:
    path = plot_latency(synthetic_run(), tmp_path / "plots" / "run.png")
    assert path == tmp_path / "plots" / "run.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 30_000


def test_more_readings_than_the_scatter_draws_still_render(tmp_path: Path) -> None:
    path = plot_latency(synthetic_run(readings=40_000, lost=0), tmp_path / "big.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_a_run_with_nothing_on_disk_still_renders(tmp_path: Path) -> None:
    series = synthetic_run(readings=50)
    series.e2e_ms[:] = np.nan
    assert plot_latency(series, tmp_path / "lost.png").stat().st_size > 10_000
    empty = LatencySeries(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    assert plot_latency(empty, tmp_path / "empty.png").stat().st_size > 10_000


def test_per_second_percentiles() -> None:
    times = np.array([0.1, 0.5, 0.9, 2.2, 2.3, np.nan])
    values = np.array([1.0, 2.0, 3.0, 10.0, np.nan, 5.0])
    middles, table = per_second(times, values)
    assert middles.tolist() == [0.5, 2.5]
    assert table.shape == (3, 2)
    assert table[0].tolist() == [2.0, 10.0]
    assert table[2][0] == np.percentile([1.0, 2.0, 3.0], 99)
    assert per_second(np.zeros(0), np.zeros(0))[1].shape == (3, 0)


def test_log_bins_cover_the_values() -> None:
    bins = log_bins(np.array([5.0, 50.0, 5000.0]), count=10)
    assert bins.size == 11
    assert bins[0] == 5.0 and bins[-1] == 5000.0
    assert log_bins(np.array([0.0, 0.0]))[0] == 0.1


def test_per_second_counts_sum_weights_per_second() -> None:
    middles, sums = per_second_counts(np.array([3.2, 3.9, 5.1]), np.array([100, 100, 7]))
    assert middles.tolist() == [3.5, 4.5, 5.5]
    assert sums.tolist() == [200, 0, 7]
    assert per_second_counts(np.zeros(0), np.zeros(0))[1].size == 0
