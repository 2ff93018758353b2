"""The vehicle page, ``/vehicles/<vehicle_id>``, and its JSON, ``/api/vehicles/<vehicle_id>``.

A window is ``?window=<n>m|h|d`` ending now (default ``1h``), or ``?from=<ISO 8601>&to=<ISO 8601>``,
at most ``DASHBOARD_VEHICLE_MAX_WINDOW_H`` long. The answer holds the vehicle's signals over it
(:mod:`src.dashboard.series`), its charging sessions from the hourly aggregates, its daily health
from the fleet-health documents of the last ``DASHBOARD_VEHICLE_HEALTH_DAYS`` days up to the
window's end, and its alerts from those. A malformed id or window is ``400``, a vehicle that no
reading in the window and no report names is ``404``, each with a message; a damaged report or
data file is named in ``problems`` while the rest is shown. The page embeds the same JSON (an
``application/json`` block, not a script) when it is read within :data:`PAGE_WAIT_S`, so it draws
without a second request and its status is the answer's; else it embeds ``{"pending": true}`` and
``vehicle.js`` fetches the API. Live windows are refetched. The data are read in a worker thread,
never on the event loop.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from src.common.layout import aggregated_file_name, fleet_health_file_name, hour_start
from src.common.schema import VEHICLE_ID_PATTERN, format_timestamp
from src.common.settings import DashboardSettings
from src.dashboard import reports, series
from src.dashboard.pages import page
from src.dashboard.reports import unreadable

log = logging.getLogger(__name__)

DATA_MARK = "__VEHICLE_DATA__"
TITLE_MARK = "__VEHICLE_ID__"
WINDOW_RE = re.compile(r"^(?P<n>[1-9]\d{0,4})(?P<unit>[mhd])$")
UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
DEFAULT_WINDOW = "1h"
LIVE_REFRESH_S = 10.0
"""How often the page refetches a window that ends now."""
SESSION_JOIN_S = 60.0
"""Sessions split by an hour boundary (``open_end`` then ``open_start``) at most this far apart are one."""
MAX_CACHED_REPORTS = 400
MAX_QUERIES = 2
"""Series queries run at once (each a DuckDB of up to 256 MB); more requests wait their turn."""
PAGE_WAIT_S = 0.3
"""The page embeds the data if they are read within this; else it is sent at once and fetches them (a first paint
never waits for a cold raw hour)."""


class BadRequest(ValueError):
    """The request names no valid vehicle or window; the message says why (shown on the page)."""


@dataclass(frozen=True)
class Asked:
    """A validated request: the vehicle, its window, and the window's label when it ends now (``1h``)."""

    vehicle_id: str
    window: series.Window
    label: str | None


def parse_instant(name: str, text: str) -> datetime:
    """``text`` as a UTC instant; it must carry a zone (``Z`` or an offset)."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "+"))  # a '+' in a URL arrives as a space
    except ValueError:
        raise BadRequest(f"'{name}' is not an ISO 8601 time (like 2026-01-15T08:00:00Z)") from None
    if value.tzinfo is None:
        raise BadRequest(f"'{name}' has no zone: add Z or an offset (like 2026-01-15T08:00:00Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"'{name}' lies outside the years 1 to 9999") from None


def parse_request(vehicle_id: str, query: dict[str, str], now: datetime, max_window: timedelta) -> Asked:
    """The vehicle and window a request asks for; raises :class:`BadRequest` with the reason."""
    if not re.match(VEHICLE_ID_PATTERN, vehicle_id):
        raise BadRequest("a vehicle id is 1 to 64 letters, digits, '-' or '_'")
    start_text, end_text, label = query.get("from"), query.get("to"), query.get("window")
    limit = f"the window is longer than {max_window.total_seconds() / 3600:g} h, the most one may ask for"
    if start_text is not None or end_text is not None:
        if label is not None:
            raise BadRequest("give either 'window' or 'from' and 'to', not both")
        if start_text is None or end_text is None:
            raise BadRequest("'from' and 'to' go together")
        start, end = parse_instant("from", start_text), parse_instant("to", end_text)
        if end <= start:
            raise BadRequest("'to' must be after 'from'")
        if end - start > max_window:
            raise BadRequest(limit)
        return Asked(vehicle_id, series.Window(start, end), None)
    label = label if label is not None else DEFAULT_WINDOW
    match = WINDOW_RE.match(label)
    if match is None:
        raise BadRequest("'window' is a number and a unit, m, h or d (like 15m, 1h, 7d)")
    span = int(match["n"]) * UNITS[match["unit"]]
    if span > max_window:
        raise BadRequest(limit)
    return Asked(vehicle_id, series.Window(now - span, now), label)


class ReportCache:
    """What the page needs from each report file, kept by (name, mtime, size): a file rewritten is read again.

    ``extract`` turns a whole document into the small per-vehicle part kept; a damaged file raises
    :class:`~src.dashboard.reports.ReportError` (not cached, so a repaired file is read). Thread-safe.
    """

    def __init__(self, max_entries: int = MAX_CACHED_REPORTS) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[reports.Stamp, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, path: Path, read: Callable[[], dict[str, Any] | None], extract: Callable[[dict[str, Any]], Any]
    ) -> Any:
        """The extract of the report at ``path`` (None when there is no such file)."""
        key = reports.file_stamp(path)
        if key is None:
            return None
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        document = read()
        if document is None:
            return None
        value = extract(document)
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value


def sessions_by_vehicle(aggregate: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each vehicle of an aggregate (by its ``vehicles`` and ``analytics``) with its charging sessions."""
    named: dict[str, list[dict[str, Any]]] = {}
    for entry in aggregate.get("vehicles") or []:
        if isinstance(entry, dict) and isinstance(entry.get("vehicle_id"), str):
            named[entry["vehicle_id"]] = []
    for entry in (aggregate.get("analytics") or {}).get("vehicles") or []:
        if isinstance(entry, dict) and isinstance(entry.get("vehicle_id"), str):
            named[entry["vehicle_id"]] = [s for s in entry.get("charging_sessions") or [] if isinstance(s, dict)]
    return named


def health_by_vehicle(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each vehicle of a fleet-health document with its figures of the day and its alerts."""
    named: dict[str, dict[str, Any]] = {}
    for entry in document.get("vehicles") or []:
        if isinstance(entry, dict) and isinstance(entry.get("vehicle_id"), str):
            named[entry["vehicle_id"]] = {
                "capacity_ah": entry.get("capacity_ah"),
                "soh_pct": entry.get("soh_pct"),
                "resistance_mohm_25c": entry.get("resistance_mohm_25c"),
                "alerts": [],
            }
    for alert in document.get("alerts") or []:
        if isinstance(alert, dict) and isinstance(alert.get("vehicle_id"), str):
            named.setdefault(alert["vehicle_id"], {"alerts": []})["alerts"].append(alert)
    return named


def _at(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)).astimezone(UTC)
    except ValueError:
        return None


def join_sessions(sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hour-by-hour sessions in time order, each one split by an hour boundary joined back into one."""
    joined: list[dict[str, Any]] = []
    for session in sessions:
        if joined and joined[-1].get("open_end") and session.get("open_start"):
            previous_end, start = _at(joined[-1].get("end")), _at(session.get("start"))
            if previous_end and start and (start - previous_end).total_seconds() <= SESSION_JOIN_S:
                last = joined[-1]
                energy = [value for value in (last.get("energy_kwh"), session.get("energy_kwh")) if value is not None]
                joined[-1] = last | {
                    "end": session.get("end"),
                    "soc_to": session.get("soc_to"),
                    "open_end": session.get("open_end"),
                    "energy_kwh": round(sum(energy), 6) if energy else None,
                    "peak_power_kw": max(
                        (p for p in (last.get("peak_power_kw"), session.get("peak_power_kw")) if p is not None),
                        default=None,
                    ),
                }
                continue
        joined.append(dict(session))
    return joined


def group_alerts(dated: list[tuple[date, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per alert kind: the newest day's alert, with the earliest ``first_seen`` and the days it was raised."""
    grouped: dict[str, dict[str, Any]] = {}
    for day, alert in sorted(dated, key=lambda pair: pair[0]):
        kind = str(alert.get("kind"))
        earlier = grouped.get(kind)
        first_seen = alert.get("first_seen")
        if earlier is not None:
            first_seen = min(str(earlier["first_seen"]), str(first_seen)) if first_seen else earlier["first_seen"]
        grouped[kind] = alert | {
            "first_seen": first_seen,
            "days": (earlier["days"] if earlier else []) + [day.isoformat()],
        }
    order = {"critical": 0, "warning": 1}
    return sorted(grouped.values(), key=lambda a: (order.get(str(a.get("severity")), 2), str(a.get("kind"))))


class VehicleData:
    """Builds the vehicle page's JSON from ``DATA_DIR``; caches the reports' extracts and the raw lines."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.lines = series.LineCache()
        self.reports = ReportCache()
        self.queries = threading.BoundedSemaphore(MAX_QUERIES)

    def view(self, asked: Asked) -> tuple[int, dict[str, Any]]:
        """The HTTP status (200, or 404 for a vehicle nothing names) and the JSON for ``asked``."""
        settings, window = self.settings, asked.window
        problems: list[str] = []
        try:
            with self.queries:
                found = series.read_series(
                    settings.raw_dir,
                    settings.curated_dir,
                    asked.vehicle_id,
                    window,
                    settings.dashboard_vehicle_points,
                    self.lines,
                )
            signals: dict[str, Any] | None = found_json(found)
        except duckdb.Error as exc:
            log.warning("the readings of %s over %s cannot be read: %s", asked.vehicle_id, window_json(asked), exc)
            problems.append(unreadable("the readings", exc))
            signals = None
        sessions, in_aggregates = self.sessions(asked.vehicle_id, window, problems)
        health, alerts, in_health = self.health(asked.vehicle_id, window.end, problems)
        readings = signals["readings"] if signals else 0
        known = readings > 0 or in_aggregates or in_health or signals is None
        message = None
        if not known:
            message = (
                f"No vehicle {asked.vehicle_id}: no reading in this window, and no hourly aggregate of it nor "
                f"fleet-health document of the last {settings.dashboard_vehicle_health_days} days names it."
            )
        elif readings == 0 and signals is not None:
            message = "No readings of this vehicle in this window."
        body = {
            "vehicle_id": asked.vehicle_id,
            "window": window_json(asked),
            "refresh_s": LIVE_REFRESH_S if asked.label else None,
            "signals": signals,
            "sessions": sessions,
            "health": health,
            "alerts": alerts,
            "problems": problems,
            "message": message,
            "generated_at": format_timestamp(datetime.now(UTC)),
        }
        return (200 if known else 404), body

    def sessions(self, vehicle_id: str, window: series.Window, problems: list[str]) -> tuple[list[Any], bool]:
        """Charging sessions overlapping ``window`` (joined across hours); whether an aggregate names the vehicle."""
        directory = self.settings.aggregated_dir
        hour, named, collected = hour_start(window.start) - timedelta(hours=1), False, []
        while hour < window.end:
            path = directory / aggregated_file_name(hour)
            try:
                by_vehicle = self.reports.get(path, partial(reports.aggregate, directory, hour), sessions_by_vehicle)
            except reports.ReportError as exc:
                log.warning("report %s: %s", path, exc)
                problems.append(unreadable("the aggregate", exc))
                by_vehicle = None
            if by_vehicle is not None and vehicle_id in by_vehicle:
                named = named or hour >= hour_start(window.start)
                collected += by_vehicle[vehicle_id]
            hour += timedelta(hours=1)
        overlapping = []
        for session in join_sessions(collected):
            start, end = _at(session.get("start")), _at(session.get("end"))
            if start and end and start < window.end and end >= window.start:
                overlapping.append(session)
        return overlapping, named

    def health(
        self, vehicle_id: str, until: datetime, problems: list[str]
    ) -> tuple[dict[str, list[Any]], list[dict[str, Any]], bool]:
        """The vehicle's daily health (columns by day), its alerts grouped by kind, and whether a document names it."""
        directory = self.settings.aggregated_dir
        first = until.date() - timedelta(days=self.settings.dashboard_vehicle_health_days - 1)
        trend: dict[str, list[Any]] = {"day": [], "capacity_ah": [], "soh_pct": [], "resistance_mohm_25c": []}
        dated: list[tuple[date, dict[str, Any]]] = []
        named = False
        for day in reports.health_days(directory):
            if not first <= day <= until.date():
                continue
            path = directory / fleet_health_file_name(day)
            try:
                by_vehicle = self.reports.get(path, partial(reports.fleet_health, directory, day), health_by_vehicle)
            except reports.ReportError as exc:
                log.warning("report %s: %s", path, exc)
                problems.append(unreadable("the fleet-health document", exc))
                continue
            entry = (by_vehicle or {}).get(vehicle_id)
            if entry is None:
                continue
            named = True
            trend["day"].append(day.isoformat())
            for key in ("capacity_ah", "soh_pct", "resistance_mohm_25c"):
                trend[key].append(entry.get(key))
            dated += [(day, alert) for alert in entry["alerts"]]
        return trend, group_alerts(dated), named


def found_json(found: series.Series) -> dict[str, Any]:
    sources = found.sources
    return {
        "mode": found.mode,
        "bucket_s": found.bucket_s,
        "readings": found.readings,
        "points": found.points,
        "columns": found.columns,
        "curated_hours": sources.curated_hours,
        "raw_hours": sources.raw_hours,
        "raw_files": len(sources.raw),
    }


def window_json(asked: Asked) -> dict[str, Any]:
    return {
        "from": format_timestamp(asked.window.start),
        "to": format_timestamp(asked.window.end),
        "label": asked.label,
    }


def embed(page: str, vehicle_id: str, body: dict[str, Any]) -> str:
    """The page with ``body`` as its JSON block (``<``, ``>``, ``&`` escaped: nothing can close the block)."""
    data = orjson.dumps(body).decode().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return page.replace(TITLE_MARK, html.escape(vehicle_id)).replace(DATA_MARK, data)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Collects the outcome of a read nobody waits for any more: a failure is logged, not left unretrieved."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("a vehicle page's read failed after its page was sent", exc_info=exc)


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": message, "status": status}


def routes() -> APIRouter:
    """The page and its API; they read ``app.state.settings`` and keep a :class:`VehicleData` in ``app.state``."""
    routes = APIRouter()
    vehicle_html = page("vehicle.html")

    def data_of(request: Request) -> VehicleData:
        state = request.app.state
        settings: DashboardSettings = state.settings
        current = getattr(state, "vehicle_data", None)
        if current is None or current.settings is not settings:
            current = state.vehicle_data = VehicleData(settings)
        return current

    async def answer(request: Request, vehicle_id: str, within_s: float | None = None) -> tuple[int, dict[str, Any]]:
        """The status and JSON for the request; with ``within_s``, a ``pending`` answer if the data take longer."""
        data = data_of(request)
        settings = data.settings
        try:
            asked = parse_request(
                vehicle_id,
                dict(request.query_params),
                datetime.now(UTC),
                timedelta(hours=settings.dashboard_vehicle_max_window_h),
            )
        except BadRequest as exc:
            return 400, error_body(400, str(exc))
        reading = asyncio.ensure_future(asyncio.to_thread(data.view, asked))
        if within_s is not None:
            await asyncio.wait({reading}, timeout=within_s)
            if not reading.done():  # it goes on in its thread, warming the caches for the page's own request
                reading.add_done_callback(_retrieve)
                return 200, {"pending": True, "vehicle_id": asked.vehicle_id, "window": window_json(asked)}
        return await reading

    @routes.get("/vehicles/{vehicle_id}", response_class=HTMLResponse)
    async def vehicle_page(request: Request, vehicle_id: str) -> Response:
        status, body = await answer(request, vehicle_id, PAGE_WAIT_S)
        shown = vehicle_id if re.match(VEHICLE_ID_PATTERN, vehicle_id) else "?"
        return HTMLResponse(embed(vehicle_html, shown, body), status_code=status)

    @routes.get("/api/vehicles/{vehicle_id}")
    async def vehicle_api(request: Request, vehicle_id: str) -> Response:
        status, body = await answer(request, vehicle_id)
        return JSONResponse(body, status_code=status)

    return routes


router = routes()
