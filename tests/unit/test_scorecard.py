"""The scorecard (src/aggregator/scorecard.py, scripts/score_battery_analytics.py) against the simulator's truth.

One small fleet end to end: 4 aged vehicles, 1 s sampling, seed 3, 2 simulated hours, a ``weak_cell`` and a
``sensor_bias`` fault from the first reading (``--faults-at-start 2 --fault-kinds weak_cell,sensor_bias``),
through the simulator's command line, the consumer's layout, the hourly job per hour and the daily job. Its own
tolerances (measured on this fleet; the issue's targets are for 50 vehicles x 2 days). Then the precision,
recall and lead-time arithmetic on hand-made documents.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from src.aggregator import scorecard

SMALL = scorecard.Targets(capacity_pct=1.0, resistance_pct=5.0, recall=1.0, precision=1.0, lead_hours=1.0)


RUN = {"duration_s": 2 * 3600, "faults_at_start": 2, "fault_kinds": "weak_cell,sensor_bias", "targets": SMALL}


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    lines: list[str] = []
    directory = tmp_path_factory.mktemp("scorecard")
    return directory, scorecard.run(directory, 4, 1, 2, 1000, 3, progress=lines.append, **RUN)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def card(scored: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return scored[1]


def test_the_small_fleet_meets_its_tolerances_against_the_truth(card: dict[str, Any], tmp_path: Path) -> None:
    kinds = card["kinds"]
    for kind in ("weak_cell", "sensor_bias"):
        assert kinds[kind]["injected"] == 1 and kinds[kind]["recall"] == 1.0 and kinds[kind]["precision"] == 1.0
        assert 0.0 <= kinds[kind]["lead_hours_max"] <= 1.0  # faulty from the first reading; hour resolution at most
    assert kinds["cooling"]["injected"] == 0 and kinds["cooling"]["recall"] is None
    assert card["false_alerts"] == []
    assert card["resistance"]["estimated"] == 4 and card["resistance"]["max_abs_error_pct"] <= 5.0
    assert card["capacity"]["estimated"] >= 1 and card["capacity"]["max_abs_error_pct"] <= 1.0
    for row in card["vehicles"]:
        assert (row["capacity_error_pct"] is None) == (row["capacity_reason"] is not None)
    assert card["met"] and all(t["met"] for t in card["targets"])
    table = scorecard.render_table(card)
    assert "| weak_cell (weak_cell) | 1 | - | 1 | 1.00 | 1.00 |" in table and "- none" in table
    scorecard.plot(card, tmp_path / "card.png")
    assert (tmp_path / "card.png").read_bytes()[:4] == b"\x89PNG"


def _truth(kind: str, start: str, **extra: Any) -> dict[str, Any]:
    faults = [{"kind": kind, "start": start, **extra}] if kind else []
    return {"capacity_ah": 80.0, "resistance_mohm_25c": 100.0, "faults": faults}


def _vehicle(vid: str, capacity: float | None, resistance: float | None) -> dict[str, Any]:
    return {
        "vehicle_id": vid,
        "capacity_ah": capacity,
        "capacity": {"reason": None if capacity else "no hour had a qualifying SOC swing"},
        "resistance_mohm_25c": resistance,
        "resistance": {"reason": None if resistance else "too few steps"},
    }


def _alert(vid: str, kind: str, first_seen: str) -> dict[str, Any]:
    return {"vehicle_id": vid, "kind": kind, "first_seen": first_seen}


def test_precision_recall_lead_time_and_errors_on_hand_made_documents() -> None:
    truth = {
        "a": _truth("weak_cell", "2026-01-01T10:00:00.000000Z", resistance_mohm_25c_with_fault=110.0),
        "b": _truth("sensor_bias", "2026-01-01T05:00:00.000000Z"),
        "c": _truth("", ""),
        "d": _truth("self_discharge", "2026-01-01T06:00:00.000000Z"),
        "e": _truth("weak_cell", "2026-01-02T03:00:00.000000Z"),
    }
    day1 = {
        "vehicles": [_vehicle("a", 82.0, 109.0), _vehicle("b", 79.0, 97.0), _vehicle("c", None, None),
                     _vehicle("d", 80.0, 100.0), _vehicle("e", 80.0, 100.0)],
        "alerts": [_alert("a", "weak_cell", "2026-01-01T11:00:00Z"),
                   _alert("c", "weak_cell", "2026-01-01T00:00:00Z"),
                   _alert("d", "cell_imbalance", "2026-01-01T09:00:00Z"),
                   _alert("b", "over_temperature", "2026-01-01T12:00:00Z")],
    }  # fmt: skip
    day2 = {
        "vehicles": [_vehicle("a", 79.0, 111.0), _vehicle("b", 80.0, 100.0), _vehicle("c", None, None),
                     _vehicle("d", None, 100.0), _vehicle("e", 80.0, 100.0)],
        "alerts": [_alert("a", "weak_cell", "2026-01-02T00:00:00Z"),
                   _alert("b", "sensor_inconsistency", "2026-01-02T01:00:00.000000Z")],
    }  # fmt: skip
    card = scorecard.score(truth, {date(2026, 1, 1): day1, date(2026, 1, 2): day2})
    weak, bias, leak = card["kinds"]["weak_cell"], card["kinds"]["sensor_bias"], card["kinds"]["self_discharge"]
    assert (weak["injected"], weak["alerts"], weak["true_alerts"]) == (2, 2, 1)
    assert weak["precision"] == 0.5 and weak["recall"] == 0.5 and weak["missed"] == ["e"]
    assert weak["lead_hours"] == {"a": 1.0}  # the earliest first_seen over the days
    assert bias["precision"] == 1.0 and bias["recall"] == 1.0 and bias["lead_hours"] == {"b": 20.0}
    assert leak["recall"] == 0.0 and leak["precision"] is None  # d's cell_imbalance is its consequence, not its alert
    assert card["false_alerts"] == [
        {"vehicle_id": "b", "kind": "over_temperature", "first_seen": "2026-01-01T12:00:00Z", "healthy": False},
        {"vehicle_id": "c", "kind": "weak_cell", "first_seen": "2026-01-01T00:00:00Z", "healthy": True},
    ]
    rows = {r["vehicle_id"]: r for r in card["vehicles"]}
    assert rows["a"]["capacity_error_pct"] == pytest.approx(2.5)  # worst of +2.5 % and -1.25 %
    # Day 1 (fault from 10:00): 109 is nearer the faulty 110 (-0.91 %); day 2 only the faulty 110 (+0.91 %).
    assert rows["a"]["resistance_error_pct"] == pytest.approx(-100 / 110)
    assert rows["e"]["resistance_error_pct"] == 0.0  # e's fault starts on day 2, with no figure for it
    assert rows["c"]["capacity_error_pct"] is None and rows["c"]["capacity_reason"].startswith("no hour")
    assert rows["c"]["resistance_reason"] == "too few steps"
    assert card["capacity"] == {"estimated": 4, "vehicles": 5, "share_estimated": 0.8,
                                "median_abs_error_pct": pytest.approx(0.625), "max_abs_error_pct": 2.5}  # fmt: skip
    met = {t["target"]: t["met"] for t in card["targets"]}
    assert not card["met"] and met["capacity within ±3 % (vehicles with an estimate)"]
    assert not met["no alert on a healthy vehicle"] and not met["weak_cell: recall ≥ 1"]
    assert not met["self_discharge: lead time ≤ 24 h"] and met["sensor_bias: lead time ≤ 24 h"]
    assert "cooling: recall ≥ 1" not in met  # never injected: not judged
    assert "n/a: no hour had a qualifying SOC swing" in scorecard.render_table(card)


def test_reuse_rescores_the_same_run_without_simulating_and_refuses_another(
    scored: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Protects --reuse: an --out directory holding this configuration's truth and raw/ is re-scored as it
    was (no simulation); another configuration, or a directory without a run, is refused, never mis-scored."""
    directory, card = scored
    lines: list[str] = []
    again = scorecard.run(directory, 4, 1, 2, 1000, 3, progress=lines.append, reuse=True, **RUN)  # type: ignore[arg-type]
    assert again["kinds"] == card["kinds"] and again["targets"] == card["targets"]
    assert lines[0].startswith("reusing") and not any("simulating" in line for line in lines)
    with pytest.raises(RuntimeError, match="holds a run of"):
        scorecard.run(directory, 4, 1, 2, 1000, 4, reuse=True, **RUN)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="holds no earlier run"):
        scorecard.run(tmp_path / "empty", 4, 1, 2, 1000, 3, reuse=True, **RUN)  # type: ignore[arg-type]
    # A run from before configuration.json: scorecard.json's configuration is checked instead; no raw/: refused.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "truth.json").write_bytes((directory / "truth.json").read_bytes())
    old = {
        "configuration": {k: v for k, v in card["configuration"].items() if k not in ("faults_at_start", "fault_kinds")}
    }
    (tmp_path / "old" / "scorecard.json").write_bytes(orjson.dumps(old))
    with pytest.raises(RuntimeError, match="no laid-out hour"):
        scorecard.run(tmp_path / "old", 4, 1, 2, 1000, 3, duration_s=2 * 3600, reuse=True)
    with pytest.raises(RuntimeError, match="holds a run of"):  # scorecard.json without its two keys: 0 and None
        scorecard.run(tmp_path / "old", 4, 1, 2, 1000, 3, reuse=True, **RUN)  # type: ignore[arg-type]


def test_a_latent_fault_is_listed_apart_and_left_out_of_recall_with_lead_from_expression() -> None:
    """Protects the latent marking: a cooling fault the truth says never pumped (``expressed`` null) is listed
    as latent, not missed, and not in recall's denominator; an expressed one is judged, with its lead time
    from the start and from its expression; a kind whose faults were all latent is not judged."""
    truth = {
        "a": _truth("cooling", "2026-01-01T10:00:00.000000Z", expressed="2026-01-01T20:00:00.000000Z"),
        "b": _truth("cooling", "2026-01-01T11:00:00.000000Z", expressed=None),
        "c": _truth("cooling", "2026-01-01T12:00:00.000000Z"),  # a truth from before the key: judged as shown
    }
    day = {"vehicles": [_vehicle(v, 80.0, 100.0) for v in "abc"],
           "alerts": [_alert("a", "cooling_fault", "2026-01-01T21:00:00Z")]}  # fmt: skip
    card = scorecard.score(truth, {date(2026, 1, 1): day})
    cooling = card["kinds"]["cooling"]
    assert cooling["latent"] == ["b"] and cooling["missed"] == ["c"] and cooling["recall"] == 0.5
    assert cooling["lead_hours"] == {"a": 11.0} and cooling["lead_hours_from_expressed"] == {"a": 1.0}
    assert "| cooling (cooling_fault) | 3 | b | 1 | 1.00 | 0.50 | a 11.00 | a 1.00 | c |" in scorecard.render_table(
        card
    )
    only_latent = scorecard.score({"b": truth["b"]}, {date(2026, 1, 1): day | {"alerts": []}})
    assert only_latent["kinds"]["cooling"]["recall"] is None and only_latent["met"]
    assert not any(t["target"].startswith("cooling") for t in only_latent["targets"])
