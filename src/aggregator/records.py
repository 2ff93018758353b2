"""One stored line as a record: the definition of what the aggregator counts as a reading.

:func:`parse_line` is the reference: every faster reader (:mod:`src.aggregator.columnar`)
accepts a line only if it would, with the same key and values, and hands it here when in doubt.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from src.common.schema import SIGNALS, NaturalKey, natural_key_of

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_US = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
MAX_US = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Record:
    """The part of a stored reading the statistics need."""

    key: NaturalKey
    values: tuple[float, ...]  # in SIGNALS order


class SkippedLine(ValueError):
    """A line that is not a usable reading (bad JSON, missing field, non-numeric signal)."""


def parse_line(line: bytes) -> Record:
    """One stored line as a :class:`Record`; raises :class:`SkippedLine` if it is not one."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise SkippedLine(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SkippedLine("not a JSON object")
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise SkippedLine("no payload object")
    values = []
    for name in SIGNALS:
        value = payload.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SkippedLine(f"{name} is not a finite number: {value!r}")
        values.append(float(value))
    if not all(isinstance(document.get(name), str) for name in ("vehicle_id", "can_id", "timestamp")):
        raise SkippedLine("vehicle_id, can_id or timestamp missing or not a string")
    try:
        timestamp = canonical_timestamp(document["timestamp"])
    except (ValueError, OverflowError) as exc:  # OverflowError: an offset pushing year 1 or 9999 out of range
        raise SkippedLine(f"bad timestamp: {exc}") from None
    return Record(NaturalKey(document["vehicle_id"], document["can_id"], timestamp), tuple(values))


@functools.lru_cache(maxsize=65_536)
def canonical_timestamp(text: str) -> str:
    """The natural key's form of a timestamp (as ``natural_key_of`` makes it).

    Cached: a fleet's readings of one tick share their timestamp, and parsing it dominates a line's cost.
    """
    return natural_key_of({"vehicle_id": "", "can_id": "", "timestamp": text}).timestamp


def instant_us(text: str) -> int:
    """Microseconds since the epoch of an ISO 8601 timestamp with zone: the compact natural-key time.

    Exactly the timestamps :func:`canonical_timestamp` accepts are accepted, and two
    timestamps get the same number exactly when they get the same canonical text (both
    are the UTC instant at microsecond resolution). Raises ValueError, TypeError or
    OverflowError otherwise.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without zone: {text!r}")
    since = moment - EPOCH
    us = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
    if not MIN_US <= us <= MAX_US:  # where astimezone(UTC) overflows (an offset near year 1 or 9999)
        raise OverflowError(f"timestamp out of range in UTC: {text!r}")
    return us
