"""Turning a fleet snapshot into readings in the contract's schema, a whole tick at once.

Every value is what the BMS's CAN frames carry once a gateway decodes them
(:mod:`src.generator.dbc_signals`): saturated to the frame's range and reported at its
resolution (0.1 %, 0.1 V, 0.1 A, 1 mV, 0.1 °C).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from src.common.schema import SIGNALS, format_timestamp
from src.generator.battery_model import PackSnapshot
from src.generator.dbc_signals import PRIMARY_CAN_ID, FloatArray, quantise_columns

CAN_ID = PRIMARY_CAN_ID
"""The battery status frame's CAN identifier, as a reading's ``can_id``."""

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

_RECORD_SEPARATOR = b'},{"'
_LINE_BREAK = b'}\n{"'
"""Between two records of a JSON list, and the same two records as JSON lines."""


def vehicle_ids(n_vehicles: int) -> list[str]:
    """``veh-00001`` ... : stable ids, so a seed names the same vehicles in every run."""
    return [f"veh-{i:05d}" for i in range(1, n_vehicles + 1)]


def signal_columns(snapshot: PackSnapshot) -> list[list[float]]:
    """Each signal's decoded values as plain floats, in SIGNALS order (one list per signal).

    Quantising is monotonic, so min <= max survives it, and it never yields -0.0, so a
    parked vehicle does not report a negative zero current.
    """
    columns: list[list[float]] = _decoded(snapshot).tolist()
    return columns


def _decoded(snapshot: PackSnapshot) -> FloatArray:
    """The snapshot's seven signals as a gateway decodes them from the BMS frames: a (7, n) array."""
    return quantise_columns([getattr(snapshot, SNAPSHOT_FIELDS[name]) for name in SIGNALS])


def fixed_timestamp(value: datetime) -> str:
    """``format_timestamp``'s text with the fraction always written: ``2026-01-15T08:00:01.000000Z``.

    ``format_timestamp`` (``datetime.isoformat``) leaves out a zero fraction, so a whole
    second would read ``...08:00:01Z`` beside ``...08:00:01.200000Z`` and sort after it as
    text. The same instant either way; offline files and the truth file use this form, so
    their lines sort by time as text.
    """
    text = format_timestamp(value)
    return text if "." in text else f"{text[:-1]}.000000Z"


def readings(snapshot: PackSnapshot, timestamp: datetime, ids: Sequence[str]) -> list[dict[str, Any]]:
    """One reading per vehicle, all taken at ``timestamp``, as JSON-ready dicts (``format_timestamp``'s text)."""
    return _records(snapshot, format_timestamp(timestamp), ids)


def _records(snapshot: PackSnapshot, stamp: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    if len(ids) != len(snapshot.soc):
        raise ValueError(f"{len(ids)} vehicle ids for a snapshot of {len(snapshot.soc)} vehicles")
    rows: list[list[float]] = _decoded(snapshot).T.tolist()  # seven values each: no strict zip needed
    return [
        {"timestamp": stamp, "vehicle_id": vid, "can_id": CAN_ID, "payload": dict(zip(SIGNALS, row, strict=False))}
        for vid, row in zip(ids, rows, strict=True)
    ]


def to_json(reading: dict[str, Any]) -> bytes:
    """A reading's compact JSON body."""
    return orjson.dumps(reading)


def jsonl_block(snapshot: PackSnapshot, timestamp: datetime, ids: Sequence[str]) -> bytes:
    """A tick's readings as JSONL: one line each, newline-terminated, timestamps in :func:`fixed_timestamp`'s form.

    One ``orjson.dumps`` of the whole list, its record separators turned into newlines: ``},{"``
    cannot occur inside a record (no arrays, and a quote inside a JSON string is escaped).
    """
    records = _records(snapshot, fixed_timestamp(timestamp), ids)
    if not records:
        return b""
    return orjson.dumps(records)[1:-1].replace(_RECORD_SEPARATOR, _LINE_BREAK) + b"\n"
