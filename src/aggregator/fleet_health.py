"""The daily job: a day's hourly analytics -> each vehicle's health and the day's alerts.

``python -m src.aggregator.fleet_health [--day YYYY-MM-DD] [--source local|s3] [--engine duckdb|spark]``
(default: the previous UTC day; cron ``15 0 * * *``).

Reads the ``analytics`` block of the day's hourly aggregates (``DATA_DIR/aggregated/aggregated-<day>THH.json``,
or with ``--source s3`` the same keys under ``s3://$S3_BUCKET/aggregated/``) and writes
``DATA_DIR/aggregated/fleet-health-<day>.json`` atomically, and with ``S3_BUCKET`` set puts it at
``s3://$S3_BUCKET/aggregated/``. Every figure it needs is in the hourly blocks (the per-reading work
is SQL in :mod:`src.aggregator.analytics`, run by the hourly job), so it reads no curated hour and
``--engine`` changes nothing here: it is accepted for the cron lines' symmetry. Earlier
``fleet-health-*.json`` under ``DATA_DIR/aggregated`` give the trends across days.

Exit status: 0 written, 1 no hourly aggregate with analytics for the day (nothing written) or an
upload failed, 2 usage. Definitions, thresholds and their sources: docs/battery-analytics.md,
"Daily fleet health and alerts".
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from src.aggregator.hourly_stats import UploadFailed, put_file, render
from src.aggregator.sources import S3Bucket
from src.common.files import write_atomically
from src.common.layout import aggregated_file_name, fleet_health_day, fleet_health_file_name, s3_aggregated_key
from src.common.logs import configure_logging
from src.common.settings import AggregatorSettings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
KINDS = ("cell_imbalance", "self_discharge", "weak_cell", "cooling_fault", "sensor_inconsistency", "over_temperature")
VARIANTS_AH = (60.0, 94.0, 120.0)
"""The i3's capacity variants (docs/battery-model.md, "Pack"): what a nominal capacity is inferred from."""
SOH_FITS = (70.0, 103.0)
"""A variant fits an estimate when the SOH it gives lies in this range (ageing 75-100 %, ±the estimate's error)."""
file_name = fleet_health_file_name
"""``fleet-health-YYYY-MM-DD.json``: named by the contract's layout (:mod:`src.common.layout`)."""


@dataclass(frozen=True)
class Hour:
    """One hour's analytics block of one vehicle."""

    start: datetime
    block: Mapping[str, Any]


# --- Reading the day -------------------------------------------------------------------------------


def day_hours(day: date) -> list[datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return [start + timedelta(hours=h) for h in range(24)]


def read_local(aggregated_dir: Path, day: date) -> dict[datetime, dict[str, Any]]:
    """The day's hourly aggregates found under ``aggregated_dir``, by hour."""
    found = {}
    for hour in day_hours(day):
        path = aggregated_dir / aggregated_file_name(hour)
        if path.is_file():
            found[hour] = orjson.loads(path.read_bytes())
    return found


def read_s3(bucket: S3Bucket, day: date) -> dict[datetime, dict[str, Any]]:
    """The day's hourly aggregates in ``bucket`` (a missing hour is skipped), by hour."""
    from botocore.exceptions import ClientError

    found = {}
    for hour in day_hours(day):
        try:
            body = bucket.client().get_object(Bucket=bucket.name, Key=s3_aggregated_key(hour))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                continue
            raise
        found[hour] = orjson.loads(body)
    return found


def vehicle_hours(aggregates: Mapping[datetime, Mapping[str, Any]]) -> dict[str, list[Hour]]:
    """Each vehicle's hourly analytics blocks, in time order (aggregates without ``analytics`` are skipped)."""
    hours: dict[str, list[Hour]] = {}
    for start in sorted(aggregates):
        block = aggregates[start].get("analytics")
        if not block:
            continue
        for vehicle in block["vehicles"]:
            hours.setdefault(vehicle["vehicle_id"], []).append(Hour(start, vehicle))
    return hours


def earlier_days(aggregated_dir: Path, day: date) -> list[tuple[date, dict[str, Any]]]:
    """Earlier fleet-health documents under ``aggregated_dir``, oldest first."""
    found = []
    for path in aggregated_dir.glob("fleet-health-*.json"):
        then = fleet_health_day(path.name)
        if then is not None and then < day:
            found.append((then, orjson.loads(path.read_bytes())))
    return sorted(found, key=lambda pair: pair[0])


def read_registry(path: Path | None) -> dict[str, float]:
    """``FLEET_REGISTRY``: vehicle id -> nominal capacity (Ah). Raises ValueError on a malformed file."""
    if path is None:
        return {}
    document = orjson.loads(path.read_bytes())
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected an object of vehicle ids")
    registry = {}
    for vehicle_id, entry in document.items():
        nominal = entry.get("nominal_capacity_ah") if isinstance(entry, dict) else None
        if not isinstance(nominal, int | float) or nominal <= 0:
            raise ValueError(f"{path}: {vehicle_id}: nominal_capacity_ah must be a positive number")
        registry[vehicle_id] = float(nominal)
    return registry


# --- Per vehicle -----------------------------------------------------------------------------------


def weighted_median(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The value at which half the weight lies on either side (lower one on a tie); None without weight."""
    items = sorted((value, weight) for value, weight in pairs if weight > 0)
    total = sum(weight for _, weight in items)
    if not items:
        return None
    running = 0.0
    for value, weight in items:
        running += weight
        if running >= total / 2:
            return value
    return items[-1][0]  # pragma: no cover - the loop always returns


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def capacity(hours: Sequence[Hour]) -> dict[str, Any]:
    """The estimate from the day's largest qualifying SOC swing (the most reliable: SOC resolution weighs least)."""
    candidates = [h for h in hours if h.block["capacity"]["ah"] is not None]
    if not candidates:
        largest = max((h.block["capacity"]["swing_pct"] or 0.0 for h in hours), default=0.0)
        reason = (
            f"no hour had a qualifying SOC swing (the largest without a gap: {largest:.1f} points; "
            "ANALYTICS_CAPACITY_MIN_SWING_PCT needed)"
        )
        return {"ah": None, "basis": None, "estimates": 0, "reason": reason}
    best = max(candidates, key=lambda h: (h.block["capacity"]["swing_pct"], -h.start.timestamp()))
    estimate = best.block["capacity"]
    return {
        "ah": estimate["ah"],
        "basis": {"hour": best.start.strftime("%Y-%m-%dT%H"), "swing_pct": estimate["swing_pct"]}
        | {"window": estimate["window"]},
        "estimates": len(candidates),
        "spread_ah": _r(
            max(h.block["capacity"]["ah"] for h in candidates) - min(h.block["capacity"]["ah"] for h in candidates)
        ),
        "reason": None,
    }


def nominal(vehicle_id: str, estimate: float | None, registry: Mapping[str, float]) -> dict[str, Any]:
    """The pack's nominal capacity: the registry's, else the i3 variant the estimate fits (docs: the rule)."""
    if vehicle_id in registry:
        return {"ah": registry[vehicle_id], "source": "registry", "basis": "FLEET_REGISTRY", "alternatives": []}
    if estimate is None:
        return {
            "ah": None,
            "source": None,
            "basis": "not in FLEET_REGISTRY and no capacity estimate",
            "alternatives": [],
        }
    fits = [v for v in VARIANTS_AH if SOH_FITS[0] <= 100.0 * estimate / v <= SOH_FITS[1]]
    if not fits:
        return {
            "ah": None,
            "source": None,
            "basis": f"not in FLEET_REGISTRY; {estimate:g} Ah fits no i3 variant (60/94/120 Ah) at SOH "
            f"{SOH_FITS[0]:g}-{SOH_FITS[1]:g} %",
            "alternatives": [],
        }
    chosen = fits[0]
    basis = (
        f"inferred: the smallest i3 variant (60/94/120 Ah) at which the estimate gives an SOH of "
        f"{SOH_FITS[0]:g}-{SOH_FITS[1]:g} %"
    )
    if len(fits) > 1:
        basis += "; ambiguous, also fits " + ", ".join(f"{v:g} Ah" for v in fits[1:]) + " (set FLEET_REGISTRY)"
    return {"ah": chosen, "source": "inferred", "basis": basis, "alternatives": fits[1:]}


def resistance(hours: Sequence[Hour]) -> dict[str, Any]:
    """The steps-weighted median of the hours' estimates at 25 °C."""
    pairs = [
        (float(h.block["resistance"]["mohm_25c"]), float(h.block["resistance"]["steps"]))
        for h in hours
        if h.block["resistance"]["mohm_25c"] is not None
    ]
    if not pairs:
        return {"mohm_25c": None, "hours": 0, "steps": 0, "reason": "no hour had enough current steps for an estimate"}
    return {
        "mohm_25c": _r(weighted_median(pairs)),
        "hours": len(pairs),
        "steps": int(sum(weight for _, weight in pairs)),
        "reason": None,
    }


Baselines = dict[str, dict[str, tuple[date, float]]]
"""Per figure, per vehicle: the earliest earlier day that has the figure, and its value then."""

TREND_FIGURES = (("resistance_mohm_25c", "resistance"), ("capacity_ah", "capacity"))


def baselines(earlier: Sequence[tuple[date, dict[str, Any]]]) -> Baselines:
    """Index the earlier documents (oldest first) once, so each vehicle's trend is a lookup, not a scan."""
    found: Baselines = {key: {} for key, _ in TREND_FIGURES}
    for then, document in earlier:
        for entry in document.get("vehicles", []):
            for key, _ in TREND_FIGURES:
                if entry.get(key) is not None:
                    found[key].setdefault(entry.get("vehicle_id"), (then, entry[key]))
    return found


def trend(vehicle_id: str, figures: Mapping[str, Any], base: Baselines) -> dict[str, Any]:
    """Resistance and capacity against the earliest earlier day that has them for this vehicle."""
    result: dict[str, Any] = {}
    for key, name in TREND_FIGURES:
        now = figures[key]
        since = base[key].get(vehicle_id)
        if since is None or now is None:
            reason = "no earlier fleet-health day with this figure" if since is None else "no figure today"
            result[name] = {"since": None, "from": None, "growth_pct": None, "reason": reason}
        else:
            result[name] = {
                "since": since[0].isoformat(),
                "from": since[1],
                "growth_pct": _r(100.0 * (now / since[1] - 1.0)),
                "reason": None,
            }
    return result


def usage(hours: Sequence[Hour]) -> dict[str, Any]:
    def total(section: str, key: str) -> float:
        return round(sum(h.block[section][key] or 0.0 for h in hours), 6)

    temps = [h.block["temperature"]["max_c"] for h in hours if h.block["temperature"]["max_c"] is not None]
    return {
        "hours": len(hours),
        "readings": sum(h.block["samples"]["readings"] for h in hours),
        "charged_kwh": total("energy", "charged_kwh"),
        "discharged_kwh": total("energy", "discharged_kwh"),
        "throughput_ah": total("energy", "throughput_ah"),
        "equivalent_full_cycles": total("energy", "equivalent_full_cycles"),
        "charging_sessions": sum(len(h.block["charging_sessions"]) for h in hours),
        "max_temp_c": max(temps, default=None),
    }


def vehicle_entry(
    vehicle_id: str,
    hours: Sequence[Hour],
    registry: Mapping[str, float],
    base: Baselines,
) -> dict[str, Any]:
    cap = capacity(hours)
    nom = nominal(vehicle_id, cap["ah"], registry)
    res = resistance(hours)
    soh = None
    soh_reason = None
    if cap["ah"] is None:
        soh_reason = "no capacity estimate"
    elif nom["ah"] is None:
        soh_reason = "no nominal capacity: " + nom["basis"]
    else:
        soh = _r(100.0 * cap["ah"] / nom["ah"], 2)
    entry: dict[str, Any] = {
        "vehicle_id": vehicle_id,
        "capacity_ah": cap["ah"],
        "soh_pct": soh,
        "resistance_mohm_25c": res["mohm_25c"],
        "capacity": cap,
        "nominal_capacity": nom,
        "soh_reason": soh_reason,
        "resistance": res,
    }
    entry["trend"] = trend(vehicle_id, entry, base)
    entry["resistance_growth_pct"] = entry["trend"]["resistance"]["growth_pct"]
    entry["usage"] = usage(hours)
    return entry


# --- Alerts ----------------------------------------------------------------------------------------


def _first(h: Hour) -> str:
    return str(h.block["samples"]["first"])


def _alert(vehicle_id: str, kind: str, first_seen: str, severity: str, evidence: dict[str, Any]) -> dict[str, Any]:
    return {
        "vehicle_id": vehicle_id,
        "kind": kind,
        "first_seen": first_seen,
        "severity": severity,
        "evidence": evidence,
    }


def _hours(hits: Sequence[Hour]) -> list[str]:
    return [h.start.strftime("%Y-%m-%dT%H") for h in hits]


def alerts_for(vehicle_id: str, hours: Sequence[Hour], s: AggregatorSettings) -> list[dict[str, Any]]:
    """The vehicle's alerts of the day, one per kind at most (docs: each detector and its threshold)."""
    found: list[dict[str, Any]] = []

    sensor = [h for h in hours if h.block["pack_voltage"]["fraction_outside"] >= s.alert_sensor_fraction]
    if sensor:
        outside = sum(h.block["pack_voltage"]["readings_outside"] for h in hours)
        readings = sum(h.block["samples"]["readings"] for h in hours)
        found.append(
            _alert(
                vehicle_id,
                "sensor_inconsistency",
                sensor[0].block["first_seen"]["pack_voltage_outside"] or _first(sensor[0]),
                "critical" if outside >= 0.5 * readings else "warning",
                {
                    "readings_outside": outside,
                    "fraction_outside": round(outside / readings, 6),
                    "max_outside_v": max(h.block["pack_voltage"]["max_outside_v"] for h in sensor),
                    "hours": _hours(sensor),
                    "threshold_fraction": s.alert_sensor_fraction,
                },
            )
        )

    critical = [h for h in hours if (h.block["temperature"]["minutes_above_critical"] or 0.0) > 0]
    warning = [
        h for h in hours if (h.block["temperature"]["minutes_above_warning"] or 0.0) >= s.alert_over_temperature_minutes
    ]
    if critical or warning:
        first = (critical or warning)[0]
        key = "above_critical" if critical else "above_warning"
        found.append(
            _alert(
                vehicle_id,
                "over_temperature",
                first.block["first_seen"][key] or _first(first),
                "critical" if critical else "warning",
                {
                    "minutes_above_warning": round(
                        sum(h.block["temperature"]["minutes_above_warning"] or 0 for h in hours), 3
                    ),
                    "minutes_above_critical": round(
                        sum(h.block["temperature"]["minutes_above_critical"] or 0 for h in hours), 3
                    ),
                    "max_temp_c": max(
                        h.block["temperature"]["max_c"] for h in hours if h.block["temperature"]["max_c"] is not None
                    ),
                    "hours": _hours(critical or warning),
                },
            )
        )

    weak = [
        h
        for h in hours
        if h.block["weakest_cell"]["sag_ratio"] is not None
        and h.block["weakest_cell"]["sag_ratio"] >= s.alert_weak_cell_sag_ratio
    ]
    if weak:
        ratio = max(h.block["weakest_cell"]["sag_ratio"] for h in weak)
        found.append(
            _alert(
                vehicle_id,
                "weak_cell",
                _first(weak[0]),
                "critical" if ratio >= s.alert_weak_cell_critical_ratio else "warning",
                {
                    "sag_ratio_max": ratio,
                    "sag_ratio_by_hour": {
                        h.start.strftime("%Y-%m-%dT%H"): h.block["weakest_cell"]["sag_ratio"] for h in weak
                    },
                    "steps": sum(h.block["weakest_cell"]["steps"] for h in weak),
                    "threshold": s.alert_weak_cell_sag_ratio,
                },
            )
        )

    # Rest-weighted over the day, not hour by hour: a healthy pack's spread drifts a few mV/h in some
    # rest stretches and back in others; a leaking cell keeps pulling it up (docs/battery-analytics.md).
    rested = [
        h
        for h in hours
        if h.block["rest_spread_growth"]["mv_per_h"] is not None
        and h.block["rest_spread_growth"]["rest_s"] >= s.alert_self_discharge_min_rest_s
    ]
    weights = [(h.block["rest_spread_growth"]["mv_per_h"], h.block["rest_spread_growth"]["rest_s"]) for h in rested]
    rest_s = sum(w for _, w in weights)
    day_rate = sum(rate * w for rate, w in weights) / rest_s if rest_s else None
    if day_rate is not None and day_rate >= s.alert_self_discharge_mv_per_h:
        growing = [h for h in rested if h.block["rest_spread_growth"]["mv_per_h"] >= s.alert_self_discharge_mv_per_h]
        first = growing[0] if growing else rested[0]
        found.append(
            _alert(
                vehicle_id,
                "self_discharge",
                first.block["rest_spread_growth"]["first"] or _first(first),
                "critical" if day_rate >= 3 * s.alert_self_discharge_mv_per_h else "warning",
                {
                    "mv_per_h_day": round(day_rate, 3),
                    "mv_per_h_by_hour": {
                        h.start.strftime("%Y-%m-%dT%H"): h.block["rest_spread_growth"]["mv_per_h"] for h in rested
                    },
                    "rest_s": round(rest_s, 3),
                    "threshold_mv_per_h": s.alert_self_discharge_mv_per_h,
                },
            )
        )

    found += _imbalance(vehicle_id, hours, s)
    found += _cooling(vehicle_id, hours, s)
    return found


def _rest_soc_p50(h: Hour) -> float | None:
    """The hour's at-rest SOC spread P50 (points; None without rest, or for an aggregate from before the figure)."""
    figure = h.block.get("rest_soc_spread_pct")
    return None if figure is None else figure["p50"]


def _imbalance(vehicle_id: str, hours: Sequence[Hour], s: AggregatorSettings) -> list[dict[str, Any]]:
    """``cell_imbalance`` when the cells' at-rest SOC spread reaches ``alert_imbalance_soc_pct`` in at least two rest
    hours (or the day's only one). In SOC points, not millivolts: the same imbalance reads as more millivolts where
    the OCV curve is steep (near full), so a millivolt threshold judged a pack by where it rested (docs: the rule)."""
    at_rest = [h for h in hours if _rest_soc_p50(h) is not None]
    high = [h for h in at_rest if (_rest_soc_p50(h) or 0.0) >= s.alert_imbalance_soc_pct]
    if not (len(high) >= 2 or (high and len(at_rest) == 1)):
        return []
    spread = statistics.median(_rest_soc_p50(h) or 0.0 for h in high)
    return [
        _alert(
            vehicle_id,
            "cell_imbalance",
            _first(high[0]),
            "critical" if spread >= s.alert_imbalance_critical_soc_pct else "warning",
            {
                "rest_soc_spread_pct_median": round(spread, 3),
                "rest_spread_mv_median": round(
                    statistics.median(h.block["cell_voltage_spread_mv"]["at_rest"]["p50"] for h in high), 3
                ),
                "rest_hours_above": len(high),
                "rest_hours": len(at_rest),
                "hours": _hours(high),
                "threshold_soc_pct": s.alert_imbalance_soc_pct,
            },
        )
    ]


def _lag_s(h: Hour) -> float:
    """Seconds of the hour a module lagged its coolant or heater (0 for an aggregate from before the figure)."""
    lag = h.block.get("module_lag")
    return 0.0 if lag is None else float(lag["cooling"]["seconds"] + lag["heating"]["seconds"])


def _cooling(vehicle_id: str, hours: Sequence[Hour], s: AggregatorSettings) -> list[dict[str, Any]]:
    """``cooling_fault`` when modules lagged their pump for ``alert_cooling_lag_s`` over the day (docs: the rule)."""
    lagging = [h for h in hours if _lag_s(h) > 0]
    total = sum(_lag_s(h) for h in lagging)
    if total < s.alert_cooling_lag_s:
        return []
    hotter = any((h.block["temperature"]["minutes_above_warning"] or 0) > 0 for h in lagging)
    return [
        _alert(
            vehicle_id,
            "cooling_fault",
            lagging[0].block["module_lag"]["first"] or _first(lagging[0]),
            "critical" if hotter else "warning",
            {
                "lag_s": round(total, 3),
                "lag_s_by_hour": {h.start.strftime("%Y-%m-%dT%H"): round(_lag_s(h), 3) for h in lagging},
                "lag_p95_c_max": max(
                    (h.block["module_lag"][case]["p95_c"] or 0.0) for h in lagging for case in ("cooling", "heating")
                ),
                "max_temp_c": max(h.block["temperature"]["max_c"] for h in lagging),
                "threshold_s": s.alert_cooling_lag_s,
            },
        )
    ]


# --- The document ----------------------------------------------------------------------------------


def build(
    day: date,
    aggregates: Mapping[datetime, Mapping[str, Any]],
    settings: AggregatorSettings,
    registry: Mapping[str, float],
    earlier: Sequence[tuple[date, dict[str, Any]]],
) -> dict[str, Any]:
    by_vehicle = vehicle_hours(aggregates)
    base = baselines(earlier)
    alerts = [a for vid in sorted(by_vehicle) for a in alerts_for(vid, by_vehicle[vid], settings)]
    return {
        "day": day.isoformat(),
        "hours": sorted(h.strftime("%Y-%m-%dT%H") for h in aggregates),
        "vehicles": [vehicle_entry(vid, by_vehicle[vid], registry, base) for vid in sorted(by_vehicle)],
        "alerts": sorted(alerts, key=lambda a: (a["first_seen"], a["vehicle_id"], a["kind"])),
        "thresholds": {
            name: getattr(settings, name) for name in type(settings).model_fields if name.startswith("alert_")
        },
    }


def run_day(settings: AggregatorSettings, bucket: S3Bucket | None, day: date, source: str) -> int:
    """Read the day, write its document (and upload it with a bucket); the exit status."""
    try:
        registry = read_registry(settings.fleet_registry)
    except (OSError, ValueError) as exc:
        print(f"error: FLEET_REGISTRY: {exc}", file=sys.stderr)
        return EXIT_USAGE
    aggregates = (
        read_s3(bucket, day) if source == "s3" and bucket is not None else read_local(settings.aggregated_dir, day)
    )
    with_analytics = {hour: doc for hour, doc in aggregates.items() if doc.get("analytics")}
    if not with_analytics:
        found = (
            f"{len(aggregates)} hourly aggregate(s), none with an analytics block"
            if aggregates
            else "no hourly aggregate"
        )
        print(
            f"error: day {day.isoformat()}: {found} (run the hourly job for its hours first); nothing written",
            file=sys.stderr,
        )
        return EXIT_FAILED
    document = build(day, with_analytics, settings, registry, earlier_days(settings.aggregated_dir, day))
    settings.aggregated_dir.mkdir(parents=True, exist_ok=True)
    path = settings.aggregated_dir / file_name(day)
    write_atomically(path, render(document))
    print(path)
    if bucket is not None:
        try:
            print(put_file(bucket, path, s3_aggregated_key_for(day), "application/json"))
        except UploadFailed as exc:
            print(f"error: {exc} (the local file stands; a rerun writes and uploads it again)", file=sys.stderr)
            return EXIT_FAILED
    kinds = ", ".join(f"{a['vehicle_id']} {a['kind']} ({a['severity']})" for a in document["alerts"]) or "none"
    print(
        f"day {day.isoformat()}: {len(document['vehicles'])} vehicles from {len(with_analytics)} hour(s); "
        f"alerts: {kinds}"
    )
    return EXIT_OK


def s3_aggregated_key_for(day: date) -> str:
    """``aggregated/fleet-health-<day>.json``, beside the hourly aggregates."""
    return (
        s3_aggregated_key(datetime(day.year, day.month, day.day, tzinfo=UTC)).rsplit("/", 1)[0] + "/" + file_name(day)
    )


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.aggregator.fleet_health", description=__doc__.split("\n\n")[0])
    parser.add_argument("--day", type=_day, help="UTC day YYYY-MM-DD (default: the previous day)")
    parser.add_argument("--source", choices=("local", "s3"), default="local", help="where the hourly aggregates are")
    parser.add_argument(
        "--engine", choices=("duckdb", "spark"), default="duckdb", help="accepted for symmetry: no SQL runs here"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    args = parse_args(argv)
    settings = AggregatorSettings()
    configure_logging(settings.log_level, settings.log_format)
    if args.source == "s3" and settings.s3_bucket is None:
        print("error: --source s3: S3_BUCKET unset (it names the bucket holding aggregated/)", file=sys.stderr)
        return EXIT_USAGE
    bucket = S3Bucket(settings.s3_bucket, settings) if settings.s3_bucket else None
    day = args.day or (now().astimezone(UTC).date() - timedelta(days=1))
    return run_day(settings, bucket, day, args.source)


if __name__ == "__main__":
    sys.exit(main())
