"""Readings for tests to build on: one plausible payload, and dicts or models around it.

Test modules keep their own thin wrappers (``record(i)``, ``stored(i)``, ...) where the
id format or timing matters to their assertions; these functions give every wrapper the
same valid document underneath.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from src.common.schema import StoredReading

CAN_ID = "0x1F0"

# The seed's example payload (seed/README-seed.md, "Data Contract"): valid, every signal set.
PAYLOAD: dict[str, float] = {
    "battery_soc": 85.5,
    "battery_voltage": 400.2,
    "battery_current": -15.3,
    "cell_voltage_min": 3.45,
    "cell_voltage_max": 3.67,
    "cell_temp_min": 28.5,
    "cell_temp_max": 31.2,
}


def reading_dict(
    vehicle_id: str, taken: datetime, *, received: datetime | None = None, **payload_overrides: float
) -> dict[str, Any]:
    """A reading as JSON-ready data: ``PAYLOAD`` with ``payload_overrides`` merged in.

    Timestamps are ``isoformat()`` text. Without ``received`` it is what a client sends;
    with it, the stored form carrying the receiver's ``ingest_received_at`` stamp.
    """
    document: dict[str, Any] = {
        "timestamp": taken.isoformat(),
        "vehicle_id": vehicle_id,
        "can_id": CAN_ID,
        "payload": PAYLOAD | payload_overrides,
    }
    if received is not None:
        document["ingest_received_at"] = received.isoformat()
    return document


def stored_reading(vehicle_id: str, taken: datetime, received: datetime, **payload_overrides: float) -> StoredReading:
    """A stamped reading, validated as the consumer would (``StoredReading.model_validate``)."""
    return StoredReading.model_validate(reading_dict(vehicle_id, taken, received=received, **payload_overrides))
