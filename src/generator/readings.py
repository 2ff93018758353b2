"""Turning a fleet snapshot into readings in the contract's schema.

Values are rounded to the resolution a battery CAN frame carries (0.1 %, 0.1 V, 0.1 A,
1 mV, 0.1 °C), which also keeps the JSON short. Building a whole tick at once from array columns, and
serialising with orjson, keeps this far from being the bottleneck of either mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from src.common.schema import SIGNALS, format_timestamp
from src.generator.battery_model import PackSnapshot

CAN_ID = "0x1F0"
"""The battery status frame's CAN identifier."""

SNAPSHOT_FIELDS: dict[str, str] = {
    "battery_soc": "soc",
    "battery_voltage": "voltage",
    "battery_current": "current",
    "cell_voltage_min": "cell_voltage_min",
    "cell_voltage_max": "cell_voltage_max",
    "cell_temp_min": "cell_temp_min",
    "cell_temp_max": "cell_temp_max",
}
"""Which snapshot array feeds each payload signal."""

DECIMALS: dict[str, int] = {
    "battery_soc": 1,  # 0.1 %
    "battery_voltage": 1,  # 0.1 V
    "battery_current": 1,  # 0.1 A
    "cell_voltage_min": 3,  # 1 mV
    "cell_voltage_max": 3,
    "cell_temp_min": 1,  # 0.1 °C
    "cell_temp_max": 1,
}
"""Resolution of each signal, in decimal places."""


def vehicle_ids(n_vehicles: int) -> list[str]:
    """``veh-00001`` ... : stable ids, so a seed names the same vehicles in every run."""
    return [f"veh-{i:05d}" for i in range(1, n_vehicles + 1)]


def signal_columns(snapshot: PackSnapshot) -> list[list[float]]:
    """Each signal's rounded values as plain floats, in SIGNALS order (one list per signal).

    Rounding is monotonic, so min <= max survives it; ``+ 0.0`` turns -0.0 into 0.0 so a
    parked vehicle does not report a negative zero current.
    """
    columns = []
    for name in SIGNALS:
        values = np.asarray(getattr(snapshot, SNAPSHOT_FIELDS[name]), dtype=np.float64)
        columns.append((np.round(values, DECIMALS[name]) + 0.0).tolist())
    return columns


def readings(snapshot: PackSnapshot, timestamp: datetime, ids: Sequence[str]) -> list[dict[str, Any]]:
    """One reading per vehicle, all taken at ``timestamp``, as JSON-ready dicts."""
    if len(ids) != len(snapshot.soc):
        raise ValueError(f"{len(ids)} vehicle ids for a snapshot of {len(snapshot.soc)} vehicles")
    stamp = format_timestamp(timestamp)
    rows = zip(*signal_columns(snapshot), strict=True)
    return [
        {"timestamp": stamp, "vehicle_id": vid, "can_id": CAN_ID, "payload": dict(zip(SIGNALS, row, strict=True))}
        for vid, row in zip(ids, rows, strict=True)
    ]


def to_json(reading: dict[str, Any]) -> bytes:
    """A reading's compact JSON body."""
    return orjson.dumps(reading)


def jsonl_block(snapshot: PackSnapshot, timestamp: datetime, ids: Sequence[str]) -> bytes:
    """A tick's readings as JSONL: one line each, newline-terminated."""
    return b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in readings(snapshot, timestamp, ids))
