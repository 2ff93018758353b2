"""The dashboard's fleet page in a real browser, against a real pipeline and a known past hour.

One stack for the module (moto's server, receiver, consumer) with the simulator streaming a dozen vehicles
into it, and beside the live hour a known past hour laid out offline the way the jobs leave it: the
previous hour's first 15 minutes simulated for 12 vehicles with aged packs and one biased pack-voltage sensor
(src/aggregator/scorecard.py's simulate, lay_out and run_jobs), so its curated Parquet, hourly aggregate and
fleet-health document (with that vehicle's alert) exist. The tests protect what a person reading the page
relies on: live rows that move, the past hour's numbers equal to the aggregate and the curated data, the
alert shown, sorting and filtering, the token over the new routes, a clear 400 for a malformed hour.

Environment switches (off by default, nothing asserted on them):
``DASHBOARD_SCREENSHOT_FLEET=path`` saves the live page (docs/dashboard-fleet.png was made so);
``DASHBOARD_TIMINGS=path`` writes the browser's paint and render timings of both views as JSON, and with
``DASHBOARD_TIMINGS_VEHICLES=1000`` also builds a fleet that size (3 simulated minutes ending now) and times
the page on it (docs/dashboard.md, "Fleet page").
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from src.aggregator import scorecard
from src.common.layout import aggregated_file_name, fleet_health_file_name, hour_label, hour_partition, hour_start
from src.embedded.stack import EmbeddedStack, StackConfig
from tests.integration.browser import body_of, console_errors, dashboard, status_of, text, wait_for, wait_until
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration

VEHICLES = 12
PAST_S = 900
"""Simulated seconds of the past hour."""
DIGITS = {"soc": 1, "voltage_v": 1, "current_a": 1, "spread_mv": 0, "temp_max_c": 1, "charged_kwh": 2,
          "discharged_kwh": 2, "soh_pct": 1, "capacity_ah": 1}  # fmt: skip
"""How many decimals the page shows of each figure (fleet.js's COLUMNS)."""
READ_TABLE = """
const out = [];
for (const tr of document.querySelectorAll('#fleet-rows tr')) {
  const cells = {};
  for (const td of tr.children) cells[td.dataset.key] = td.textContent;
  out.push([tr.dataset.vehicle, Object.assign(cells, {hidden: tr.hidden})]);
}
return out;
"""
"""The rows in the table's order, as [vehicle, {column: text, hidden}] (a list: the driver sorts an object's keys)."""
READ_TIMINGS = """
const pick = (e) => ({name: e.name, start_ms: e.startTime, duration_ms: e.duration});
const api = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/fleet'));
return {
  paint: performance.getEntriesByType('paint').map(pick),
  marks: performance.getEntriesByType('mark').filter((e) => e.name === 'fleet-table-filled').map(pick),
  measures: performance.getEntriesByType('measure').map(pick),
  first_api_call: api.length ? {start_ms: api[0].startTime, duration_ms: api[0].duration,
                                bytes: api[0].encodedBodySize} : null,
  rows: document.querySelectorAll('#fleet-rows tr').length,
};
"""


def lay_out_fleet(directory: Path, vehicles: int, start: datetime, duration_s: int) -> list[datetime]:
    """Simulate ``vehicles`` from ``start`` at 1 s (aged packs, one biased pack-voltage sensor from the start),
    store the readings as the consumer would and run the hourly and daily jobs; the hours it covers."""
    directory.mkdir(parents=True, exist_ok=True)
    jsonl, _ = scorecard.simulate(
        directory, vehicles, 1, 1, 1000, 7, duration_s=duration_s, faults_at_start=1,
        fault_kinds="sensor_bias", start=start,
    )  # fmt: skip
    hours = scorecard.lay_out(jsonl, directory / "raw")
    jsonl.unlink()
    scorecard.run_jobs(directory, hours)
    return hours


@pytest.fixture(scope="module")
def past(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The previous UTC hour's first minutes, laid out for 12 vehicles: its curated rows, aggregate and fleet health.

    15 minutes, not the whole hour: the simulator is the slow part of this file, and 15 minutes already hold
    every figure the page shows (a drive, a charge, the biased sensor's alert)."""
    directory = tmp_path_factory.mktemp("past-hour")
    hour = hour_start(datetime.now(UTC)) - timedelta(hours=1)
    lay_out_fleet(directory, VEHICLES, hour, PAST_S)
    readings = sorted(directory.glob(f"curated/{hour_partition(hour).as_posix()}/*.parquet"))
    with duckdb.connect() as connection:
        rows = connection.execute(
            "SELECT * FROM read_parquet(?, hive_partitioning = false)", [[str(p) for p in readings]]
        )
        names = [column[0] for column in rows.description]
        last: dict[str, dict[str, Any]] = {}
        for row in rows.fetchall():
            reading = dict(zip(names, row, strict=True))
            if reading["vehicle_id"] not in last or reading["timestamp"] > last[reading["vehicle_id"]]["timestamp"]:
                last[reading["vehicle_id"]] = reading
    aggregate = orjson.loads((directory / "aggregated" / aggregated_file_name(hour)).read_bytes())
    health = orjson.loads((directory / "aggregated" / fleet_health_file_name(hour.date())).read_bytes())
    return {"dir": directory, "hour": hour, "last": last, "aggregate": aggregate, "health": health}


@pytest.fixture(scope="module")
def fleet_stack(tmp_path_factory: pytest.TempPathFactory, past: dict[str, Any]) -> Iterator[EmbeddedStack]:
    """A pipeline for the module, its DATA_DIR holding the past hour's curated data and reports."""
    root = tmp_path_factory.mktemp("fleet-stack")
    config = StackConfig(data_dir=root / "data", log_dir=root / "logs", api_key=secrets.token_hex(16),
                         env={"LOG_LEVEL": "INFO"})  # fmt: skip
    for part in ("curated", "aggregated"):
        shutil.copytree(past["dir"] / part, config.data_dir / part)
    with EmbeddedStack(config) as running:
        yield running


def table(driver: WebDriver) -> dict[str, dict[str, Any]]:
    return {vehicle: cells for vehicle, cells in driver.execute_script(READ_TABLE)}


def shown(driver: WebDriver) -> list[str]:
    return [vehicle for vehicle, cells in table(driver).items() if not cells["hidden"]]


def column(driver: WebDriver, key: str) -> list[str]:
    """One column's texts in the table's order, visible rows only."""
    return [cells[key] for cells in table(driver).values() if not cells["hidden"]]


def close(shown_text: str, value: float | None, digits: int) -> bool:
    """The page's text is ``value`` at the page's precision ("—" for none)."""
    if value is None:
        return shown_text == "—"
    return shown_text != "—" and abs(float(shown_text) - value) <= 0.5 * 10**-digits + 1e-9


def click_header(driver: WebDriver, key: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#fleet th[data-key="{key}"] button').click()


def timings(driver: WebDriver) -> dict[str, Any]:
    wait_for(driver, lambda: bool(driver.execute_script(READ_TIMINGS)["marks"]), "the table-filled mark")
    return dict(driver.execute_script(READ_TIMINGS))


def streaming(stack: EmbeddedStack) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "src.generator.simulator", "--vehicles", str(VEHICLES), "--duration", "90",
               "--url", stack.receiver_url, "--seed", "5"]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO_ROOT, env=stack.env(), stdout=subprocess.DEVNULL)


def test_fleet_page_shows_live_rows_the_past_hours_numbers_and_alerts_and_sorts_and_filters(
    fleet_stack: EmbeddedStack, past: dict[str, Any], browser: WebDriver, tmp_path: Path
) -> None:
    """Live rows appear and move while readings flow, with the last aggregated hour's energy; the alert shows;
    sorting and filtering work; the past hour's rows equal its curated last readings, aggregate and fleet
    health; and the browser logs no error."""
    label = hour_label(past["hour"])
    analytics = {v["vehicle_id"]: v for v in past["aggregate"]["analytics"]["vehicles"]}
    health = {v["vehicle_id"]: v for v in past["health"]["vehicles"]}
    alerted = sorted({a["vehicle_id"] for a in past["health"]["alerts"]})
    assert alerted, "the laid-out hour should have the biased sensor's alert"
    measured: dict[str, Any] = {}
    with dashboard(fleet_stack, tmp_path) as base:
        simulator = streaming(fleet_stack)
        try:
            browser.get(f"{base}/fleet")
            assert browser.title.startswith("Fleet")
            wait_for(browser, lambda: table(browser).get("veh-00001", {}).get("at", "—") != "—", "a live row")
            first = table(browser)["veh-00001"]["at"]
            wait_for(browser, lambda: table(browser)["veh-00001"]["at"] != first, "the live row to move on")
            wait_for(browser, lambda: len(table(browser)) == VEHICLES, "a row per vehicle")
            measured["live"] = timings(browser)
            live = table(browser)
            for vehicle, cells in live.items():  # the energy is the last aggregated hour's
                assert close(cells["charged_kwh"], analytics[vehicle]["energy"]["charged_kwh"], 2), vehicle
                assert cells["state"] in ("driving", "charging", "parked"), cells
            assert f"the aggregate of {label} UTC" in text(browser, "sources-note")
            alerts = text(browser, "alerts-rows")
            assert all(vehicle in alerts for vehicle in alerted) and "sensor_inconsistency" in alerts, alerts
            assert live[alerted[0]]["alerts"] != "0"
            if os.environ.get("DASHBOARD_SCREENSHOT_FLEET"):
                browser.set_window_size(1600, 820)
                wait_for(browser, lambda: len(table(browser)) == VEHICLES, "the page after resizing")
                browser.save_screenshot(os.environ["DASHBOARD_SCREENSHOT_FLEET"])

            # Sorting: by SOC up, then down; none ("—") last either way.
            click_header(browser, "soc")
            socs = [float(s) for s in column(browser, "soc") if s != "—"]
            assert socs == sorted(socs)
            click_header(browser, "soc")
            socs = [float(s) for s in column(browser, "soc") if s != "—"]
            assert socs == sorted(socs, reverse=True)
            click_header(browser, "vehicle_id")
            assert column(browser, "vehicle_id") == sorted(live)

            # Filtering: by id text, by open alerts, by what it is doing.
            browser.find_element(By.ID, "filter-text").send_keys("00003")
            assert shown(browser) == ["veh-00003"]
            assert "1 of 12 vehicles shown" in text(browser, "shown-count")
            browser.find_element(By.ID, "filter-text").clear()
            browser.execute_script("document.getElementById('filter-text').dispatchEvent(new Event('input'))")
            browser.find_element(By.ID, "filter-alerts").click()
            assert shown(browser) == alerted
            browser.find_element(By.ID, "filter-alerts").click()
            states = {cells["state"] for cells in table(browser).values()}
            state = sorted(states)[0]
            browser.find_element(By.CSS_SELECTOR, f'#filter-state option[value="{state}"]').click()
            assert {table(browser)[v]["state"] for v in shown(browser)} == {state}
        finally:
            simulator.terminate()
            simulator.wait(timeout=30)

        browser.get(f"{base}/fleet?hour={label}")
        wait_for(browser, lambda: f"hour {label} UTC" in text(browser, "status") and len(table(browser)) == VEHICLES,
                 f"the rows of {label}")  # fmt: skip
        measured["hour"] = timings(browser)
        rows = table(browser)
        for vehicle, cells in rows.items():
            last, block, entry = past["last"][vehicle], analytics[vehicle], health.get(vehicle, {})
            spread = (last["cell_voltage_max"] - last["cell_voltage_min"]) * 1000.0
            expected = {
                "soc": last["battery_soc"], "voltage_v": last["battery_voltage"], "current_a": last["battery_current"],
                "spread_mv": spread, "temp_max_c": last["cell_temp_max"],
                "charged_kwh": block["energy"]["charged_kwh"], "discharged_kwh": block["energy"]["discharged_kwh"],
                "soh_pct": entry.get("soh_pct"), "capacity_ah": entry.get("capacity_ah"),
            }  # fmt: skip
            for key, value in expected.items():
                assert close(cells[key], value, DIGITS[key]), (vehicle, key, cells[key], value)
            assert cells["at"] == last["timestamp"].astimezone(UTC).strftime("%H:%M:%S")
            assert cells["sessions"] == str(len(block["charging_sessions"]))
            time_s = block["time_s"]
            assert cells["state"] == max(("driving", "charging", "parked"), key=lambda s: time_s[s]), (vehicle, time_s)
            assert cells["alerts"] == str(sum(a["vehicle_id"] == vehicle for a in past["health"]["alerts"]))
        assert f"fleet health of {past['hour'].date().isoformat()}" in text(browser, "alerts-day")
        assert console_errors(browser) == []
    if os.environ.get("DASHBOARD_TIMINGS"):
        Path(os.environ["DASHBOARD_TIMINGS"]).write_bytes(orjson.dumps({str(VEHICLES): measured},
                                                                       option=orjson.OPT_INDENT_2))  # fmt: skip


def test_fleet_routes_need_the_token_and_a_malformed_hour_is_a_clear_400(
    fleet_stack: EmbeddedStack, browser: WebDriver, tmp_path: Path
) -> None:
    """With DASHBOARD_TOKEN: 401 without it on the page, its API (live and past hour) and its script; with it, a
    malformed or impossible hour is a 400 that says what an hour looks like, on the page and the API."""
    token = secrets.token_urlsafe(24)
    with dashboard(fleet_stack, tmp_path, DASHBOARD_TOKEN=token) as base:
        for path in ("/fleet", "/api/fleet", "/api/fleet?hour=2026-01-01T00", "/static/fleet.js", "/fleet?hour=x"):
            assert status_of(base + path) == 401, path
        bearer = {"Authorization": f"Bearer {token}"}
        assert status_of(f"{base}/api/fleet", bearer) == 200
        assert token not in body_of(f"{base}/api/fleet", bearer)
        for hour in ("2026-1-1T00", "2026-02-30T10", "9" * 4000, "2026-01-01T00%27%20OR%201=1"):
            assert status_of(f"{base}/api/fleet?hour={hour}", bearer) == 400, hour
            assert status_of(f"{base}/fleet?hour={hour}", bearer) == 400, hour

        browser.get(f"{base}/fleet?token={token}")
        assert "token" not in browser.current_url
        wait_for(browser, lambda: "vehicles" in text(browser, "status"), "the live page")
        browser.get(f"{base}/fleet?hour=2026-02-30T10")
        assert "400 Bad Request: 2026-02-30T10 is not a real hour" in browser.find_element(By.TAG_NAME, "body").text
        assert token not in browser.page_source


@pytest.mark.skipif(not os.environ.get("DASHBOARD_TIMINGS_VEHICLES"), reason="set DASHBOARD_TIMINGS_VEHICLES=1000")
def test_fleet_page_timings_with_a_large_fleet(
    fleet_stack: EmbeddedStack, browser: WebDriver, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Not a pass/fail check: first contentful paint and the table filled, live and for an hour, on a big fleet."""
    vehicles = int(os.environ["DASHBOARD_TIMINGS_VEHICLES"])
    data = tmp_path_factory.mktemp("large-fleet")
    now = datetime.now(UTC).replace(microsecond=0)
    hours = lay_out_fleet(data, vehicles, now - timedelta(seconds=180), 180)
    measured: dict[str, Any] = {}
    with dashboard(fleet_stack, tmp_path, DATA_DIR=str(data)) as base:
        # The dashboard has read the batch files (as it has long before anyone opens the page) before timing.
        wait_until(lambda: len(orjson.loads(body_of(f"{base}/api/fleet", {}))["rows"]) == vehicles, "the live rows")
        for name, path in (("live", "/fleet"), ("hour", f"/fleet?hour={hour_label(hours[-1])}")):
            browser.get(base + path)
            wait_for(browser, lambda: len(table(browser)) == vehicles, f"{vehicles} rows")
            measured[name] = timings(browser)
            click_header(browser, "soc")
            browser.find_element(By.ID, "filter-text").send_keys("0001")
            measured[name] |= {"after": timings(browser)["measures"]}
        assert console_errors(browser) == []
    target = os.environ.get("DASHBOARD_TIMINGS")
    if target:
        previous = orjson.loads(Path(target).read_bytes()) if Path(target).exists() else {}
        Path(target).write_bytes(orjson.dumps(previous | {str(vehicles): measured}, option=orjson.OPT_INDENT_2))
