"""The jobs' reports as the dashboard reads them: the hourly aggregates and the daily fleet-health documents.

Both live in ``DATA_DIR/aggregated`` under the contract's names (:mod:`src.common.layout`).
Reading is tolerant of absence (a missing report is ``None``, a missing directory no
reports) and strict about damage: a report that is not a JSON object raises
:class:`ReportError` naming the file. These are blocking file reads: callers on the event
loop run them in a worker thread. :func:`unreadable` is how every page words a report or data
file that exists but cannot be read.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson

from src.common.layout import aggregated_file_name, aggregated_hour, fleet_health_day, fleet_health_file_name

MESSAGE_CHARS = 300
"""A problem's message on a page is cut to this (a DuckDB error can run to pages)."""


Stamp = tuple[str, int, int] | None
"""A file as last seen: (name, mtime in ns, size); None when it does not exist."""


def file_stamp(path: Path) -> Stamp:
    """``path``'s :data:`Stamp`: equal stamps, the same report bytes (reports are written by rename, never in place)."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return path.name, status.st_mtime_ns, status.st_size


class ReportError(ValueError):
    """A report exists but cannot be read as one (names the file)."""


def unreadable(what: str, error: object) -> str:
    """How every page names a source that exists but cannot be read: ``<what> cannot be read: <first line>``."""
    lines = str(error).strip().splitlines()
    return f"{what} cannot be read: {lines[0][:MESSAGE_CHARS] if lines else 'unknown error'}"


def _names(aggregated_dir: Path) -> list[str]:
    try:
        return [entry.name for entry in aggregated_dir.iterdir()]
    except FileNotFoundError:
        return []


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ReportError(f"{path.name} is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ReportError(f"{path.name} is not a JSON object")
    return document


def aggregated_hours(aggregated_dir: Path) -> list[datetime]:
    """The hours that have an aggregate, oldest first."""
    return sorted(h for h in map(aggregated_hour, _names(aggregated_dir)) if h is not None)


def aggregate(aggregated_dir: Path, hour: datetime) -> dict[str, Any] | None:
    """The hourly job's aggregate for ``hour``, or None if that hour has none."""
    return _read(aggregated_dir / aggregated_file_name(hour))


def health_days(aggregated_dir: Path) -> list[date]:
    """The days that have a fleet-health document, oldest first."""
    return sorted(d for d in map(fleet_health_day, _names(aggregated_dir)) if d is not None)


def fleet_health(aggregated_dir: Path, day: date) -> dict[str, Any] | None:
    """The daily job's fleet-health document for ``day``, or None if that day has none."""
    return _read(aggregated_dir / fleet_health_file_name(day))


def latest_fleet_health(aggregated_dir: Path) -> dict[str, Any] | None:
    """The newest fleet-health document, or None before the daily job has run once."""
    days = health_days(aggregated_dir)
    return fleet_health(aggregated_dir, days[-1]) if days else None
