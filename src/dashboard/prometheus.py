"""Prometheus text, parsed with prometheus_client's own parser, and what two scrapes say together.

A :class:`Scrape` is one answer of a ``/metrics`` endpoint; rates and latency percentiles
come from the differences between two of them (``increase``, ``histogram_increase``),
with counter resets (a restarted process) handled as Prometheus does: a counter that went
down started again from zero, so its increase is its new value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = Mapping[str, str]
Buckets = tuple[tuple[float, float], ...]
"""A histogram's cumulative buckets: ``(upper bound, observations at or below it)``, ascending, +Inf last."""


@dataclass(frozen=True)
class Scrape:
    """One ``/metrics`` answer: every sample by its name, with its labels; ``at`` is when it arrived (monotonic s)."""

    at: float
    samples: Mapping[str, tuple[tuple[Labels, float], ...]] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.samples

    def total(self, name: str, where: Callable[[Labels], bool] | None = None) -> float | None:
        """The sum of the samples called ``name`` whose labels ``where`` accepts (all if not given);
        None when the endpoint exports no sample of that name."""
        if name not in self.samples:
            return None
        return sum((value for labels, value in self.samples[name] if where is None or where(labels)), 0.0)

    def buckets(self, name: str) -> Buckets | None:
        """The cumulative buckets of histogram ``name`` (summed over any other labels); None if absent."""
        rows = self.samples.get(f"{name}_bucket")
        if rows is None:
            return None
        by_bound: dict[float, float] = {}
        for labels, value in rows:
            bound = float(labels["le"])
            by_bound[bound] = by_bound.get(bound, 0.0) + value
        return tuple(sorted(by_bound.items()))


def parse(text: str, at: float) -> Scrape:
    """``text`` in Prometheus' text format as a :class:`Scrape`; ValueError when it is not that format."""
    samples: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return Scrape(at=at, samples={name: tuple(rows) for name, rows in samples.items()})


def increase(old: float | None, new: float | None) -> float | None:
    """How much a counter grew from ``old`` to ``new``; after a reset (it went down) its new value."""
    if old is None or new is None:
        return None
    return new - old if new >= old else new


def rate(old: Scrape | None, new: Scrape | None, name: str) -> float | None:
    """Per second increase of counter ``name`` between two scrapes of one endpoint; None if either lacks it."""
    if old is None or new is None or new.at <= old.at:
        return None
    grown = increase(old.total(name), new.total(name))
    return None if grown is None else grown / (new.at - old.at)


def histogram_increase(old: Buckets | None, new: Buckets | None) -> Buckets | None:
    """The observations between two scrapes of a histogram, bucket by bucket; None if either is missing.

    A histogram that shrank, or whose bounds changed, belongs to a restarted process: all it holds is new.
    """
    if old is None or new is None:
        return None
    if [bound for bound, _ in old] != [bound for bound, _ in new] or new[-1][1] < old[-1][1]:
        return new
    return tuple((bound, count - before) for (bound, count), (_, before) in zip(new, old, strict=True))


def add_buckets(histograms: Sequence[Buckets]) -> Buckets | None:
    """Several histograms with the same bounds (one per consumer) as one; None if none or bounds differ."""
    if not histograms:
        return None
    bounds = [bound for bound, _ in histograms[0]]
    if any([bound for bound, _ in other] != bounds for other in histograms[1:]):
        return None
    return tuple((bound, sum(h[i][1] for h in histograms)) for i, bound in enumerate(bounds))


@dataclass(frozen=True)
class Quantile:
    """An estimate from a histogram, in the histogram's unit, and whether it fell beyond its last finite bound."""

    value: float
    beyond_last_bound: bool = False


def quantile(q: float, buckets: Buckets | None) -> Quantile | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding rank ``q`` x count.

    The estimate is only as fine as the buckets: within one it assumes observations spread
    evenly. A rank in the +Inf bucket answers the last finite bound, marked as a floor.
    None when the histogram holds no observation.
    """
    if not buckets or buckets[-1][1] <= 0 or not math.isinf(buckets[-1][0]):
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return Quantile(lower, beyond_last_bound=True)
            return Quantile(lower + (bound - lower) * (rank - below) / (count - below))
        lower, below = bound, count
    return None  # pragma: no cover - the +Inf bucket holds every observation
