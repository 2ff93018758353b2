"""Readings built from snapshots: the contract's schema, sensible resolution, valid every time."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from src.common.schema import SIGNALS, Reading
from src.generator.battery_model import Fleet, PackSnapshot
from src.generator.readings import CAN_ID, jsonl_block, readings, to_json, vehicle_ids

AT = datetime(2025, 10, 19, 17, 15, 23, 456000, tzinfo=UTC)


def test_vehicle_ids_are_stable_and_zero_padded() -> None:
    """Ids name the same vehicle in every run of a seed, and sort in vehicle order."""
    assert vehicle_ids(3) == ["veh-00001", "veh-00002", "veh-00003"]


def test_every_reading_validates_against_the_shared_schema() -> None:
    """The receiver validates with Reading; the simulator must never send what it would refuse."""
    fleet = Fleet(25, seed=4)
    ids = vehicle_ids(25)
    for _ in range(200):
        for line in jsonl_block(fleet.step(5.0), AT, ids).splitlines():
            reading = Reading.model_validate_json(line)
            assert reading.can_id == CAN_ID


def test_reading_shape_timestamp_and_rounding() -> None:
    """Timestamp in canonical UTC 'Z' form, the seven signals, rounded to their resolutions."""
    snap = PackSnapshot(
        soc=np.array([85.5432]),
        voltage=np.array([400.2499]),
        current=np.array([-0.04]),
        cell_voltage_min=np.array([3.45049]),
        cell_voltage_max=np.array([3.6701]),
        cell_temp_min=np.array([28.54]),
        cell_temp_max=np.array([31.16]),
        open_circuit_voltage=np.array([401.0]),
    )
    (reading,) = readings(snap, AT, ["veh-00123"])
    assert reading == {
        "timestamp": "2025-10-19T17:15:23.456000Z",
        "vehicle_id": "veh-00123",
        "can_id": "0x1F0",
        "payload": {
            "battery_soc": 85.5,
            "battery_voltage": 400.2,
            "battery_current": 0.0,  # -0.04 rounds to 0.0, not -0.0
            "cell_voltage_min": 3.45,
            "cell_voltage_max": 3.67,
            "cell_temp_min": 28.5,
            "cell_temp_max": 31.2,
        },
    }
    assert list(reading["payload"]) == list(SIGNALS)
    assert b"-0.0" not in to_json(reading)
    assert orjson.loads(to_json(reading)) == reading


def test_id_count_must_match_the_fleet() -> None:
    """A mismatch would silently drop or misattribute vehicles."""
    with pytest.raises(ValueError):
        readings(Fleet(2, seed=0).step(0.2), AT, ["veh-00001"])
