"""Checks the integration tests share."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import pytest

from src.common.schema import SIGNALS, NaturalKey


def assert_aggregates_match(aggregated: Mapping[str, Any], payloads: Mapping[NaturalKey, Mapping[str, float]]) -> None:
    """The aggregator's per-vehicle count, min, max and average equal those of ``payloads``, one per reading."""
    by_vehicle: dict[str, list[Mapping[str, float]]] = defaultdict(list)
    for key, payload in payloads.items():
        by_vehicle[key.vehicle_id].append(payload)
    assert set(aggregated) == set(by_vehicle)
    for vehicle_id, readings in by_vehicle.items():
        vehicle = aggregated[vehicle_id]
        assert vehicle["message_count"] == len(readings)
        for signal in SIGNALS:
            values = [p[signal] for p in readings]
            assert vehicle[signal]["min"] == min(values)
            assert vehicle[signal]["max"] == max(values)
            assert vehicle[signal]["avg"] == pytest.approx(sum(values) / len(values), abs=1e-6)
