"""The fleet page's figures and routes (src/dashboard/fleet.py, queries.py, fleet_routes.py) on small files:
live rows from batch files and the newest reports, a past hour from its curated Parquet and reports, a clear
notice (never an error answer) for every missing or damaged source, and a 400 for a malformed hour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from fastapi import FastAPI

from src.common.layout import aggregated_file_name, fleet_health_file_name, hour_partition
from src.common.schema import SIGNALS
from src.dashboard import fleet as fleet_module
from src.dashboard import queries
from src.dashboard.fleet import (
    BadHour,
    Cached,
    Fleet,
    dominant_state,
    evidence_line,
    parse_hour,
    read_cached,
    rules_of,
)
from src.dashboard.fleet_routes import router
from src.dashboard.live import Rules
from src.dashboard.reports import ReportError
from tests.unit.test_dashboard_live import record, write_batch

NOW = datetime(2026, 1, 15, 9, 20, tzinfo=UTC)
PAST = datetime(2026, 1, 15, 8, tzinfo=UTC)
THRESHOLDS = {"gap_s": 5.0, "rest_current_a": 1.5, "session_merge_s": 30.0, "session_min_s": 60.0}


def entry(vehicle_id: str, charged: float, discharged: float, sessions: int = 1) -> dict[str, Any]:
    return {
        "vehicle_id": vehicle_id,
        "time_s": {"driving": 600.0, "charging": 2400.0, "parked": 599.0, "reason": None},
        "energy": {"charged_kwh": charged, "discharged_kwh": discharged, "reason": None},
        "charging_sessions": [{"start": "x"}] * sessions,
    }


def aggregate(vehicles: list[dict[str, Any]]) -> dict[str, Any]:
    return {"vehicles": [{"vehicle_id": v["vehicle_id"]} for v in vehicles],
            "analytics": {"thresholds": THRESHOLDS, "vehicles": vehicles}}  # fmt: skip


def health(day: date) -> dict[str, Any]:
    return {
        "day": day.isoformat(),
        "vehicles": [
            {"vehicle_id": "veh-1", "capacity_ah": 80.25, "soh_pct": 85.37},
            {"vehicle_id": "veh-2", "capacity_ah": None, "soh_pct": None, "soh_reason": "no capacity estimate"},
        ],
        "alerts": [
            {"vehicle_id": "veh-2", "kind": "cell_imbalance", "first_seen": "2026-01-15T08:10:00Z",
             "severity": "warning", "evidence": {"spread_mv": 62.0, "hours": ["2026-01-15T08"]}},
            {"vehicle_id": "veh-2", "kind": "sensor_inconsistency", "first_seen": "2026-01-15T08:30:00Z",
             "severity": "critical", "evidence": {"fraction_outside": 0.993333, "flag": True}},
        ],
    }  # fmt: skip


def write(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(document if isinstance(document, bytes) else orjson.dumps(document))


def write_curated(curated_dir: Path, hour: datetime, rows: list[tuple[str, str, float, float]]) -> Path:
    """A curated hour with the contract's columns: (vehicle_id, timestamp, soc, current) per row."""
    directory = curated_dir / hour_partition(hour)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "readings.parquet"
    with duckdb.connect() as connection:
        connection.execute("""CREATE TABLE r (vehicle_id VARCHAR, can_id VARCHAR, timestamp TIMESTAMPTZ,
            ingest_received_at TIMESTAMPTZ, battery_soc DOUBLE, battery_voltage DOUBLE, battery_current DOUBLE,
            cell_voltage_min DOUBLE, cell_voltage_max DOUBLE, cell_temp_min DOUBLE, cell_temp_max DOUBLE)""")
        for vehicle_id, stamp, soc, current in rows:
            connection.execute("INSERT INTO r VALUES (?, '0x1F0', ?::TIMESTAMPTZ, ?::TIMESTAMPTZ, ?, 355.5, ?, "
                               "3.701, 3.738, 20.0, 31.4)", [vehicle_id, stamp, stamp, soc, current])  # fmt: skip
        connection.execute("COPY r TO ? (FORMAT parquet)", [str(path)])
    return path


def make_fleet(data: Path, now: datetime = NOW, idle_s: float = 60.0) -> Fleet:
    return Fleet(data / "raw", data / "curated", data / "aggregated", 1.0, clock=lambda: now, idle_s=idle_s)


def live(fleet: Fleet) -> dict[str, Any]:
    fleet.refresh()
    return dict(orjson.loads(fleet.live_body()))


def texts(view: dict[str, Any]) -> str:
    return " | ".join(n["text"] for n in view["notices"])


# ----- pieces -----


def test_parse_hour_takes_an_hour_label_and_says_what_it_expects_otherwise() -> None:
    assert parse_hour("2026-01-15T08") == PAST
    for bad in ("2026-01-15", "2026-01-15T8", "2026-01-15T08:00", "x" * 5000, "2026-01-15T08\n", "'; DROP"):
        with pytest.raises(BadHour, match="YYYY-MM-DDTHH"):
            parse_hour(bad)
    with pytest.raises(BadHour, match="2026-02-30T08 is not a real hour"):
        parse_hour("2026-02-30T08")


def test_rules_come_from_the_aggregate_else_from_the_analytics_defaults() -> None:
    assert rules_of(aggregate([])) == (Rules(1.5, 30.0, 60.0), "the hourly job's thresholds")
    defaults = Rules(0.5, 60.0, 120.0)
    assert rules_of(None)[0] == defaults
    assert rules_of({"analytics": None})[0] == defaults
    assert rules_of({"analytics": {"thresholds": {"rest_current_a": "x"}}})[0] == defaults


def test_small_helpers() -> None:
    assert dominant_state({"driving": 10.0, "charging": 30.0, "parked": None}) == "charging"
    assert dominant_state({"driving": 0.0, "charging": 0.0, "parked": 0.0}) is None
    assert dominant_state(None) is None
    assert evidence_line({"a": 0.993333, "b": 3, "c": "x", "hours": ["h"], "flag": True}) == "a 0.993, b 3, c x"
    assert evidence_line(None) == "" and evidence_line("plain") == "plain"
    long = evidence_line({f"k{i}": "v" * 20 for i in range(20)})
    assert len(long) == 120 and long.endswith("…")


def test_a_cached_report_is_read_again_only_when_its_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write(path, {"a": 1})
    reads: list[int] = []

    def read() -> dict[str, Any]:
        reads.append(1)
        return dict(orjson.loads(path.read_bytes()))

    first = read_cached(Cached(), path, read)
    assert read_cached(first, path, read) is first and len(reads) == 1
    write(path, {"a": 22})
    assert read_cached(first, path, read).document == {"a": 22}

    def damaged() -> dict[str, Any]:
        raise ReportError("r.json is not JSON")

    assert read_cached(Cached(), path, damaged).error == "r.json is not JSON"


# ----- the live view -----


def test_live_rows_join_the_latest_readings_the_newest_aggregate_and_the_newest_health(tmp_path: Path) -> None:
    hour = NOW.replace(minute=0)
    write_batch(tmp_path / "raw", hour, 1, [record("veh-1", NOW - timedelta(seconds=30), current=-20.0, soc=55.5),
                                            record("veh-2", NOW - timedelta(seconds=30), current=1.0)])  # fmt: skip
    aggregated = tmp_path / "aggregated"
    write(aggregated / aggregated_file_name(PAST - timedelta(hours=1)), aggregate([entry("veh-1", 9.0, 9.0)]))
    write(aggregated / aggregated_file_name(PAST), aggregate([entry("veh-1", 1.234, 5.678), entry("veh-3", 0, 1)]))
    write(aggregated / fleet_health_file_name(date(2026, 1, 14)), {"day": "2026-01-14", "vehicles": [], "alerts": []})
    write(aggregated / fleet_health_file_name(date(2026, 1, 15)), health(date(2026, 1, 15)))

    view = live(make_fleet(tmp_path))
    assert view["mode"] == "live" and view["hour"] == "2026-01-15T09"
    assert view["energy_hour"] == "2026-01-15T08" and view["health_day"] == "2026-01-15"
    assert view["hours"] == ["2026-01-15T08", "2026-01-15T07"]
    assert view["rules"]["rest_current_a"] == 1.5  # the aggregate's thresholds decide the state
    assert view["notices"] == []
    by_id = {row["vehicle_id"]: row for row in view["rows"]}
    assert list(by_id) == ["veh-1", "veh-2", "veh-3"]
    assert by_id["veh-1"] | {"time_s": None} == {
        "vehicle_id": "veh-1", "at": "2026-01-15T09:19:30Z", "soc": 55.5, "voltage_v": 360.0, "current_a": -20.0,
        "spread_mv": 22.0, "temp_max_c": 24.5, "state": "driving", "charged_kwh": 1.234, "discharged_kwh": 5.678,
        "sessions": 1, "time_s": None, "soh_pct": 85.37, "capacity_ah": 80.25, "soh_reason": None, "alerts": 0,
        "severity": None,
    }  # fmt: skip
    assert by_id["veh-2"]["state"] == "parked"  # 1.0 A is rest under the aggregate's 1.5 A
    assert by_id["veh-2"]["alerts"] == 2 and by_id["veh-2"]["severity"] == "critical"
    assert by_id["veh-2"]["soh_reason"] == "no capacity estimate"
    assert by_id["veh-3"]["soc"] is None and by_id["veh-3"]["discharged_kwh"] == 1
    assert [a["kind"] for a in view["alerts"]] == ["sensor_inconsistency", "cell_imbalance"]  # critical first
    assert view["alerts"][0]["evidence"] == "fraction_outside 0.993"
    assert view["counts"]["files_read"] == 1 and view["counts"]["vehicles"] == 2


def test_live_view_says_what_is_missing_before_data_and_reports_exist(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    assert orjson.loads(fleet.live_body())["notices"] == [{"level": "info", "text": "collecting…"}]
    view = live(fleet)
    assert view["rows"] == [] and view["energy_hour"] is None and view["health_day"] is None
    notices = texts(view)
    assert "no readings yet in the hour 2026-01-15T09" in notices
    assert "no hourly aggregate yet" in notices and "no fleet-health document yet" in notices
    assert "defaults" in view["rules"]["source"]


@pytest.mark.parametrize(
    ("aggregate_doc", "health_doc", "expected"),
    [
        (b"{not json", None, "the aggregate cannot be read: aggregated-2026-01-15T08.json is not JSON"),
        ({"analytics": {"vehicles": {"veh-1": 1}}}, None, "its analytics vehicles is not a list of vehicle entries"),
        ({"vehicles": []}, None, "has no analytics block"),
        (None, b"[1]", "the fleet-health document cannot be read: fleet-health-2026-01-15.json is not a JSON object"),
        (None, {"vehicles": [1]}, "fleet-health-2026-01-15.json: its vehicles is not a list of vehicle entries"),
        (None, {"vehicles": [], "alerts": "many"}, "its alerts are not a list of objects"),
    ],
)
def test_a_damaged_or_partial_report_is_a_notice_and_the_rest_still_shows(
    tmp_path: Path, aggregate_doc: Any, health_doc: Any, expected: str
) -> None:
    write_batch(tmp_path / "raw", NOW.replace(minute=0), 1, [record("veh-1", NOW - timedelta(seconds=5))])
    if aggregate_doc is not None:
        write(tmp_path / "aggregated" / aggregated_file_name(PAST), aggregate_doc)
    if health_doc is not None:
        write(tmp_path / "aggregated" / fleet_health_file_name(date(2026, 1, 15)), health_doc)
    view = live(make_fleet(tmp_path))
    assert expected in texts(view)
    assert [row["vehicle_id"] for row in view["rows"]] == ["veh-1"] and view["rows"][0]["soc"] == 50.0


def test_the_refresh_loop_keeps_going_after_a_failed_refresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = make_fleet(tmp_path)
    calls: list[int] = []

    async def run_briefly() -> None:
        twice = asyncio.Event()
        loop = asyncio.get_running_loop()

        def failing() -> None:
            calls.append(1)
            if len(calls) == 2:
                loop.call_soon_threadsafe(twice.set)
            raise OSError("disk on fire")

        monkeypatch.setattr(fleet, "refresh", failing)
        fleet.refresh_s = 0.01
        fleet.ask()
        task = asyncio.create_task(fleet.run())
        await twice.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_briefly())
    view = orjson.loads(fleet.live_body())
    assert view["notices"][0]["level"] == "error" and "OSError: disk on fire" in view["notices"][0]["text"]


# ----- demand: the live loop reads only while the live view is asked for -----


def counting(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the fleet's refreshes (each still runs)."""
    calls: list[int] = []
    real = fleet.refresh

    def spy() -> None:
        calls.append(1)
        real()

    monkeypatch.setattr(fleet, "refresh", spy)
    return calls


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_nobody_asking_means_no_refresh_and_a_past_hour_still_lists_the_hours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_batch(tmp_path / "raw", NOW.replace(minute=0), 1, [record("veh-1", NOW - timedelta(seconds=30))])
    write(tmp_path / "aggregated" / aggregated_file_name(PAST), aggregate([entry("veh-1", 2.5, 0.25)]))
    fleet = make_fleet(tmp_path)
    calls = counting(fleet, monkeypatch)

    async def go() -> None:
        task = asyncio.create_task(fleet.run())
        await fleet.idle.wait()  # the loop parks before any refresh
        past = orjson.loads(await fleet.hour_view(PAST))  # a past hour neither wakes it nor needs it
        assert past["hours"] == ["2026-01-15T08"]
        assert fleet.idle.is_set() and calls == []
        await stop(task)

    asyncio.run(go())
    assert calls == [] and fleet.tailer.counts.files_read == 0


def test_a_live_request_after_an_idle_spell_waits_for_a_complete_view_then_the_loop_idles_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hour = NOW.replace(minute=0)
    write_batch(tmp_path / "raw", hour, 1, [record("veh-1", NOW - timedelta(seconds=30), soc=55.5)])
    write(tmp_path / "aggregated" / aggregated_file_name(PAST), aggregate([entry("veh-1", 2.5, 0.25)]))
    write(tmp_path / "aggregated" / fleet_health_file_name(date(2026, 1, 15)), health(date(2026, 1, 15)))
    fleet = make_fleet(tmp_path, idle_s=0.05)
    fleet.refresh_s = 0.01
    calls = counting(fleet, monkeypatch)

    async def go() -> None:
        task = asyncio.create_task(fleet.run())
        await fleet.idle.wait()
        first = orjson.loads(await fleet.live_view())  # no "collecting…": this answer waited for its refresh
        assert [(r["vehicle_id"], r["soc"]) for r in first["rows"]] == [("veh-1", 55.5), ("veh-2", None)]
        assert first["notices"] == [] and first["energy_hour"] == "2026-01-15T08" and first["alerts"]
        await fleet.idle.wait()  # nobody asked for idle_s: parked again
        parked = len(calls)
        assert parked >= 1
        write_batch(tmp_path / "raw", hour, 2, [record("veh-1", NOW - timedelta(seconds=10), soc=55.0),
                                                record("veh-2", NOW - timedelta(seconds=10), soc=70.0)])  # fmt: skip
        assert len(calls) == parked and fleet.tailer.counts.files_read == 1  # idle: the new file is not read
        again = orjson.loads(await fleet.live_view())  # after idle, not the view from before it
        assert [(r["vehicle_id"], r["soc"], r["alerts"]) for r in again["rows"]] == [("veh-1", 55.0, 0),
                                                                                    ("veh-2", 70.0, 2)]  # fmt: skip
        assert len(calls) == parked + 1
        await stop(task)

    asyncio.run(go())


def test_a_live_request_answers_what_there_is_when_no_refresh_comes_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_module, "FIRST_VIEW_WAIT_S", 0.01)
    fleet = make_fleet(tmp_path)
    view = orjson.loads(asyncio.run(fleet.live_view()))  # no loop runs: the wait is bounded
    assert view["notices"] == [{"level": "info", "text": "collecting…"}]


# ----- a past hour -----


def hour_view(fleet: Fleet, hour: datetime = PAST) -> dict[str, Any]:
    return dict(orjson.loads(asyncio.run(fleet.hour_view(hour))))


def test_a_past_hour_shows_each_vehicles_last_curated_reading_and_that_hours_reports(tmp_path: Path) -> None:
    write_curated(tmp_path / "curated", PAST, [
        ("veh-1", "2026-01-15T08:59:58Z", 61.0, -3.0), ("veh-1", "2026-01-15T08:59:59.4Z", 60.9, -2.0),
        ("veh-1", "2026-01-15T08:10:00Z", 70.0, 0.0), ("veh-2", "2026-01-15T08:30:00Z", 44.4, 12.5),
    ])  # fmt: skip
    write(tmp_path / "aggregated" / aggregated_file_name(PAST), aggregate([entry("veh-1", 2.5, 0.25, 2)]))
    write(tmp_path / "aggregated" / fleet_health_file_name(date(2026, 1, 15)), health(date(2026, 1, 15)))
    view = hour_view(make_fleet(tmp_path))
    assert view["mode"] == "hour" and view["hour"] == "2026-01-15T08" and view["notices"] == []
    one, two = view["rows"]
    assert one | {"time_s": None} == {
        "vehicle_id": "veh-1", "at": "2026-01-15T08:59:59.400000Z", "soc": 60.9, "voltage_v": 355.5,
        "current_a": -2.0, "spread_mv": 37.0, "temp_max_c": 31.4, "state": "charging", "charged_kwh": 2.5,
        "discharged_kwh": 0.25, "sessions": 2, "time_s": None, "soh_pct": 85.37, "capacity_ah": 80.25,
        "soh_reason": None, "alerts": 0, "severity": None,
    }  # fmt: skip
    assert two["soc"] == 44.4 and two["charged_kwh"] is None and two["state"] is None and two["alerts"] == 2


def test_a_past_hour_view_is_reused_while_its_files_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_curated(tmp_path / "curated", PAST, [("veh-1", "2026-01-15T08:59:58Z", 61.0, -3.0)])
    fleet = make_fleet(tmp_path)
    first = asyncio.run(fleet.hour_view(PAST))
    assert asyncio.run(fleet.hour_view(PAST)) is first
    monkeypatch.setattr(fleet_module, "HOUR_VIEWS_KEPT", 2)
    for hours_back in range(1, 4):
        asyncio.run(fleet.hour_view(PAST - timedelta(hours=hours_back)))
    assert len(fleet._hour_views) == 2
    write(tmp_path / "aggregated" / aggregated_file_name(PAST), aggregate([entry("veh-1", 1.0, 1.0)]))
    assert orjson.loads(asyncio.run(fleet.hour_view(PAST)))["rows"][0]["charged_kwh"] == 1.0


def test_a_past_hour_without_data_or_with_damaged_data_says_so(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    empty = hour_view(fleet)
    assert empty["rows"] == []
    assert "no curated data for 2026-01-15T08" in texts(empty)
    assert "no aggregate for 2026-01-15T08" in texts(empty)
    assert "no fleet-health document for 2026-01-15" in texts(empty)
    assert "2026-01-15T09 has not ended" in texts(hour_view(fleet, NOW.replace(minute=0)))

    directory = tmp_path / "curated" / hour_partition(PAST)
    directory.mkdir(parents=True)
    (directory / "readings.parquet").write_bytes(b"not parquet at all")
    write(tmp_path / "aggregated" / aggregated_file_name(PAST), b"{")
    damaged = hour_view(fleet)
    assert "the curated data of 2026-01-15T08 cannot be read" in texts(damaged)
    assert "the aggregate cannot be read: aggregated-2026-01-15T08.json is not JSON" in texts(damaged)


# ----- the routes -----


@asynccontextmanager
async def client(data: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    app.state.fleet = make_fleet(data)
    loop = asyncio.create_task(app.state.fleet.run())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as http:
        yield http
    await stop(loop)


def test_routes_serve_the_page_and_its_json_and_refuse_a_malformed_hour_with_a_clear_400(tmp_path: Path) -> None:
    write_curated(tmp_path / "curated", PAST, [("veh-1", "2026-01-15T08:59:58Z", 61.0, -3.0)])

    async def go() -> None:
        async with client(tmp_path) as http:
            page = await http.get("/fleet")
            assert page.status_code == 200 and '<script src="/static/fleet.js"' in page.text
            assert "<script>" not in page.text  # the CSP allows no inline script
            assert (await http.get("/fleet?hour=2026-01-15T08")).status_code == 200
            bad = await http.get("/fleet", params={"hour": "<b>2026</b>"})
            assert bad.status_code == 400 and "hour must be YYYY-MM-DDTHH" in bad.text and "<b>2026" not in bad.text
            first = (await http.get("/api/fleet")).json()  # the page woke the loop; this waited for its refresh
            assert first["mode"] == "live" and "no readings yet in the hour 2026-01-15T09" in texts(first)
            past = (await http.get("/api/fleet?hour=2026-01-15T08")).json()
            assert past["rows"][0]["soc"] == 61.0
            answer = await http.get("/api/fleet?hour=2026-13-01T00")
            assert answer.status_code == 400
            assert answer.json() == {"error": "2026-13-01T00 is not a real hour: hour must be YYYY-MM-DDTHH (UTC), "
                                     "for example 2026-01-15T08"}  # fmt: skip

    asyncio.run(go())


def test_the_token_gate_covers_the_fleet_routes(tmp_path: Path) -> None:
    from src.common.settings import DashboardSettings
    from src.dashboard.app import create_app

    settings = DashboardSettings(data_dir=tmp_path, dashboard_token="fleet-token", dashboard_refresh_s=0.2,
                                 receiver_url="http://127.0.0.1:9", consumer_metrics_urls="http://127.0.0.1:9/m",
                                 aws_endpoint_url="http://127.0.0.1:9")  # fmt: skip
    app = create_app(settings)

    async def go() -> None:
        async with app.app.router.lifespan_context(app.app):  # type: ignore[attr-defined]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as http:
                for path in ("/fleet", "/api/fleet", "/api/fleet?hour=2026-01-15T08", "/static/fleet.js"):
                    assert (await http.get(path)).status_code == 401, path
                bearer = {"Authorization": "Bearer fleet-token"}
                assert (await http.get("/api/fleet", headers=bearer)).status_code == 200
                assert (await http.get("/api/fleet?hour=bad", headers=bearer)).status_code == 400
                body = (await http.get("/fleet", headers=bearer)).text
                assert "fleet-token" not in body

    asyncio.run(go())


def test_the_last_reading_of_an_hour_is_the_newest_and_of_two_at_one_instant_the_first_by_can_id(
    tmp_path: Path,
) -> None:
    path = tmp_path / "readings.parquet"
    rows = [  # vehicle, CAN id, timestamp, SOC
        ("veh-1", "0x2A0", "2026-01-15T08:59:59.5Z", 2.0),
        ("veh-1", "0x1F0", "2026-01-15T08:59:59.5Z", 1.0),
        ("veh-1", "0x100", "2026-01-15T08:10:00Z", 9.0),
        ("veh-2", "0x1F0", "2026-01-15T08:00:00.000001Z", 5.0),
    ]
    with duckdb.connect() as connection:
        signals = ", ".join(f"{s} DOUBLE" for s in SIGNALS)
        connection.execute(f"CREATE TABLE r (vehicle_id VARCHAR, can_id VARCHAR, timestamp TIMESTAMPTZ, {signals})")
        for vehicle_id, can_id, stamp, soc in rows:
            connection.execute("INSERT INTO r VALUES (?, ?, ?::TIMESTAMPTZ, ?, 1, 2, 3, 4, 5, 6)",
                               [vehicle_id, can_id, stamp, soc])  # fmt: skip
        connection.execute("COPY r TO ? (FORMAT parquet)", [str(path)])
    last = queries.last_readings([path])
    assert last["veh-1"] == {"at": datetime(2026, 1, 15, 8, 59, 59, 500000, tzinfo=UTC)} | dict(
        zip(SIGNALS, (1.0, 1, 2, 3, 4, 5, 6), strict=True)
    )
    assert last["veh-2"]["at"] == datetime(2026, 1, 15, 8, 0, 0, 1, tzinfo=UTC) and last["veh-2"]["battery_soc"] == 5.0
    assert queries.last_readings([]) == {}
