"""The daily fleet-health job, scored against the simulator's ground truth.

Small fleets are simulated offline with ``--aging --faults N --faults-at-start N --truth-json`` (the
simulator's command line), laid out as the consumer stores them (``raw/<hive hour>/batch-*.jsonl``),
run through the hourly job hour by hour and then through ``python -m src.aggregator.fleet_health``; the
document is compared with the truth: each injected fault alerted on its vehicle with its kind, no alert
on a healthy (aged) vehicle, capacity and resistance within tolerances measured on these runs.

Fleets (picked so every detectable kind shows within a few simulated hours; docs/battery-analytics.md):
- 8 vehicles, 1 s, seed 3, 5 h: weak_cell, self_discharge, cooling (cold ambient: latent, not expected)
  and sensor_bias from the start; the self-discharging cell shows after ~4 h.
- 4 vehicles, 1 s, seed 6, 3 h: one cooling fault on a warm pack (the fault shows while the coolant runs).
- 4 vehicles, 200 ms, seed 3, 1 h: weak_cell and sensor_bias from the start.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from src.aggregator import analytics, fleet_health, scorecard
from src.aggregator.hourly_stats import curate_and_aggregate
from src.aggregator.sources import S3Bucket
from src.common.aws import sync_client
from src.common.settings import AggregatorSettings, CommonSettings

DAY = date(2026, 1, 15)
START = datetime(2026, 1, 15, tzinfo=UTC)
TH = analytics.Thresholds.from_settings(AggregatorSettings.model_construct())

# Tolerances: measured on these fleets (capacity within 0.1 %, resistance within 2.5 % of the truth).
CAPACITY_TOLERANCE = 0.01
RESISTANCE_TOLERANCE = 0.05
# A fault's consequences that are not false alarms: a sinking cell also unbalances the pack.
ALSO_ALLOWED = {"self_discharge": {"cell_imbalance"}}
KIND_OF_FAULT = {
    "weak_cell": "weak_cell",
    "self_discharge": "self_discharge",
    "cooling": "cooling_fault",
    "sensor_bias": "sensor_inconsistency",
}


@dataclass
class Day:
    directory: Path
    truth: dict[str, dict[str, Any]]
    document: dict[str, Any]

    @property
    def alerts(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for alert in self.document["alerts"]:
            found.setdefault(alert["vehicle_id"], set()).add(alert["kind"])
        return found

    def vehicle(self, vehicle_id: str) -> dict[str, Any]:
        return next(v for v in self.document["vehicles"] if v["vehicle_id"] == vehicle_id)


def simulate_day(directory: Path, vehicles: int, duration_s: int, rate_ms: int, seed: int, kinds: str) -> Day:
    """Simulate (every fault from the start), lay out, run the hourly job for every hour and the daily job."""
    faults = len(kinds.split(","))
    jsonl, truth_path = scorecard.simulate(
        directory, vehicles, 1, faults, rate_ms, seed,
        duration_s=duration_s, faults_at_start=faults, fault_kinds=kinds, start=START,
    )  # fmt: skip
    for hour in scorecard.lay_out(jsonl, directory / "raw"):
        curate_and_aggregate(directory / "raw", directory / "curated", directory / "aggregated", hour, 256, TH)
    jsonl.unlink()
    truth = orjson.loads(truth_path.read_bytes())["vehicles"]
    return Day(directory, truth, run_daily(directory))


def run_daily(directory: Path) -> dict[str, Any]:
    settings = AggregatorSettings(data_dir=directory, s3_bucket=None)
    assert fleet_health.run_day(settings, None, DAY, "local") == 0
    return orjson.loads((directory / "aggregated" / fleet_health.file_name(DAY)).read_bytes())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day]:
    yield simulate_day(
        tmp_path_factory.mktemp("fleet"), 8, 5 * 3600, 1000, 3, "weak_cell,self_discharge,cooling,sensor_bias"
    )


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day]:
    yield simulate_day(tmp_path_factory.mktemp("warm"), 4, 3 * 3600, 1000, 6, "cooling")


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day]:
    yield simulate_day(tmp_path_factory.mktemp("fast"), 4, 3600, 200, 3, "weak_cell,sensor_bias")


LATENT = {("fleet", "veh-00001")}  # seed 3's cooling fault sits on a pack at a cold ambient: it never needs cooling


def latent(fault: dict[str, Any]) -> bool:
    """The truth's word that a fault never showed (a cooling fault whose module was never pumped)."""
    return "expressed" in fault and fault["expressed"] is None


def check_alerts(day: Day, name: str) -> int:
    """Every visible fault alerted with its kind on its vehicle, from its start on; nothing on healthy packs."""
    alerted = 0
    for vehicle_id, truth in day.truth.items():
        got = day.alerts.get(vehicle_id, set())
        if not truth["faults"]:
            assert got == set(), f"{vehicle_id} is healthy (aged) but alerted: {got}"
            continue
        (fault,) = truth["faults"]
        assert latent(fault) == ((name, vehicle_id) in LATENT), f"{vehicle_id}: the truth's expressed {fault}"
        if latent(fault):
            assert got == set(), f"{vehicle_id}: a latent {fault['kind']} alerted as {got}"
            continue
        kind = KIND_OF_FAULT[fault["kind"]]
        assert kind in got, f"{vehicle_id}: {fault['kind']} not alerted ({got})"
        assert got <= {kind} | ALSO_ALLOWED.get(kind, set()), f"{vehicle_id}: {got}"
        for alert in day.document["alerts"]:
            if alert["vehicle_id"] == vehicle_id:
                assert alert["first_seen"] >= fault["start"][:19]  # stamps of the same instant, either form
                assert alert["severity"] in ("warning", "critical") and alert["evidence"]
        alerted += 1
    return alerted


def test_each_fault_kind_is_alerted_on_its_vehicle_and_healthy_packs_are_not(fleet: Day, warm: Day, fast: Day) -> None:
    assert check_alerts(fleet, "fleet") == 3  # weak_cell, self_discharge, sensor_bias
    assert check_alerts(warm, "warm") == 1  # cooling
    assert check_alerts(fast, "fast") == 2  # weak_cell, sensor_bias at 200 ms
    for day in (fleet, warm, fast):
        assert {a["kind"] for a in day.document["alerts"]} <= set(fleet_health.KINDS)


def test_capacity_soh_and_resistance_match_the_truth(fleet: Day, fast: Day) -> None:
    for day in (fleet, fast):
        for vehicle_id, truth in day.truth.items():
            entry = day.vehicle(vehicle_id)
            if entry["capacity_ah"] is not None:
                assert entry["capacity_ah"] == pytest.approx(truth["capacity_ah"], rel=CAPACITY_TOLERANCE)
                assert entry["capacity"]["basis"]["swing_pct"] >= TH.capacity_min_swing_pct
                assert entry["nominal_capacity"]["source"] == "inferred"
                assert entry["nominal_capacity"]["ah"] == truth["nominal_capacity_ah"]
                assert entry["soh_pct"] == pytest.approx(truth["soh_pct"], abs=1.0)
            else:
                assert entry["soh_pct"] is None and entry["capacity"]["reason"]
            expected = truth["resistance_mohm_25c"]
            for fault in truth["faults"]:
                expected = fault.get("resistance_mohm_25c_with_fault", expected)
            assert entry["resistance_mohm_25c"] == pytest.approx(expected, rel=RESISTANCE_TOLERANCE), vehicle_id
            assert entry["trend"]["resistance"]["reason"] == "no earlier fleet-health day with this figure"
    assert sum(v["capacity_ah"] is not None for v in fleet.document["vehicles"]) == 8


def test_the_document_has_the_contracts_form(fleet: Day) -> None:
    document = fleet.document
    assert document["day"] == "2026-01-15"
    assert list(document)[:1] == ["day"] and {"vehicles", "alerts"} <= set(document)
    for entry in document["vehicles"]:
        assert list(entry)[:4] == ["vehicle_id", "capacity_ah", "soh_pct", "resistance_mohm_25c"]
    for alert in document["alerts"]:
        assert list(alert) == ["vehicle_id", "kind", "first_seen", "severity", "evidence"]


def test_soh_is_against_the_registrys_nominal(fleet: Day, tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    registry.write_bytes(orjson.dumps({vid: {"nominal_capacity_ah": 120} for vid in fleet.truth}))
    settings = AggregatorSettings(data_dir=fleet.directory, fleet_registry=registry)
    aggregates = fleet_health.read_local(settings.aggregated_dir, DAY)
    document = fleet_health.build(DAY, aggregates, settings, fleet_health.read_registry(registry), [])
    for entry in document["vehicles"]:
        assert entry["nominal_capacity"] == {
            "ah": 120.0,
            "source": "registry",
            "basis": "FLEET_REGISTRY",
            "alternatives": [],
        }
        assert entry["soh_pct"] == pytest.approx(100 * entry["capacity_ah"] / 120, abs=0.01)
    registry.write_text('{"veh-00001": {"nominal_capacity_ah": -1}}')
    assert fleet_health.run_day(settings, None, DAY, "local") == 2


def test_resistance_growth_is_against_the_earliest_earlier_day(fleet: Day, tmp_path: Path) -> None:
    aggregated = tmp_path / "aggregated"
    aggregated.mkdir()
    for path in (fleet.directory / "aggregated").glob("aggregated-*.json"):
        (aggregated / path.name).write_bytes(path.read_bytes())
    entries = [
        {
            "vehicle_id": v["vehicle_id"],
            "capacity_ah": v["capacity_ah"],
            "resistance_mohm_25c": v["resistance_mohm_25c"] / 1.1,
        }
        for v in fleet.document["vehicles"]
    ]
    earlier = {"day": "2026-01-10", "vehicles": entries, "alerts": []}
    (aggregated / "fleet-health-2026-01-10.json").write_bytes(orjson.dumps(earlier))
    later = earlier | {"vehicles": [{"vehicle_id": "veh-00001", "resistance_mohm_25c": 1.0, "capacity_ah": None}]}
    (aggregated / "fleet-health-2026-01-12.json").write_bytes(orjson.dumps(later))
    (aggregated / "fleet-health-notaday.json").write_text("{}")
    document = run_daily(tmp_path)
    for entry in document["vehicles"]:
        assert entry["resistance_growth_pct"] == pytest.approx(10.0, abs=0.01)
        assert entry["trend"]["resistance"]["since"] == "2026-01-10"
        assert entry["trend"]["capacity"]["growth_pct"] == pytest.approx(0.0, abs=1e-9)


def test_self_discharge_is_the_days_rest_weighted_growth_not_one_hour(fleet: Day) -> None:
    """A healthy pack's single rest hour may drift up a few mV/h and back: that is no alert; a day whose rest,
    weighted by its length, keeps growing is (the per-hour rule flagged most of a healthy 50-vehicle fleet)."""
    healthy = next(vid for vid, facts in fleet.truth.items() if not facts["faults"])
    path = sorted((fleet.directory / "aggregated").glob("aggregated-*.json"))[0]
    block = next(b for b in orjson.loads(path.read_bytes())["analytics"]["vehicles"] if b["vehicle_id"] == healthy)

    def hours(*growth: tuple[float, float]) -> list[fleet_health.Hour]:
        start = datetime(2026, 1, 15, tzinfo=UTC)
        return [
            fleet_health.Hour(
                start.replace(hour=i),
                block | {"rest_spread_growth": block["rest_spread_growth"] | {"mv_per_h": rate, "rest_s": rest_s}},
            )
            for i, (rate, rest_s) in enumerate(growth)
        ]

    def kinds(day: list[fleet_health.Hour]) -> set[str]:
        return {a["kind"] for a in fleet_health.alerts_for(healthy, day, AggregatorSettings())}

    assert "self_discharge" not in kinds(hours((5.0, 1000.0), (-0.5, 3000.0), (-0.5, 3000.0), (0.0, 3000.0)))
    assert "self_discharge" not in kinds(hours((9.0, 600.0), (9.0, 600.0)))  # rests too short to count
    leaking = hours((3.0, 1000.0), (2.5, 3000.0), (1.5, 3000.0))
    alerts = fleet_health.alerts_for(healthy, leaking, AggregatorSettings())
    alert = next(a for a in alerts if a["kind"] == "self_discharge")
    assert (alert["kind"], alert["severity"]) == ("self_discharge", "warning")
    assert alert["evidence"]["mv_per_h_day"] == pytest.approx((3000 + 7500 + 4500) / 7000, abs=1e-3)


def test_a_vehicle_without_a_swing_gets_nulls_with_reasons(fleet: Day) -> None:
    aggregates = fleet_health.read_local(fleet.directory / "aggregated", DAY)
    hour = min(aggregates)
    block = aggregates[hour]["analytics"]
    vehicle = next(v for v in block["vehicles"] if v["capacity"]["ah"] is None)
    only = {hour: aggregates[hour] | {"analytics": block | {"vehicles": [vehicle]}}}
    document = fleet_health.build(DAY, only, AggregatorSettings(data_dir=fleet.directory), {}, [])
    (entry,) = document["vehicles"]
    assert entry["capacity_ah"] is None and entry["soh_pct"] is None
    assert entry["capacity"]["reason"].startswith("no hour had a qualifying SOC swing")
    assert entry["soh_reason"] == "no capacity estimate"
    assert entry["nominal_capacity"]["ah"] is None


def test_a_day_without_aggregates_is_a_clear_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = AggregatorSettings(data_dir=tmp_path)
    assert fleet_health.run_day(settings, None, DAY, "local") == 1
    assert "no hourly aggregate" in capsys.readouterr().err
    (tmp_path / "aggregated").mkdir()
    (tmp_path / "aggregated" / "aggregated-2026-01-15T03.json").write_text('{"vehicles": []}')
    assert fleet_health.run_day(settings, None, DAY, "local") == 1
    assert "none with an analytics block" in capsys.readouterr().err
    assert not list((tmp_path / "aggregated").glob("fleet-health-*"))


def test_the_command_line_defaults_to_the_previous_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("S3_BUCKET", raising=False)
    seen: list[date] = []

    def fake_run_day(settings: AggregatorSettings, bucket: object, day: date, source: str) -> int:
        seen.append(day)
        return 0

    monkeypatch.setattr(fleet_health, "run_day", fake_run_day)
    assert fleet_health.main([], now=lambda: datetime(2026, 1, 16, 0, 15, tzinfo=UTC)) == 0
    assert fleet_health.main(["--day", "2026-01-03", "--engine", "spark"]) == 0
    assert seen == [date(2026, 1, 15), date(2026, 1, 3)]
    with pytest.raises(SystemExit):
        fleet_health.parse_args(["--day", "15/01/2026"])
    assert fleet_health.main(["--source", "s3"]) == 2


def test_nominal_inference_and_weighted_median() -> None:
    assert fleet_health.nominal("v", 58.0, {})["ah"] == 60.0
    ambiguous = fleet_health.nominal("v", 90.0, {})
    assert ambiguous["ah"] == 94.0 and ambiguous["alternatives"] == [120.0] and "ambiguous" in ambiguous["basis"]
    assert fleet_health.nominal("v", 30.0, {})["ah"] is None
    assert fleet_health.weighted_median([(1.0, 1), (2.0, 1), (10.0, 5)]) == 10.0
    assert fleet_health.weighted_median([(1.0, 3), (2.0, 1), (10.0, 1)]) == 1.0
    assert fleet_health.weighted_median([]) is None


def test_the_day_is_read_from_s3_and_its_document_put_beside_the_aggregates(
    fleet: Day, bucket: str, tmp_path: Path
) -> None:
    """--source s3 reads the hourly aggregates from the bucket (no local copy) and gives the local run's document,
    which is then put at aggregated/fleet-health-<day>.json, byte for byte the local file."""
    s3 = sync_client("s3", CommonSettings())
    for path in sorted((fleet.directory / "aggregated").glob("aggregated-*.json")):
        s3.put_object(Bucket=bucket, Key=f"aggregated/{path.name}", Body=path.read_bytes())
    settings = AggregatorSettings(data_dir=tmp_path, s3_bucket=bucket)
    assert fleet_health.run_day(settings, S3Bucket(bucket, settings), DAY, "s3") == 0
    written = (tmp_path / "aggregated" / fleet_health.file_name(DAY)).read_bytes()
    assert orjson.loads(written) == fleet.document
    key = fleet_health.s3_aggregated_key_for(DAY)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == written


def test_cooling_fault_needs_a_module_lagging_its_pump_not_a_hot_aged_pack_or_a_weak_cell(fleet: Day) -> None:
    """Protects the cooling_fault rule: a healthy aged pack charging hot in the cold (cooled spread P95 6.4 °C,
    which the old spread-vs-peers rule alerted) and a weak cell's warmer module (7.2 °C) have no module lagging
    its pump, so no alert; lag seconds add up over the day's hours (a heater lag straddling an hour boundary)
    to ALERT_COOLING_LAG_S; first_seen is the first lagging reading; an aggregate from before the figure counts 0."""
    healthy = next(vid for vid, facts in fleet.truth.items() if not facts["faults"])
    path = sorted((fleet.directory / "aggregated").glob("aggregated-*.json"))[0]
    block = next(b for b in orjson.loads(path.read_bytes())["analytics"]["vehicles"] if b["vehicle_id"] == healthy)
    settings = AggregatorSettings()

    def hour(i: int, spread_p95: float, lag_s: float, heating: bool = False, warm: bool = False) -> fleet_health.Hour:
        case = {"readings": 3000, "p95_c": 5.0 if lag_s else 2.5, "seconds": lag_s}
        none = {"readings": 0, "p95_c": None, "seconds": 0.0}
        lag = {"cooling": none if heating else case, "heating": case if heating else none, "reason": None,
               "first": f"2026-01-15T{i:02d}:40:00Z" if lag_s else None}  # fmt: skip
        temperature = block["temperature"] | {"minutes_above_warning": 3.0 if warm else 0.0, "max_c": 47.0}
        changed = {"cooled_temp_spread_c": {"readings": 3000, "p95": spread_p95, "max": spread_p95 + 0.5},
                   "module_lag": lag, "temperature": temperature}  # fmt: skip
        return fleet_health.Hour(START.replace(hour=i), block | changed)

    def cooling(hours: list[fleet_health.Hour]) -> list[dict[str, Any]]:
        return [a for a in fleet_health.alerts_for(healthy, hours, settings) if a["kind"] == "cooling_fault"]

    assert cooling([hour(13, 6.4, 0.0), hour(23, 6.3, 0.0)]) == []  # a healthy aged pack, DC charging at -4 °C
    assert cooling([hour(12, 7.2, 0.0)]) == []  # a weak cell's module
    assert cooling([hour(17, 6.5, 100.0, heating=True)]) == []  # under the 120 s of a day
    (alert,) = cooling([hour(16, 3.0, 0.0), hour(17, 6.5, 81.0, heating=True), hour(18, 5.1, 63.0, heating=True)])
    assert (alert["first_seen"], alert["severity"]) == ("2026-01-15T17:40:00Z", "warning")
    assert alert["evidence"]["lag_s"] == 144.0 and list(alert["evidence"]["lag_s_by_hour"]) == [
        "2026-01-15T17",
        "2026-01-15T18",
    ]
    (hot,) = cooling([hour(2, 10.7, 2962.0, warm=True)])
    assert hot["severity"] == "critical" and hot["evidence"]["lag_p95_c_max"] == 5.0
    older = {k: v for k, v in block.items() if k != "module_lag"}
    assert cooling([fleet_health.Hour(START, older)]) == []


def test_cell_imbalance_is_judged_in_soc_points_not_millivolts(fleet: Day) -> None:
    """Protects the cell_imbalance rule: a healthy pack resting near full reads 50-58 mV (the OCV curve is steep
    there) but its cells are only ~5 SOC points apart, so no alert (the millivolt rule flagged one on the 50 x 2-day
    scorecard); a pack whose cells are ALERT_IMBALANCE_SOC_PCT apart in two rest hours (or the only one) is alerted,
    critical from ALERT_IMBALANCE_CRITICAL_SOC_PCT; one high hour among several is not; an aggregate from before
    the figure is not judged."""
    healthy = next(vid for vid, facts in fleet.truth.items() if not facts["faults"])
    path = sorted((fleet.directory / "aggregated").glob("aggregated-*.json"))[0]
    block = next(b for b in orjson.loads(path.read_bytes())["analytics"]["vehicles"] if b["vehicle_id"] == healthy)
    settings = AggregatorSettings()

    def hour(i: int, mv: float, points: float) -> fleet_health.Hour:
        rest = {"readings": 900, "p50": mv, "p95": mv + 1, "max": mv + 2, "reason": None}
        spread = block["cell_voltage_spread_mv"] | {"at_rest": rest}
        soc = {"readings": 900, "p50": points, "p95": points + 0.2, "max": points + 0.3, "reason": None}
        samples = block["samples"] | {"first": f"2026-01-15T{i:02d}:00:00Z"}
        changed = {"cell_voltage_spread_mv": spread, "rest_soc_spread_pct": soc, "samples": samples}
        return fleet_health.Hour(START.replace(hour=i), block | changed)

    def imbalance(hours: list[fleet_health.Hour]) -> list[dict[str, Any]]:
        return [a for a in fleet_health.alerts_for(healthy, hours, settings) if a["kind"] == "cell_imbalance"]

    assert imbalance([hour(2, 55.0, 5.0), hour(3, 58.0, 5.1), hour(9, 30.0, 4.4)]) == []  # veh-00034 near full
    (alert,) = imbalance([hour(5, 45.0, 11.0), hour(6, 90.0, 12.0), hour(9, 20.0, 4.0)])  # a sinking cell
    assert (alert["first_seen"], alert["severity"]) == ("2026-01-15T05:00:00Z", "warning")
    assert alert["evidence"] | {"hours": None} == {
        "rest_soc_spread_pct_median": 11.5, "rest_spread_mv_median": 67.5, "rest_hours_above": 2, "rest_hours": 3,
        "hours": None, "threshold_soc_pct": 10.0,
    }  # fmt: skip
    (critical,) = imbalance([hour(7, 120.0, 21.0)])  # the day's only rest hour
    assert critical["severity"] == "critical"
    assert imbalance([hour(7, 60.0, 12.0), hour(8, 20.0, 4.0)]) == []  # one high hour among several
    older = {k: v for k, v in hour(7, 120.0, 21.0).block.items() if k != "rest_soc_spread_pct"}
    assert imbalance([fleet_health.Hour(START, older)]) == []
