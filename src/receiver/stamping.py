"""Stamping accepted readings with the server's time, straight into their stored JSON.

A stored record is the reading plus ``ingest_received_at`` (contract, "A reading").
Building a ``StoredReading`` per reading and serialising it cost about 14 µs a reading,
the largest share of the batch endpoint's CPU. Serialising the validated ``Reading`` and
splicing the stamp in before its closing brace gives the same bytes (a test compares
them over many readings) in about 2 µs. It is safe because ``Reading`` forbids extra
fields, so its JSON is always one flat object whose last byte is its own ``}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import AwareDatetime, TypeAdapter

from src.common.schema import Reading

_INSTANT = TypeAdapter(AwareDatetime)
_reading_to_json = Reading.__pydantic_serializer__.to_json


def stored_records(readings: Sequence[Reading], received_at: datetime) -> list[bytes]:
    """Each reading's stored record, as ``serialize(StoredReading.stamp(reading, received_at))`` would give."""
    stamp = b',"ingest_received_at":' + _INSTANT.dump_json(received_at.astimezone(UTC)) + b"}"
    return [_reading_to_json(reading)[:-1] + stamp for reading in readings]
