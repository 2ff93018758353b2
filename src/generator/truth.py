"""The ground truth of a run: each pack's real capacity and resistance, and its faults, as JSON.

``--truth-json FILE`` writes, for a fleet before its first step (/work/shared/contract.md)::

    {"vehicles": {"veh-00001": {"nominal_capacity_ah": 94.0, "capacity_ah": 81.2,
                                "resistance_mohm_25c": 98.7, "faults": [{"kind": "weak_cell",
                                "start": "2026-01-15T09:12:00.400000Z", ...}], ...}}}

- ``capacity_ah``: the charge at the terminals that moves the pack's reported SOC by 100
  points (:meth:`Fleet.pack_capacity_ah`, ageing included);
- ``resistance_mohm_25c``: the series string's instant (ohmic) resistance at 25 °C and
  50 % SOC, the sum of its 96 cells' R0 (ageing included, faults not: a ``weak_cell``
  fault's entry gives the sum once it has started);
- a fault's ``start``: the timestamp of the first reading taken with it, in the offline
  output's fixed form (:func:`src.generator.readings.fixed_timestamp`).

Extra keys (``soh_pct``, ``resistance_growth``, a fault's location and magnitude) say
what the plan drew; the contract's keys keep their meaning. At the end of a run, a ``cooling``
fault gains what the run did with it (:func:`with_expressions`): ``expressed``, the timestamp of
the first reading whose step pumped coolant or heat through the faulty module after the start
(``null``: never in the run, the fault stayed latent and no reading could show it), and
``cooled_s``/``heated_s``, the seconds it was pumped cool or warm.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from src.generator.battery_model import FaultExpression, Fleet
from src.generator.health import Fault, FaultKind
from src.generator.readings import fixed_timestamp

DIGITS = 6
"""Values are rounded to this many decimals (micro-ampere-hours, nano-ohms): far below any estimate."""


def truth_document(fleet: Fleet, ids: Sequence[str], start: datetime, period: timedelta) -> dict[str, Any]:
    """The truth of ``fleet`` (not yet stepped) whose readings carry ``ids`` and are stamped start + k * period."""
    if fleet.elapsed_s != 0.0:
        raise ValueError("the truth is taken from a fleet before its first step")
    if len(ids) != fleet.n_vehicles:
        raise ValueError(f"{len(ids)} vehicle ids for a fleet of {fleet.n_vehicles}")
    capacity = fleet.pack_capacity_ah()
    cell_r0 = fleet.cell_r0_ohm()
    string_r0 = cell_r0.sum(axis=1)
    plan = fleet.health
    growth = plan.resistance_factor
    vehicles: dict[str, dict[str, Any]] = {}
    for index, vid in enumerate(ids):
        nominal = float(fleet.capacity_ah[index])
        vehicles[vid] = {
            "nominal_capacity_ah": nominal,
            "capacity_ah": round(float(capacity[index]), DIGITS),
            "resistance_mohm_25c": round(float(string_r0[index]) * 1000.0, DIGITS),
            "faults": [],
            "soh_pct": round(100.0 * float(capacity[index]) / nominal, DIGITS),
            "resistance_growth": 1.0 if growth is None else round(float(growth[index]), DIGITS),
        }
    for fault in sorted(plan.faults, key=lambda f: f.vehicle):
        entry: dict[str, Any] = {
            "kind": fault.kind.value,
            "start": fixed_timestamp(start + round(fault.start_s / period.total_seconds()) * period),
        }
        entry.update(_details(fleet, fault, cell_r0, float(string_r0[fault.vehicle])))
        vehicles[ids[fault.vehicle]]["faults"].append(entry)
    return {"vehicles": vehicles}


def _details(fleet: Fleet, fault: Fault, cell_r0: Any, string_r0: float) -> dict[str, Any]:
    """Where the fault is and how strong, in the units an engineer would check it in."""
    if fault.kind == FaultKind.WEAK_CELL:
        assert fault.cell is not None
        extra = float(cell_r0[fault.vehicle, fault.cell]) * (fault.magnitude - 1.0)
        return {
            "cell": fault.cell,
            "resistance_factor": round(fault.magnitude, DIGITS),
            "resistance_mohm_25c_with_fault": round((string_r0 + extra) * 1000.0, DIGITS),
        }
    if fault.kind == FaultKind.SELF_DISCHARGE:
        assert fault.cell is not None
        cell_ah = fleet.cell_capacity_ah()[fault.vehicle, fault.cell]
        return {
            "cell": fault.cell,
            "leak_pct_per_day": round(fault.magnitude, DIGITS),
            "leak_a": round(fault.magnitude / 100.0 * float(cell_ah) / 24.0, DIGITS),
        }
    if fault.kind == FaultKind.COOLING:
        return {"module": fault.module, "coolant_conductance_left": round(fault.magnitude, DIGITS)}
    return {"bias_v": round(fault.magnitude, DIGITS)}


def with_expressions(
    document: Mapping[str, Any],
    faults: Sequence[Fault],
    expressions: Mapping[int, FaultExpression],
    ids: Sequence[str],
    start: datetime,
    period: timedelta,
) -> dict[str, Any]:
    """``document`` (from :func:`truth_document`) with each ``cooling`` fault's expression added, at the run's end.

    ``faults`` is the plan's tuple, ``expressions`` :meth:`Fleet.fault_expressions` by index in it (a fault not
    in it never started, so never pumped either). A vehicle has at most one fault of a kind in a drawn plan.
    """
    result = copy.deepcopy(dict(document))
    for index, fault in enumerate(faults):
        if fault.kind != FaultKind.COOLING:
            continue
        record = expressions.get(index, FaultExpression())
        entry = next(f for f in result["vehicles"][ids[fault.vehicle]]["faults"] if f["kind"] == fault.kind.value)
        entry["expressed"] = (
            None
            if record.expressed_s is None
            else fixed_timestamp(start + round(record.expressed_s / period.total_seconds()) * period)
        )
        entry["cooled_s"] = round(record.cooled_s, 3)
        entry["heated_s"] = round(record.heated_s, 3)
    return result


def write_truth(path: Path, document: dict[str, Any]) -> None:
    """Write the truth as indented JSON (the same bytes for the same run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
