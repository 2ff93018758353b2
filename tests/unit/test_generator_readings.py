"""Readings built from snapshots: the contract's schema, the DBC's resolution, valid every time.

Snapshots are built by hand from seeded random values rather than by running a fleet, so
these tests pin the serialiser, not the battery model.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from src.common.schema import SIGNALS, Reading
from src.generator.battery_model import PackSnapshot
from src.generator.dbc_signals import PRIMARY_CAN_ID, decode, encode, quantise
from src.generator.readings import (
    CAN_ID,
    SNAPSHOT_FIELDS,
    jsonl_block,
    readings,
    signal_columns,
    to_json,
    vehicle_ids,
)

AT = datetime(2025, 10, 19, 17, 15, 23, 456000, tzinfo=UTC)


def _snapshot(n: int, seed: int) -> PackSnapshot:
    """A plausible fleet snapshot: charging and driving packs, cell spreads of a few mV and degrees."""
    rng = np.random.default_rng(seed)
    cell_v = rng.uniform(3.0, 4.2, n)
    cell_t = rng.uniform(-25.0, 55.0, n)
    voltage = cell_v * 96 + rng.normal(0.0, 0.5, n)
    return PackSnapshot(
        soc=rng.uniform(0.0, 100.0, n),
        voltage=voltage,
        current=rng.uniform(-400.0, 150.0, n),
        cell_voltage_min=cell_v,
        cell_voltage_max=cell_v + rng.uniform(0.0, 0.08, n),
        cell_temp_min=cell_t,
        cell_temp_max=cell_t + rng.uniform(0.0, 6.0, n),
        open_circuit_voltage=voltage + rng.uniform(-5.0, 5.0, n),
    )


def _one(**values: float) -> PackSnapshot:
    return PackSnapshot(**{field: np.array([value]) for field, value in values.items()})


EDGE = _one(
    soc=100.04,  # a hair above full: saturates to 100.0 rather than failing the DBC range
    voltage=1000.2,
    current=-2500.0,
    cell_voltage_min=-0.001,
    cell_voltage_max=5.0004,
    cell_temp_min=-70.0,
    cell_temp_max=150.05,
    open_circuit_voltage=1000.0,
)


def test_vehicle_ids_are_stable_and_zero_padded() -> None:
    """Ids name the same vehicle in every run of a seed, and sort in vehicle order."""
    assert vehicle_ids(3) == ["veh-00001", "veh-00002", "veh-00003"]


def test_can_id_is_the_dbc_primary_frame() -> None:
    """A reading's can_id names the DBC's pack status frame, from one definition."""
    assert CAN_ID == PRIMARY_CAN_ID == "0x1F0"


def test_every_reading_validates_against_the_shared_schema() -> None:
    """The receiver validates with Reading; the simulator must never send what it would refuse."""
    ids = vehicle_ids(300)
    for seed in range(5):
        for line in jsonl_block(_snapshot(300, seed), AT, ids).splitlines():
            assert Reading.model_validate_json(line).can_id == CAN_ID
    for line in jsonl_block(EDGE, AT, ["veh-00001"]).splitlines():
        Reading.model_validate_json(line)


def test_every_payload_is_what_the_frames_decode_to() -> None:
    """Each reading is exactly the decode of the BMS frames the pack would send, saturated values included."""
    snapshot = _snapshot(500, seed=7)
    for reading in [*readings(snapshot, AT, vehicle_ids(500)), *readings(EDGE, AT, ["veh-00001"])]:
        payload = reading["payload"]
        assert decode(encode(payload)) == payload


def test_columns_are_the_dbc_quantisation_of_the_snapshot() -> None:
    """The serialiser adds nothing of its own: each column is dbc_signals.quantise of its snapshot array."""
    snapshot = _snapshot(200, seed=3)
    columns = signal_columns(snapshot)
    for name, column in zip(SIGNALS, columns, strict=True):
        assert column == quantise(name, getattr(snapshot, SNAPSHOT_FIELDS[name])).tolist()
        assert all(type(value) is float for value in column)  # plain floats for orjson


def test_reading_shape_timestamp_and_resolution() -> None:
    """Timestamp in canonical UTC 'Z' form, the seven signals, at the DBC's resolutions."""
    snap = _one(
        soc=85.5432,
        voltage=400.2499,
        current=-0.04,
        cell_voltage_min=3.45049,
        cell_voltage_max=3.6701,
        cell_temp_min=28.54,
        cell_temp_max=31.16,
        open_circuit_voltage=401.0,
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


def test_values_print_at_their_resolution_not_as_binary_noise() -> None:
    """cantools alone would decode 370.2 V as 370.20000000000005; readings carry the decimal the DBC means."""
    snap = replace(_snapshot(1, seed=0), voltage=np.array([370.2]), soc=np.array([0.3]))
    body = to_json(readings(snap, AT, ["veh-00001"])[0])
    assert b'"battery_voltage":370.2,' in body
    assert b'"battery_soc":0.3,' in body


def test_out_of_range_values_are_saturated_to_the_dbc_range() -> None:
    """A BMS saturates what its frame cannot carry, so the reading holds the range's bounds."""
    (reading,) = readings(EDGE, AT, ["veh-00001"])
    assert reading["payload"] == {
        "battery_soc": 100.0,
        "battery_voltage": 1000.0,
        "battery_current": -2000.0,
        "cell_voltage_min": 0.0,
        "cell_voltage_max": 5.0,
        "cell_temp_min": -60.0,
        "cell_temp_max": 150.0,
    }


def test_jsonl_block_is_one_reading_per_line() -> None:
    """The offline file format: exactly the per-reading JSON, newline-terminated, in vehicle order."""
    snapshot = _snapshot(50, seed=11)
    ids = vehicle_ids(50)
    expected = b"".join(to_json(reading) + b"\n" for reading in readings(snapshot, AT, ids))
    assert jsonl_block(snapshot, AT, ids) == expected


def test_jsonl_block_splits_records_only_between_readings() -> None:
    """Record separators are found in the serialised list; text inside a vehicle id must never look like one."""
    ids = ['odd},{"timestamp":1}', "plain", '},{"']
    block = jsonl_block(_snapshot(3, seed=5), AT, ids)
    assert block.endswith(b"\n")
    assert [orjson.loads(line)["vehicle_id"] for line in block.splitlines()] == ids


def test_an_empty_fleet_writes_nothing() -> None:
    """Zero vehicles is an empty block, not a blank line."""
    assert jsonl_block(_snapshot(0, seed=0), AT, []) == b""
    assert signal_columns(_snapshot(0, seed=0)) == [[] for _ in SIGNALS]


def test_id_count_must_match_the_fleet() -> None:
    """A mismatch would silently drop or misattribute vehicles."""
    with pytest.raises(ValueError):
        readings(_snapshot(2, seed=0), AT, ["veh-00001"])
