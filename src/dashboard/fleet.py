"""The fleet page's figures: one row per vehicle, and the alerts beside them.

Two views, the same columns (docs/dashboard.md, "Fleet page"):

- **live** (``/api/fleet``): each vehicle's latest reading from this hour's batch files
  (:mod:`src.dashboard.live`), its energy, sessions and time split from the newest hourly
  aggregate's ``analytics`` block (labelled with that hour), its state of health, capacity
  and open alerts from the newest fleet-health document. Rebuilt by :class:`Fleet`'s
  background loop every ``DASHBOARD_REFRESH_S`` while the live view is asked for (within
  ``DASHBOARD_FLEET_IDLE_S``), kept serialised, so requests cost no I/O; idle otherwise.
- **a past hour** (``/api/fleet?hour=YYYY-MM-DDTHH``): each vehicle's last reading of that
  hour from the curated Parquet (:func:`src.dashboard.queries.last_readings`), the hour's aggregate, and
  the fleet-health document of the hour's day. Built on request in a worker thread, cached
  while the files it came from are unchanged.

A report that is missing or damaged becomes a notice on the page, never an error answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from src.common.layout import aggregated_file_name, fleet_health_file_name, hour_label, hour_start, parse_hour_label
from src.common.settings import AggregatorSettings
from src.dashboard import queries, reports
from src.dashboard.live import CHARGING, DRIVING, PARKED, Rules, Tailer, live_row
from src.dashboard.reports import ReportError, Stamp, file_stamp, unreadable

log = logging.getLogger(__name__)

HOUR_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")
HOURS_LISTED = 72
"""Aggregated hours offered in the page's hour picker, newest first."""
HOUR_VIEWS_KEPT = 8
FIRST_VIEW_WAIT_S = 30.0
"""How long a live request after an idle spell waits for its refresh before answering what there is."""
EVIDENCE_CHARS = 120
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
RULE_FIELDS = {"rest_current_a": "analytics_rest_current_a", "session_merge_s": "analytics_session_merge_s",
               "session_min_s": "analytics_session_min_s"}  # fmt: skip
"""The thresholds that decide a state: the aggregate's ``analytics.thresholds`` key -> the setting that owns it."""
Notice = dict[str, str]


class BadHour(ValueError):
    """``?hour=`` is not an hour the page can show (the message says what is expected)."""


def parse_hour(text: str) -> datetime:
    """The UTC hour ``YYYY-MM-DDTHH`` names; raises :class:`BadHour` with a message fit to show."""
    if len(text) > 13 or not HOUR_RE.match(text):
        raise BadHour("hour must be YYYY-MM-DDTHH (UTC), for example 2026-01-15T08")
    try:
        return parse_hour_label(text)
    except ValueError:
        raise BadHour(
            f"{text} is not a real hour: hour must be YYYY-MM-DDTHH (UTC), for example 2026-01-15T08"
        ) from None


def default_rules() -> Rules:
    """The analytics' own defaults (``AggregatorSettings``), used before any aggregate records its thresholds."""
    fields = AggregatorSettings.model_fields
    return Rules(**{key: float(fields[name].default) for key, name in RULE_FIELDS.items()})


def rules_of(aggregate: Mapping[str, Any] | None) -> tuple[Rules, str]:
    """The state thresholds an aggregate's job used, and where they came from; the defaults when it has none."""
    analytics = aggregate.get("analytics") if aggregate else None
    thresholds = analytics.get("thresholds") if isinstance(analytics, dict) else None
    if isinstance(thresholds, dict):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return Rules(**{key: float(thresholds[key]) for key in RULE_FIELDS}), "the hourly job's thresholds"
    return default_rules(), "the analytics' defaults (no aggregate records its thresholds yet)"


def _entries(block: Any, name: str) -> dict[str, dict[str, Any]]:
    """``[{"vehicle_id": ...}, ...]`` by vehicle id; ReportError when it is not a list of such objects."""
    if not isinstance(block, list) or not all(isinstance(e, dict) and isinstance(e.get("vehicle_id"), str)
                                              for e in block):  # fmt: skip
        raise ReportError(f"{name} is not a list of vehicle entries")
    return {e["vehicle_id"]: e for e in block}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _get(entry: Mapping[str, Any], *path: str) -> Any:
    value: Any = entry
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def analytics_columns(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """The hour's energy in and out (kWh), charging sessions and time split (s) of one analytics entry."""
    if entry is None:
        return {"charged_kwh": None, "discharged_kwh": None, "sessions": None, "time_s": None}
    sessions = entry.get("charging_sessions")
    time_s = {k: _number(_get(entry, "time_s", k)) for k in (DRIVING, CHARGING, PARKED)}
    return {
        "charged_kwh": _number(_get(entry, "energy", "charged_kwh")),
        "discharged_kwh": _number(_get(entry, "energy", "discharged_kwh")),
        "sessions": len(sessions) if isinstance(sessions, list) else None,
        "time_s": time_s if any(v is not None for v in time_s.values()) else None,
    }


def dominant_state(time_s: Mapping[str, float | None] | None) -> str | None:
    """The state the vehicle spent most of the hour in (ties: driving, charging, parked)."""
    if not time_s:
        return None
    known = [(v, -i, k) for i, (k, v) in enumerate(time_s.items()) if v is not None]
    best = max(known, default=None)
    return best[2] if best is not None and best[0] > 0 else None


def evidence_line(evidence: Any) -> str:
    """An alert's evidence as one short line: its scalar figures, ``name value``, comma-separated."""
    if not isinstance(evidence, dict):
        return "" if evidence is None else str(evidence)[:EVIDENCE_CHARS]
    parts = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in evidence.items()
             if isinstance(v, str | int | float) and not isinstance(v, bool)]  # fmt: skip
    line = ", ".join(parts)
    return line if len(line) <= EVIDENCE_CHARS else line[: EVIDENCE_CHARS - 1] + "…"


def alerts_of(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The document's alerts as the page lists them: critical first, then by first seen."""
    raw = document.get("alerts", [])
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        raise ReportError("its alerts are not a list of objects")
    alerts = [
        {
            "vehicle_id": str(a.get("vehicle_id", "")),
            "kind": str(a.get("kind", "")),
            "severity": str(a.get("severity", "")),
            "first_seen": str(a.get("first_seen", "")),
            "evidence": evidence_line(a.get("evidence")),
        }
        for a in raw
    ]
    return sorted(alerts, key=lambda a: (SEVERITY_ORDER.get(a["severity"], 9), a["first_seen"], a["vehicle_id"]))


@dataclass
class Health:
    """The parts of one fleet-health document the page shows (or why there are none)."""

    day: str | None = None
    vehicles: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)


def health_of(document: Mapping[str, Any], name: str) -> Health:
    """The health figures and alerts of a fleet-health document; ReportError naming it when damaged."""
    try:
        return Health(str(document.get("day")), _entries(document.get("vehicles", []), "its vehicles"),
                      alerts_of(document))  # fmt: skip
    except ReportError as exc:
        raise ReportError(f"{name}: {exc}") from None


def analytics_of(aggregate: Mapping[str, Any] | None, name: str) -> dict[str, dict[str, Any]] | None:
    """The aggregate's analytics entries by vehicle; None when it has no block; ReportError when damaged."""
    if aggregate is None or aggregate.get("analytics") is None:
        return None
    block = aggregate["analytics"]
    try:
        return _entries(block.get("vehicles") if isinstance(block, dict) else None, "its analytics vehicles")
    except ReportError as exc:
        raise ReportError(f"{name}: {exc}") from None


def rows(
    base: Mapping[str, dict[str, Any]],
    analytics: Mapping[str, dict[str, Any]] | None,
    health: Health,
    *,
    state_from_hour: bool,
) -> list[dict[str, Any]]:
    """One row per vehicle in any source, by id: the base columns, then the hour's analytics and the health."""
    empty = {"at": None, "soc": None, "voltage_v": None, "current_a": None, "spread_mv": None, "temp_max_c": None,
             "state": None}  # fmt: skip
    open_alerts: dict[str, list[dict[str, Any]]] = {}
    for alert in health.alerts:
        open_alerts.setdefault(alert["vehicle_id"], []).append(alert)
    vehicles = set(base) | set(analytics or {}) | set(health.vehicles) | set(open_alerts)
    out = []
    for vehicle_id in sorted(vehicles):
        row = {"vehicle_id": vehicle_id} | empty | base.get(vehicle_id, {})
        row |= analytics_columns((analytics or {}).get(vehicle_id))
        if state_from_hour:
            row["state"] = dominant_state(row["time_s"])
        entry = health.vehicles.get(vehicle_id, {})
        mine = open_alerts.get(vehicle_id, [])
        row |= {
            "soh_pct": _number(entry.get("soh_pct")),
            "capacity_ah": _number(entry.get("capacity_ah")),
            "soh_reason": entry.get("soh_reason") if isinstance(entry.get("soh_reason"), str) else None,
            "alerts": len(mine),
            "severity": min((a["severity"] for a in mine), key=lambda s: SEVERITY_ORDER.get(s, 9), default=None),
        }
        out.append(row)
    return out


def hour_base(readings: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The base columns of a past hour: each vehicle's last curated reading."""
    return {
        vehicle_id: {
            "at": r["at"].isoformat().replace("+00:00", "Z"),
            "soc": r["battery_soc"],
            "voltage_v": r["battery_voltage"],
            "current_a": r["battery_current"],
            "spread_mv": round((r["cell_voltage_max"] - r["cell_voltage_min"]) * 1000.0, 3),
            "temp_max_c": r["cell_temp_max"],
        }
        for vehicle_id, r in readings.items()
    }


def hour_labels(hours: Sequence[datetime]) -> list[str]:
    """The aggregated hours (oldest first) the page's picker offers: the newest ``HOURS_LISTED``, newest first."""
    return [hour_label(h) for h in reversed(hours[-HOURS_LISTED:])]


@dataclass
class Cached:
    """A report read once and kept while its file is unchanged."""

    stamp: Stamp = None
    document: dict[str, Any] | None = None
    error: str | None = None


def read_cached(cached: Cached, path: Path, read: Callable[[], dict[str, Any] | None]) -> Cached:
    """``cached`` if ``path`` is unchanged since, else the report read again (its damage kept as the error)."""
    stamp = file_stamp(path)
    if stamp is not None and stamp == cached.stamp:
        return cached
    try:
        return Cached(stamp, read(), None)
    except ReportError as exc:  # shown on the page while the file stays as it is; logged once per change
        log.warning("report %s: %s", path, exc)
        return Cached(stamp, None, str(exc))


class Fleet:
    """Keeps the live view fresh while it is asked for (:meth:`run`, :meth:`live_view`), builds past hours' on request.

    The loop refreshes every ``refresh_s`` while :meth:`live_view` was called within the last
    ``idle_s`` seconds, and otherwise waits on an event, reading nothing. A live request after
    an idle spell wakes it and waits for that refresh, so it never answers a stale view.
    """

    def __init__(
        self,
        raw_dir: Path,
        curated_dir: Path,
        aggregated_dir: Path,
        refresh_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        idle_s: float = 60.0,
    ) -> None:
        self.curated_dir = curated_dir
        self.aggregated_dir = aggregated_dir
        self.refresh_s = refresh_s
        self.idle_s = idle_s
        self.clock = clock
        self.tailer = Tailer(raw_dir, default_rules())
        self.aggregate = Cached()
        self.aggregate_hour: datetime | None = None
        self.health = Cached()
        self.hours: list[str] = []
        self.body: bytes | None = None
        self._hour_views: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._hour_lock = asyncio.Lock()
        self._asked = asyncio.Event()
        """Set by a live request, cleared by the loop when it goes idle: the loop runs while it is set."""
        self._asked_at = float("-inf")
        """The event loop's time of the last live request."""
        self._current = False
        """Whether :attr:`body` comes from a refresh since the loop last woke (owned by the loop)."""
        self._refreshed = asyncio.Event()
        """Set when the refresh under way (or the next one) ends; replaced by a new one after it."""
        self.idle = asyncio.Event()
        """Set while the loop waits for a live request (owned by the loop)."""

    # ----- live -----

    def ask(self) -> None:
        """Mark the live view asked for now: the loop wakes if idle and keeps refreshing for ``idle_s``."""
        self._asked_at = asyncio.get_running_loop().time()
        self._asked.set()

    async def live_view(self) -> bytes:
        """The live view as JSON, marking it asked for; after an idle spell, once the refresh it wakes has ended.

        Waits at most :data:`FIRST_VIEW_WAIT_S` (then answers what :meth:`live_body` has).
        """
        self.ask()
        if not self._current:  # the body is from before the idle spell (or none): show the fleet as it is now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refreshed.wait(), FIRST_VIEW_WAIT_S)
        return self.live_body()

    def live_body(self) -> bytes:
        """The latest live view as JSON; before the first refresh, one that says it is collecting."""
        if self.body is not None:
            return self.body
        collecting: list[Notice] = [{"level": "info", "text": "collecting…"}]
        return orjson.dumps(self._frame("live", hour_label(self.clock()), collecting, self.hours))

    def _frame(self, mode: str, hour: str, notices: list[Notice], hours: list[str]) -> dict[str, Any]:
        return {
            "mode": mode,
            "hour": hour,
            "generated_at": self.clock().isoformat().replace("+00:00", "Z"),
            "refresh_s": self.refresh_s,
            "energy_hour": None,
            "health_day": None,
            "rules": None,
            "notices": notices,
            "hours": hours,
            "counts": None,
            "rows": [],
            "alerts": [],
        }

    def read_reports(self) -> None:
        """The newest aggregate and fleet-health document, read again only when their files changed."""
        hours = reports.aggregated_hours(self.aggregated_dir)
        self.hours = hour_labels(hours)
        self.aggregate_hour = hours[-1] if hours else None
        if self.aggregate_hour is None:
            self.aggregate = Cached()
        else:
            hour = self.aggregate_hour
            path = self.aggregated_dir / aggregated_file_name(hour)
            self.aggregate = read_cached(self.aggregate, path, lambda: reports.aggregate(self.aggregated_dir, hour))
        days = reports.health_days(self.aggregated_dir)
        if not days:
            self.health = Cached()
        else:
            path = self.aggregated_dir / fleet_health_file_name(days[-1])
            self.health = read_cached(self.health, path, lambda: reports.fleet_health(self.aggregated_dir, days[-1]))

    def refresh(self) -> None:
        """Read the reports and the new batch files, and rebuild the live view; blocking (a worker thread)."""
        now = self.clock()
        self.read_reports()
        rules, rules_source = rules_of(self.aggregate.document)
        self.tailer.rules = rules
        self.tailer.scan(now)
        notices: list[Notice] = []
        if not self.tailer.latest:
            notices.append({"level": "info", "text": f"no readings yet in the hour {hour_label(now)} (UTC)"})
        energy_hour = hour_label(self.aggregate_hour) if self.aggregate_hour else None
        analytics = self._analytics(self.aggregate, energy_hour, notices)
        health = self._health(self.health, None, notices)
        view = self._frame("live", hour_label(now), notices, self.hours)
        view |= {
            "energy_hour": energy_hour if analytics is not None else None,
            "health_day": health.day,
            "rules": vars(rules) | {"source": rules_source},
            "counts": vars(self.tailer.counts) | {"vehicles": len(self.tailer.latest)},
            "rows": rows(
                {v: live_row(v, latest) for v, latest in self.tailer.latest.items()},
                analytics,
                health,
                state_from_hour=False,
            ),
            "alerts": health.alerts,
        }
        self.body = orjson.dumps(view)

    @staticmethod
    def _analytics(cached: Cached, hour: str | None, notices: list[Notice]) -> dict[str, dict[str, Any]] | None:
        if cached.error is not None:
            notices.append({"level": "error", "text": unreadable("the aggregate", cached.error)})
            return None
        if hour is None or cached.document is None:
            notices.append({"level": "info", "text": "no hourly aggregate yet: energy and sessions show once the "
                            "hourly job has run"})  # fmt: skip
            return None
        try:
            analytics = analytics_of(cached.document, aggregated_file_name(parse_hour_label(hour)))
        except ReportError as exc:
            notices.append({"level": "error", "text": unreadable("the aggregate", exc)})
            return None
        if analytics is None:
            notices.append({"level": "warning", "text": f"the aggregate of {hour} has no analytics block "
                            "(ANALYTICS_ENABLED=false, or --engine spark): no energy or sessions"})  # fmt: skip
        return analytics

    @staticmethod
    def _health(cached: Cached, day: date | None, notices: list[Notice]) -> Health:
        if cached.error is not None:
            notices.append({"level": "error", "text": unreadable("the fleet-health document", cached.error)})
            return Health()
        if cached.document is None:
            which = f"for {day.isoformat()}" if day else "yet"
            notices.append({"level": "info", "text": f"no fleet-health document {which}: state of health and "
                            "alerts show once the daily job has run"})  # fmt: skip
            return Health()
        try:
            return health_of(cached.document, str(cached.stamp[0]) if cached.stamp else "fleet health")
        except ReportError as exc:
            notices.append({"level": "error", "text": unreadable("the fleet-health document", exc)})
            return Health()

    async def run(self) -> None:
        """Refresh every ``refresh_s`` while the live view is asked for, wait idle otherwise, until cancelled.

        A refresh that fails is logged and shown, then retried.
        """
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_until_asked()
            started = loop.time()
            await self._refresh_once()
            self._current = True
            self._refreshed.set()
            self._refreshed = asyncio.Event()
            if loop.time() - self._asked_at > self.idle_s:  # nobody looked for idle_s: stop reading files
                self._asked.clear()
                self._current = False
                continue
            await asyncio.sleep(max(0.0, self.refresh_s - (loop.time() - started)))

    async def _wait_until_asked(self) -> None:
        """Return at once while the live view is asked for; otherwise mark the loop idle and wait for a request."""
        if self._asked.is_set():
            return
        self.idle.set()
        await self._asked.wait()
        self.idle.clear()

    async def _refresh_once(self) -> None:
        """One refresh in a worker thread; its failure becomes the live view (an error notice), never an exception."""
        try:
            await asyncio.to_thread(self.refresh)
        except Exception as exc:
            log.exception("fleet refresh failed")
            notice: Notice = {"level": "error", "text": f"the live view could not be refreshed: "
                              f"{type(exc).__name__}: {exc}"[:300]}  # fmt: skip
            self.body = orjson.dumps(self._frame("live", hour_label(self.clock()), [notice], self.hours))

    # ----- a past hour -----

    async def hour_view(self, hour: datetime) -> bytes:
        """The view of ``hour`` as JSON, built in a worker thread (one at a time), reused while its files hold."""
        async with self._hour_lock:
            return await asyncio.to_thread(self._hour_body, hour)

    def _hour_body(self, hour: datetime) -> bytes:
        files = queries.curated_files(self.curated_dir, hour)
        aggregate_path = self.aggregated_dir / aggregated_file_name(hour)
        health_path = self.aggregated_dir / fleet_health_file_name(hour.date())
        hours = hour_labels(reports.aggregated_hours(self.aggregated_dir))  # its own: the live loop may be idle
        stamps = (tuple(file_stamp(f) for f in files), file_stamp(aggregate_path), file_stamp(health_path))
        key = (hour, *stamps, tuple(hours))
        if key in self._hour_views:
            self._hour_views.move_to_end(key)
            return self._hour_views[key]
        body = orjson.dumps(self.build_hour(hour, files, aggregate_path, health_path, hours))
        self._hour_views[key] = body
        while len(self._hour_views) > HOUR_VIEWS_KEPT:
            self._hour_views.popitem(last=False)
        return body

    def build_hour(
        self, hour: datetime, files: Sequence[Path], aggregate_path: Path, health_path: Path, hours: list[str]
    ) -> dict[str, Any]:
        """Every vehicle's row for ``hour``: its last curated reading, the hour's analytics, its day's health.

        ``hours`` are the picker's aggregated hours.
        """
        label = hour_label(hour)
        notices: list[Notice] = []
        readings: dict[str, dict[str, Any]] = {}
        if not files and hour >= hour_start(self.clock()):
            notices.append({"level": "info", "text": f"{label} has not ended: the hourly job has not curated it yet"})
        elif not files:
            notices.append({"level": "info", "text": f"no curated data for {label}: the hourly job has not run "
                            "for it, or no reading arrived in it"})  # fmt: skip
        try:
            readings = queries.last_readings(list(files))
        except duckdb.Error as exc:
            log.warning("the curated data of %s cannot be read (%s): %s", label, ", ".join(map(str, files)), exc)
            notices.append({"level": "error", "text": unreadable(f"the curated data of {label}", exc)})
        aggregate = read_cached(Cached(), aggregate_path, lambda: reports.aggregate(self.aggregated_dir, hour))
        if aggregate.document is None and aggregate.error is None:
            notices.append({"level": "info", "text": f"no aggregate for {label}: energy and sessions show once "
                            "the hourly job has run for it"})  # fmt: skip
            analytics = None
        else:
            analytics = self._analytics(aggregate, label, notices)
        health_doc = read_cached(Cached(), health_path, lambda: reports.fleet_health(self.aggregated_dir, hour.date()))
        health = self._health(health_doc, hour.date(), notices)
        rules, rules_source = rules_of(aggregate.document)
        view = self._frame("hour", label, notices, hours)
        view |= {
            "energy_hour": label if analytics is not None else None,
            "health_day": health.day,
            "rules": vars(rules) | {"source": rules_source},
            "rows": rows(hour_base(readings), analytics, health, state_from_hour=True),
            "alerts": health.alerts,
        }
        return view
