"""The vehicle page and its API: windows validated, unknown vehicles 404, reports read for sessions, health and
alerts, damage named without failing, the JSON embedded safely, the token over both routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from src.common.layout import aggregated_file_name, fleet_health_file_name
from src.dashboard import vehicle
from src.dashboard.app import create_app
from tests.unit.test_dashboard_app import running, unreachable
from tests.unit.test_dashboard_series import HOUR, VEHICLE, curate, every_second, write_raw

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
WEEK = timedelta(hours=168)
TOKEN = "vehicle-page-token"


@pytest.mark.parametrize(
    ("query", "start", "end", "label"),
    [
        ({}, NOW - timedelta(hours=1), NOW, "1h"),
        ({"window": "15m"}, NOW - timedelta(minutes=15), NOW, "15m"),
        ({"window": "7d"}, NOW - timedelta(days=7), NOW, "7d"),
        ({"from": "2026-01-15T08:00:00Z", "to": "2026-01-15T09:00:00+01:00"}, HOUR, HOUR, None),
        ({"from": "2026-01-15T08:00:00Z", "to": "2026-01-15T09:00:00 00:00"}, HOUR, HOUR + timedelta(hours=1), None),
    ],
)
def test_windows_that_are_accepted(query: dict[str, str], start: datetime, end: datetime, label: str | None) -> None:
    if start == end:  # 09:00+01:00 is 08:00Z: not after 'from'
        with pytest.raises(vehicle.BadRequest, match="'to' must be after 'from'"):
            vehicle.parse_request(VEHICLE, query, NOW, WEEK)
        return
    asked = vehicle.parse_request(VEHICLE, query, NOW, WEEK)
    assert (asked.window.start, asked.window.end, asked.label) == (start, end, label)


@pytest.mark.parametrize(
    ("vehicle_id", "query", "reason"),
    [
        ("veh 1", {}, "a vehicle id is"),
        ("x" * 65, {}, "a vehicle id is"),
        (VEHICLE, {"window": "8d"}, "longer than 168 h"),
        (VEHICLE, {"window": "0h"}, "a number and a unit"),
        (VEHICLE, {"window": "1y"}, "a number and a unit"),
        (VEHICLE, {"window": "99999999999h"}, "a number and a unit"),
        (VEHICLE, {"from": "2026-01-15T08:00:00Z"}, "go together"),
        (VEHICLE, {"from": "2026-01-15T08:00:00Z", "to": "2026-01-15T09:00:00Z", "window": "1h"}, "not both"),
        (VEHICLE, {"from": "yesterday", "to": "2026-01-15T09:00:00Z"}, "'from' is not an ISO 8601"),
        (VEHICLE, {"from": "2026-01-15T08:00:00", "to": "2026-01-15T09:00:00Z"}, "'from' has no zone"),
        (VEHICLE, {"from": "0001-01-01T00:00:00+14:00", "to": "2026-01-15T09:00:00Z"}, "outside the years"),
        (VEHICLE, {"from": "2000-01-01T00:00:00Z", "to": "2026-01-15T09:00:00Z"}, "longer than 168 h"),
    ],
)
def test_malformed_requests_say_why(vehicle_id: str, query: dict[str, str], reason: str) -> None:
    with pytest.raises(vehicle.BadRequest, match=reason):
        vehicle.parse_request(vehicle_id, query, NOW, WEEK)


def session(start: str, end: str, open_start: bool, open_end: bool, kwh: float | None = 1.0) -> dict[str, Any]:
    return {"start": start, "end": end, "soc_from": 20.0, "soc_to": 30.0, "energy_kwh": kwh, "peak_power_kw": 11.0} | {
        "open_start": open_start,
        "open_end": open_end,
    }


def test_sessions_split_by_an_hour_are_joined_and_others_kept_apart() -> None:
    split = [
        session("2026-01-15T08:40:00Z", "2026-01-15T08:59:59Z", False, True),
        session("2026-01-15T09:00:00Z", "2026-01-15T09:20:00Z", True, False, kwh=2.0),
        session("2026-01-15T09:40:00Z", "2026-01-15T09:59:59Z", False, True, kwh=None),
        session("2026-01-15T10:30:00Z", "2026-01-15T10:40:00Z", True, False),  # open, but 30 min later
    ]
    joined = vehicle.join_sessions(split)
    assert [(s["start"], s["end"], s["energy_kwh"]) for s in joined] == [
        ("2026-01-15T08:40:00Z", "2026-01-15T09:20:00Z", 3.0),
        ("2026-01-15T09:40:00Z", "2026-01-15T09:59:59Z", None),
        ("2026-01-15T10:30:00Z", "2026-01-15T10:40:00Z", 1.0),
    ]
    bad = [session("nonsense", "2026-01-15T08:59:59Z", False, True), session("x", "y", True, False, None)]
    assert len(vehicle.join_sessions(bad)) == 2


def test_alerts_are_grouped_by_kind_worst_first_with_their_earliest_first_seen() -> None:
    def alert(kind: str, severity: str, first_seen: str | None) -> dict[str, Any]:
        return {"vehicle_id": VEHICLE, "kind": kind, "severity": severity, "first_seen": first_seen, "evidence": {}}

    grouped = vehicle.group_alerts(
        [
            (date(2026, 1, 15), alert("weak_cell", "critical", "2026-01-15T01:00:00Z")),
            (date(2026, 1, 14), alert("weak_cell", "warning", "2026-01-14T05:00:00Z")),
            (date(2026, 1, 15), alert("cell_imbalance", "warning", None)),
            (date(2026, 1, 14), alert("cell_imbalance", "warning", "2026-01-14T07:00:00Z")),
        ]
    )
    assert [(a["kind"], a["severity"], a["first_seen"], a["days"]) for a in grouped] == [
        ("weak_cell", "critical", "2026-01-14T05:00:00Z", ["2026-01-14", "2026-01-15"]),
        ("cell_imbalance", "warning", "2026-01-14T07:00:00Z", ["2026-01-14", "2026-01-15"]),
    ]


def test_the_embedded_json_cannot_close_its_block() -> None:
    page = vehicle.embed("<title>__VEHICLE_ID__</title><script>__VEHICLE_DATA__</script>", "a<b", {"x": "</script>&"})
    assert "</script>&" not in page and "a&lt;b" in page
    assert orjson.loads(page.split("<script>")[1].split("</script>")[0]) == {"x": "</script>&"}


def write_json(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(document if isinstance(document, bytes) else orjson.dumps(document))


def lay_out(root: Path) -> None:
    """Hour 08 curated with its aggregate (one charging session) and the day's fleet-health document (one alert);
    a few minutes of hour 10 raw."""
    write_raw(root / "raw", every_second(HOUR, 600), HOUR + timedelta(minutes=10))
    curate(root, HOUR)
    write_raw(root / "raw", every_second(NOW - timedelta(minutes=5), 240), NOW - timedelta(seconds=50))
    aggregated = root / "aggregated"
    charging = session("2026-01-15T08:02:00Z", "2026-01-15T08:08:00Z", False, False)
    write_json(
        aggregated / aggregated_file_name(HOUR),
        {
            "vehicles": [{"vehicle_id": VEHICLE}, {"vehicle_id": "veh-quiet"}],
            "analytics": {"vehicles": [{"vehicle_id": VEHICLE, "charging_sessions": [charging, "junk"]}, "junk"]},
        },
    )
    health = {
        "day": "2026-01-15",
        "vehicles": [{"vehicle_id": VEHICLE, "capacity_ah": 90.1, "soh_pct": 95.9, "resistance_mohm_25c": 101.0}],
        "alerts": [
            {"vehicle_id": VEHICLE, "kind": "sensor_inconsistency", "severity": "critical", "first_seen": "x"},
            {"vehicle_id": "veh-ghost", "kind": "weak_cell", "severity": "warning", "first_seen": "y"},
            "junk",
        ],
    }
    write_json(aggregated / fleet_health_file_name(date(2026, 1, 15)), health)
    write_json(aggregated / fleet_health_file_name(date(2025, 11, 1)), {"vehicles": [{"vehicle_id": VEHICLE}]})


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    lay_out(tmp_path)
    async with running(create_app(unreachable(data_dir=tmp_path))) as open_client:
        yield open_client


WINDOW = {"from": "2026-01-15T07:30:00Z", "to": "2026-01-15T10:30:00Z"}


async def test_the_api_stitches_readings_sessions_health_and_alerts(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/vehicles/{VEHICLE}", params=WINDOW)
    assert response.status_code == 200
    view = response.json()
    assert view["signals"]["readings"] == 600 + 240
    assert view["signals"]["curated_hours"] == ["2026-01-15T08"] and view["signals"]["raw_hours"] == ["2026-01-15T10"]
    assert view["signals"]["mode"] == "raw"
    assert [(s["start"], s["end"]) for s in view["sessions"]] == [("2026-01-15T08:02:00Z", "2026-01-15T08:08:00Z")]
    assert view["health"] == {
        "day": ["2026-01-15"],
        "capacity_ah": [90.1],
        "soh_pct": [95.9],
        "resistance_mohm_25c": [101.0],
    }
    assert [a["kind"] for a in view["alerts"]] == ["sensor_inconsistency"]
    assert view["problems"] == [] and view["message"] is None and view["refresh_s"] is None


async def test_the_page_embeds_the_same_view(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that finishes within the page's wait is embedded in the HTML (the wait is made long here: the
    machine is shared, and the embedding, not the deadline, is what this protects)."""
    monkeypatch.setattr(vehicle, "PAGE_WAIT_S", 60.0)
    page = await client.get(f"/vehicles/{VEHICLE}", params=WINDOW)
    assert page.status_code == 200
    assert "<title>Vehicle veh-00001 " in page.text and '<script src="/static/vehicle.js" defer>' in page.text
    block = page.text.split('<script id="vehicle-data" type="application/json">')[1].split("</script>")[0]
    assert orjson.loads(block)["signals"]["readings"] == 840
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    for name in ("vehicle.js", "vehicle.html"):
        assert (await client.get(f"/static/{name}")).status_code == 200


async def test_unknown_vehicles_empty_windows_and_bad_windows(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/api/vehicles/veh-99999", params=WINDOW)
    assert unknown.status_code == 404 and unknown.json()["message"].startswith("No vehicle veh-99999")
    assert (await client.get("/vehicles/veh-99999", params=WINDOW)).status_code == 404
    # Named by a report but silent in the window: known, with an empty chart and a message.
    quiet = await client.get("/api/vehicles/veh-quiet", params=WINDOW)
    assert quiet.status_code == 200 and quiet.json()["message"] == "No readings of this vehicle in this window."
    ghost = await client.get("/api/vehicles/veh-ghost", params=WINDOW)  # named by an alert only
    assert ghost.status_code == 200 and ghost.json()["alerts"][0]["kind"] == "weak_cell"
    live = await client.get(f"/api/vehicles/{VEHICLE}", params={"window": "15m"})
    assert live.status_code == 404 and live.json()["refresh_s"] == vehicle.LIVE_REFRESH_S  # nothing this December

    bad = await client.get(f"/api/vehicles/{VEHICLE}", params={"window": "30d"})
    assert bad.status_code == 400 and "longer than 168 h" in bad.json()["error"]
    page = await client.get("/vehicles/no%20such!id")
    assert page.status_code == 400 and "a vehicle id is" in page.text and "<title>Vehicle ? " in page.text


async def test_damaged_reports_and_data_are_named_not_fatal(client: httpx.AsyncClient, tmp_path: Path) -> None:
    write_json(tmp_path / "aggregated" / aggregated_file_name(HOUR), b"{broken")
    write_json(tmp_path / "aggregated" / fleet_health_file_name(date(2026, 1, 15)), b"[1]")
    view = (await client.get(f"/api/vehicles/{VEHICLE}", params=WINDOW)).json()
    assert view["signals"]["readings"] == 840
    assert view["problems"][0].startswith(f"the aggregate cannot be read: {aggregated_file_name(HOUR)} is not JSON (")
    assert view["problems"][1:] == [
        "the fleet-health document cannot be read: fleet-health-2026-01-15.json is not a JSON object"
    ]
    parquet = next((tmp_path / "curated").rglob("*.parquet"))
    parquet.write_bytes(b"not parquet")
    response = await client.get(f"/api/vehicles/{VEHICLE}", params=WINDOW)
    assert response.status_code == 200
    view = response.json()
    assert view["signals"] is None and view["problems"][0].startswith("the readings cannot be read:")


async def test_the_token_guards_the_vehicle_routes(tmp_path: Path) -> None:
    lay_out(tmp_path)
    async with running(create_app(unreachable(data_dir=tmp_path, dashboard_token=TOKEN))) as guarded:
        for path in (f"/vehicles/{VEHICLE}", f"/api/vehicles/{VEHICLE}", "/static/vehicle.js"):
            assert (await guarded.get(path)).status_code == 401, path
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        shown = await guarded.get(f"/vehicles/{VEHICLE}", params=WINDOW, headers=bearer)
        assert shown.status_code == 200 and TOKEN not in shown.text


def test_the_report_cache_reads_a_file_again_once_it_changed(tmp_path: Path) -> None:
    cache, path, reads = vehicle.ReportCache(max_entries=1), tmp_path / "r.json", []

    def read() -> dict[str, Any] | None:
        reads.append(1)
        return orjson.loads(path.read_bytes()) if path.exists() else None

    assert cache.get(path, read, dict) is None
    write_json(path, {"a": 1})
    assert cache.get(path, read, dict) == {"a": 1} == cache.get(path, read, dict)
    write_json(path, {"a": 22})
    assert cache.get(path, read, dict) == {"a": 22}
    assert len(reads) == 2 and len(cache._entries) == 1
    assert cache.get(path, lambda: None, dict) == {"a": 22}
    other = tmp_path / "vanishing.json"
    write_json(other, {})
    assert cache.get(other, lambda: None, dict) is None


async def test_a_slow_read_leaves_the_page_pending_and_the_api_answers(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vehicle, "PAGE_WAIT_S", 0.0)
    page = await client.get(f"/vehicles/{VEHICLE}", params=WINDOW)
    assert page.status_code == 200
    block = page.text.split('<script id="vehicle-data" type="application/json">')[1].split("</script>")[0]
    assert orjson.loads(block) == {
        "pending": True,
        "vehicle_id": VEHICLE,
        "window": {"from": "2026-01-15T07:30:00Z", "to": "2026-01-15T10:30:00Z", "label": None},
    }
    assert (await client.get(f"/api/vehicles/{VEHICLE}", params=WINDOW)).json()["signals"]["readings"] == 840


async def test_a_read_nobody_waits_for_is_collected() -> None:
    async def fails() -> None:
        raise RuntimeError("gone")

    failed = asyncio.ensure_future(fails())
    await asyncio.wait({failed})
    vehicle._retrieve(failed)
    cancelled = asyncio.ensure_future(asyncio.sleep(10))
    cancelled.cancel()
    await asyncio.wait({cancelled})
    vehicle._retrieve(cancelled)
