"""Per vehicle-hour battery analytics: SQL window functions over the curated hour, and their Python glue.

The hourly job adds an ``analytics`` block to the aggregate, one entry per vehicle (:func:`document`;
docs/battery-analytics.md defines every figure, its thresholds and the errors measured against the
simulator's truth): energy
and charge in and out, equivalent full cycles, gaps, time driving / charging / parked, cell-voltage
and temperature spread, minutes above temperature limits, charging sessions, a pack-resistance
estimate from current steps, a capacity estimate from the largest SOC swing, and the consistency of
the pack voltage with its cells; and the figures the daily fleet-health alerts read (among them the at-rest
cells' SOC spread, their voltages read off the OCV curve: :func:`soc_of_voltage`).

All of it is SQL in this module, written once for both engines (:class:`Dialect` names the few
spellings that differ: the timestamp column's quoting and its epoch in microseconds). The steps:

1. :func:`samples_sql` -> table ``analytics_samples``: one row per reading with the window
   functions every figure needs (interval to the previous reading, previous values, running sums
   for gap-free segments, charge counted, rest and discharge markers). Two readings of a vehicle
   with the same timestamp (several CAN ids) are one sample: the first by ``can_id`` is kept, the
   others are marked ``dup`` and set aside in a partition of their own (the same natural key twice
   cannot be in one curated file; across files, which copy is kept is not defined).
2. :func:`sessions_sql` -> table ``analytics_sessions``: the charging sessions.
3. :func:`vehicles_sql`, :func:`session_details_sql`, :func:`resistance_sql`, :func:`capacity_sql`:
   per-vehicle rows, assembled by :func:`assemble` into the JSON block, a figure that cannot be
   computed being ``null`` with a ``reason``.

Thresholds are spliced into the SQL as numeric literals (:func:`_num`: finite floats from typed
settings, nothing else); the only other text spliced in is the source (``read_parquet(?)`` with the
paths as a parameter, or a Spark view's name).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.common.schema import format_timestamp

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import SparkSession  # type: ignore[import-not-found, unused-ignore]

    from src.common.settings import AggregatorSettings

SAMPLES_TABLE = "analytics_samples"
SESSIONS_TABLE = "analytics_sessions"
GAS_CONSTANT = 8.314  # J/(mol K)
KELVIN = 273.15
REFERENCE_TEMP_C = 25.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COOLANT_ON_C = 30.0
"""The module temperature above which an i3-like pack's coolant runs (driving or charging): the temperature
spread of readings this warm, with current flowing, is where a module with degraded cooling shows."""
HEATER_BELOW_C = 10.0
"""The module temperature below which the coolant, heated, warms an i3-like pack while it charges."""
GROWTH_MIN_STRETCH_S = 600.0
"""A rest stretch (at rest for ``rest_min_s`` already) counts for the at-rest spread's growth from this long on."""


@dataclass(frozen=True)
class Thresholds:
    """The analytics' thresholds: :class:`src.common.settings.AggregatorSettings`' ``analytics_*`` fields."""

    gap_s: float
    rest_current_a: float
    rest_min_s: float
    temp_warning_c: float
    temp_critical_c: float
    session_merge_s: float
    session_min_s: float
    step_current_a: float
    step_max_dt_s: float
    step_min_soc_pct: float
    min_steps: int
    activation_energy_j_per_mol: float
    rc_ratio: float
    rc_tau_s: float
    capacity_min_swing_pct: float
    cells_in_series: int
    pack_voltage_tolerance_v: float
    module_lag_c: float
    ocv_curve_v: tuple[float, ...]

    @classmethod
    def from_settings(cls, settings: AggregatorSettings) -> Thresholds:
        return cls(**{name: getattr(settings, f"analytics_{name}") for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Dialect:
    """How an engine spells the few things its SQL does not share."""

    timestamp: str  # the curated column "timestamp", quoted
    epoch_us: str  # a format string: microseconds since the epoch of {}
    create: str  # a format string: a table named {name} holding the rows of {select}
    drop: str  # a format string: the statement that drops table {name}


DUCKDB = Dialect(
    '"timestamp"', "epoch_us({})", "CREATE OR REPLACE TEMP TABLE {name} AS {select}", "DROP TABLE IF EXISTS {name}"
)
SPARK = Dialect("`timestamp`", "unix_micros({})", "CACHE TABLE {name} AS {select}", "UNCACHE TABLE IF EXISTS {name}")


def _num(value: float) -> str:
    """A threshold as an SQL numeric literal (a double: 1E0 form, so no engine reads it as a decimal)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"an analytics threshold must be a finite number, got {value!r}")
    return f"{number!r}E0" if "e" not in repr(number) else repr(number).upper()


# --- The SQL -------------------------------------------------------------------------------------

_RUNNING = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"


def samples_sql(dialect: Dialect, source: str, th: Thresholds) -> str:
    """The statement creating ``analytics_samples`` from the curated rows of ``source``.

    Columns: the reading (``us``: timestamp in µs, ``soc``, ``v``, ``i``, ``cv_min``, ``cv_max``,
    ``temp_min``, ``temp_max``); ``dt`` (s since the vehicle's previous reading), ``dup`` (a second
    reading at the same instant), ``bridged`` (0 < ... ``dt`` <= the gap threshold: the interval
    counts), ``state`` (1 charging current, -1 discharging, 0 at rest: |I| <= the rest current);
    the previous sample's ``p_soc``, ``p_v``, ``p_i``, ``p_temp2`` (min + max cell temperature);
    running: ``segment`` (gap-free stretch number), ``ah_cum`` (charge counted, Ah),
    ``rest_from_us`` (the last reading that was not at rest, or followed a gap) and ``discharges``
    (discharging readings so far).
    """
    ts = dialect.timestamp
    rest, gap = _num(th.rest_current_a), _num(th.gap_s)
    select = f"""
WITH typed AS (
    SELECT
        vehicle_id, can_id, {dialect.epoch_us.format(ts)} AS us,
        battery_soc AS soc, battery_voltage AS v, battery_current AS i,
        cell_voltage_min AS cv_min, cell_voltage_max AS cv_max, cell_temp_min AS temp_min, cell_temp_max AS temp_max
    FROM {source}
),
stepped AS (
    SELECT *,
        (us - lag(us) OVER w) / 1000000.0 AS dt,
        CASE WHEN i > {rest} THEN 1 WHEN i < -{rest} THEN -1 ELSE 0 END AS state
    FROM typed
    WINDOW w AS (PARTITION BY vehicle_id ORDER BY us, can_id)
),
flagged AS (
    SELECT *, coalesce(dt = 0, false) AS dup, coalesce(dt > 0 AND dt <= {gap}, false) AS bridged
    FROM stepped
)
SELECT
    vehicle_id, us, soc, v, i, cv_min, cv_max, temp_min, temp_max, dt, dup, bridged, state,
    lag(soc) OVER w AS p_soc,
    lag(v) OVER w AS p_v,
    lag(i) OVER w AS p_i,
    lag(temp_min + temp_max) OVER w AS p_temp2,
    lag(cv_min) OVER w AS p_cv_min,
    sum(CASE WHEN bridged THEN 0 ELSE 1 END) OVER r AS segment,
    sum(CASE WHEN bridged THEN i * dt ELSE 0.0 END) OVER r / 3600.0 AS ah_cum,
    max(CASE WHEN state <> 0 OR NOT bridged THEN us END) OVER r AS rest_from_us,
    sum(CASE WHEN state = -1 THEN 1 ELSE 0 END) OVER r AS discharges
FROM flagged
WINDOW w AS (PARTITION BY vehicle_id, dup ORDER BY us),
       r AS (PARTITION BY vehicle_id, dup ORDER BY us {_RUNNING})
"""
    return dialect.create.format(name=SAMPLES_TABLE, select=select)


def sessions_sql(dialect: Dialect, th: Thresholds) -> str:
    """The statement creating ``analytics_sessions`` (vehicle_id, session, start_us, end_us, soc_from, soc_to).

    A session is a run of charging readings (current above the rest current) in which consecutive
    ones are at most ``session_merge_s`` apart with no discharging reading between them, lasting at
    least ``session_min_s`` from its first to its last charging reading (regenerative braking is
    seconds long and broken by discharge)."""
    merge_us, min_us = _num(th.session_merge_s * 1e6), _num(th.session_min_s * 1e6)
    select = f"""
WITH charging AS (
    SELECT vehicle_id, us, soc, discharges, lag(us) OVER c AS prev_us, lag(discharges) OVER c AS prev_discharges
    FROM {SAMPLES_TABLE}
    WHERE NOT dup AND state = 1
    WINDOW c AS (PARTITION BY vehicle_id ORDER BY us)
),
numbered AS (
    SELECT *, sum(
        CASE WHEN prev_us IS NULL OR us - prev_us > {merge_us} OR discharges > prev_discharges THEN 1 ELSE 0 END
    ) OVER (PARTITION BY vehicle_id ORDER BY us {_RUNNING}) AS session
    FROM charging
)
SELECT vehicle_id, session, min(us) AS start_us, max(us) AS end_us,
    min_by(soc, us) AS soc_from, max_by(soc, us) AS soc_to
FROM numbered
GROUP BY vehicle_id, session
HAVING max(us) - min(us) >= {min_us}
"""
    return dialect.create.format(name=SESSIONS_TABLE, select=select)


def soc_of_voltage(column: str, curve_v: Sequence[float]) -> str:
    """SQL for the SOC (%) a cell at rest has at voltage ``column``: the OCV curve ``curve_v`` (rising, on a uniform
    grid from 0 to 100 %) read backwards, linear between its points, clamped to 0 and 100 %. Raises ValueError for a
    curve of fewer than two points or one that does not rise."""
    if len(curve_v) < 2 or any(b <= a for a, b in pairwise(curve_v)):
        raise ValueError(f"the OCV curve must rise strictly over at least two points, got {tuple(curve_v)!r}")
    step = 100.0 / (len(curve_v) - 1)
    branches = " ".join(
        f"WHEN {column} <= {_num(high)} THEN {_num(k * step)} + ({column} - {_num(low)}) * {_num(step / (high - low))}"
        for k, (low, high) in enumerate(pairwise(curve_v))
    )
    return f"CASE WHEN {column} <= {_num(curve_v[0])} THEN 0.0E0 {branches} ELSE 100.0E0 END"


def _count(condition: str) -> str:
    """How many rows meet ``condition`` (NULL counts as not met, in every engine)."""
    return f"sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def _p(fraction: float, expression: str) -> str:
    return f"percentile_cont({fraction}) WITHIN GROUP (ORDER BY {expression})"


def vehicles_sql(th: Thresholds) -> str:
    """One row per vehicle: counts, gaps, energy and charge, time split, spreads, temperature, consistency."""
    n, tol, gap = _num(th.cells_in_series), _num(th.pack_voltage_tolerance_v), _num(th.gap_s)
    rest_min_us = _num(th.rest_min_s * 1e6)
    lag = _num(th.module_lag_c)
    return f"""
WITH marked AS (
    SELECT a.*, s.session IS NOT NULL AS in_session,
        CASE WHEN NOT a.dup AND a.bridged THEN a.dt END AS w_dt,
        CASE WHEN NOT a.dup THEN (a.cv_max - a.cv_min) * 1000.0 END AS spread_mv,
        CASE WHEN NOT a.dup THEN a.temp_max - a.temp_min END AS spread_c,
        CASE WHEN NOT a.dup AND a.state = 0 AND a.us - a.rest_from_us >= {rest_min_us}
             THEN (a.cv_max - a.cv_min) * 1000.0 END AS rest_spread_mv,
        CASE WHEN NOT a.dup AND a.state = 0 AND a.us - a.rest_from_us >= {rest_min_us}
             THEN {soc_of_voltage("a.cv_max", th.ocv_curve_v)} - {soc_of_voltage("a.cv_min", th.ocv_curve_v)}
             END AS rest_soc_spread_pct,
        CASE WHEN NOT a.dup THEN greatest({n} * a.cv_min - a.v, a.v - {n} * a.cv_max) END AS outside_v,
        CASE WHEN NOT a.dup AND a.state <> 0 AND a.temp_max >= {_num(COOLANT_ON_C)}
             THEN a.temp_max - a.temp_min END AS cooled_spread_c,
        {_lag_columns()}
    FROM {SAMPLES_TABLE} a
    LEFT JOIN {SESSIONS_TABLE} s ON a.vehicle_id = s.vehicle_id AND a.us BETWEEN s.start_us AND s.end_us
)
SELECT
    vehicle_id,
    {_count("NOT dup")} AS readings,
    {_count("dup")} AS duplicates,
    min(us) AS first_us,
    max(us) AS last_us,
    count(w_dt) AS intervals,
    {_p(0.5, "w_dt")} AS median_interval_s,
    {_count(f"NOT dup AND dt > {gap}")} AS gaps,
    sum(CASE WHEN NOT dup AND dt > {gap} THEN dt END) AS gap_s,
    sum(CASE WHEN i > 0 THEN v * i * w_dt END) / 3600000.0 AS charged_kwh,
    -sum(CASE WHEN i < 0 THEN v * i * w_dt END) / 3600000.0 AS discharged_kwh,
    sum(CASE WHEN i > 0 THEN i * w_dt END) / 3600.0 AS charged_ah,
    -sum(CASE WHEN i < 0 THEN i * w_dt END) / 3600.0 AS discharged_ah,
    sum(CASE WHEN w_dt IS NOT NULL THEN abs(soc - p_soc) END) / 200.0 AS equivalent_full_cycles,
    sum(CASE WHEN in_session THEN w_dt END) AS charging_s,
    sum(CASE WHEN NOT in_session AND state <> 0 THEN w_dt END) AS driving_s,
    sum(CASE WHEN NOT in_session AND state = 0 THEN w_dt END) AS parked_s,
    {_p(0.5, "spread_mv")} AS spread_p50, {_p(0.95, "spread_mv")} AS spread_p95, max(spread_mv) AS spread_max,
    count(rest_spread_mv) AS rest_readings,
    {_p(0.5, "rest_spread_mv")} AS rest_p50, {_p(0.95, "rest_spread_mv")} AS rest_p95,
    max(rest_spread_mv) AS rest_max,
    {_p(0.5, "rest_soc_spread_pct")} AS rest_soc_p50, {_p(0.95, "rest_soc_spread_pct")} AS rest_soc_p95,
    max(rest_soc_spread_pct) AS rest_soc_max,
    {_p(0.5, "spread_c")} AS temp_spread_p50, {_p(0.95, "spread_c")} AS temp_spread_p95,
    max(spread_c) AS temp_spread_max,
    max(CASE WHEN NOT dup THEN temp_max END) AS temp_max_c,
    sum(CASE WHEN temp_max > {_num(th.temp_warning_c)} THEN w_dt END) / 60.0 AS minutes_above_warning,
    sum(CASE WHEN temp_max > {_num(th.temp_critical_c)} THEN w_dt END) / 60.0 AS minutes_above_critical,
    {_count(f"outside_v > {tol}")} AS readings_outside,
    max(outside_v) AS max_outside_v,
    min(CASE WHEN outside_v > {tol} THEN us END) AS first_outside_us,
    min(CASE WHEN NOT dup AND temp_max > {_num(th.temp_warning_c)} THEN us END) AS first_warning_us,
    min(CASE WHEN NOT dup AND temp_max > {_num(th.temp_critical_c)} THEN us END) AS first_critical_us,
    count(cooled_spread_c) AS cooled_readings,
    {_p(0.95, "cooled_spread_c")} AS cooled_p95, max(cooled_spread_c) AS cooled_max,
    count(cooling_lag_c) AS cooling_readings, {_p(0.95, "cooling_lag_c")} AS cooling_lag_p95,
    sum(CASE WHEN cooling_lag_c >= {lag} THEN w_dt END) AS cooling_lag_s,
    count(heating_lag_c) AS heating_readings, {_p(0.95, "heating_lag_c")} AS heating_lag_p95,
    sum(CASE WHEN heating_lag_c >= {lag} THEN w_dt END) AS heating_lag_s,
    min(CASE WHEN cooling_lag_c >= {lag} OR heating_lag_c >= {lag} THEN us END) AS first_lag_us
FROM marked
GROUP BY vehicle_id
"""


def _lag_columns() -> str:
    """``cooling_lag_c`` and ``heating_lag_c`` of each reading of ``marked`` (docs: "Cooling fault").

    While the pump cools (current flowing, hottest cell at or above :data:`COOLANT_ON_C`) a module that sheds
    its heat is held near that point, so the hottest cell cannot be far above both it and the coolest cell:
    least(spread, hottest - 30 °C). While the heater warms a charging pack (coolest cell below
    :data:`HEATER_BELOW_C`, hottest at or above it, in a charging session) the mirror:
    least(spread, 10 °C - coolest). A pack that only makes more heat warms all its modules alike (small
    spread); a cold pack's wide gradient sits below the cooling point (small excess): either way the least is small.
    """
    cool, heat = _num(COOLANT_ON_C), _num(HEATER_BELOW_C)
    return f"""CASE WHEN NOT a.dup AND a.state <> 0 AND a.temp_max >= {cool}
             THEN least(a.temp_max - a.temp_min, a.temp_max - {cool}) END AS cooling_lag_c,
        CASE WHEN NOT a.dup AND a.state = 1 AND s.session IS NOT NULL AND a.temp_min < {heat} AND a.temp_max >= {heat}
             THEN least(a.temp_max - a.temp_min, {heat} - a.temp_min) END AS heating_lag_c"""


def session_details_sql() -> str:
    """One row per session: its span and SOC, its energy (bridged intervals ending in it) and peak power."""
    return f"""
SELECT
    s.vehicle_id, s.start_us, s.end_us, s.soc_from, s.soc_to,
    sum(CASE WHEN a.bridged THEN a.v * a.i * a.dt ELSE 0.0 END) / 3600000.0 AS energy_kwh,
    max(a.v * a.i) / 1000.0 AS peak_power_kw
FROM {SESSIONS_TABLE} s
JOIN {SAMPLES_TABLE} a ON a.vehicle_id = s.vehicle_id AND a.us BETWEEN s.start_us AND s.end_us AND NOT a.dup
GROUP BY s.vehicle_id, s.session, s.start_us, s.end_us, s.soc_from, s.soc_to
ORDER BY s.vehicle_id, s.start_us
"""


def resistance_sql(th: Thresholds) -> str:
    """One row per vehicle: current steps seen and used, and the median of their ΔV/ΔI at 25 °C (mΩ).

    A step: consecutive readings (bridged, at most ``step_max_dt_s`` apart) whose current differs by
    at least ``step_current_a``. Used: both readings at ``step_min_soc_pct`` or above. Each step's
    ΔV/ΔI is divided by the Arrhenius factor at the mean cell temperature of its two readings
    (activation energy ``activation_energy_j_per_mol``) and by 1 + rho (1 - exp(-dt / tau)), the
    share of the diffusion RC pair (``rc_ratio`` rho = R1/R0, ``rc_tau_s`` tau) that charges within dt."""
    ea_over_r = _num(th.activation_energy_j_per_mol / GAS_CONSTANT)
    step = f"NOT dup AND bridged AND dt <= {_num(th.step_max_dt_s)} AND abs(i - p_i) >= {_num(th.step_current_a)}"
    used = f"step AND least(soc, p_soc) >= {_num(th.step_min_soc_pct)}"
    sag = f"{used} AND i <= 0 AND p_i <= 0 AND v <> p_v"
    return f"""
WITH steps AS (
    SELECT vehicle_id, soc, p_soc, {step} AS step, i, p_i, v, p_v,
        CASE WHEN {step} AND v <> p_v THEN (cv_min - p_cv_min) * {_num(th.cells_in_series)} / (v - p_v) END AS sag,
        CASE WHEN {step} THEN
            (v - p_v) / (i - p_i) * 1000.0
            / exp({ea_over_r} * (1.0 / ((temp_min + temp_max + p_temp2) / 4.0 + {_num(KELVIN)})
                                 - 1.0 / {_num(REFERENCE_TEMP_C + KELVIN)}))
            / (1.0 + {_num(th.rc_ratio)} * (1.0 - exp(-dt / {_num(th.rc_tau_s)})))
        END AS r25_mohm
    FROM {SAMPLES_TABLE}
)
SELECT vehicle_id, {_count("step")} AS steps_seen, {_count(used)} AS steps,
    {_p(0.5, f"CASE WHEN {used} THEN r25_mohm END")} AS mohm_25c,
    {_count(sag)} AS sag_steps, {_p(0.5, f"CASE WHEN {sag} THEN sag END")} AS sag_ratio
FROM steps
GROUP BY vehicle_id
"""


def capacity_sql() -> str:
    """One row per vehicle: the largest SOC swing within a gap-free segment, its window and the charge moved.

    The window's ends are readings at which the reported SOC has just changed, in the swing's
    direction (a "transition"): there the true SOC has just crossed the same rounding boundary of the
    0.1 % resolution, so the reported difference is the true one to within one reading's movement,
    not ±0.1. A swing upwards runs from the lowest transition upwards to a later one, a swing
    downwards likewise (the running minimum of ``soc * direction``). Ties go to the earliest window."""
    return f"""
WITH transitions AS (
    SELECT vehicle_id, segment, us, soc, ah_cum, CASE WHEN soc > p_soc THEN 1 ELSE -1 END AS direction
    FROM {SAMPLES_TABLE}
    WHERE NOT dup AND bridged AND soc <> p_soc
),
firsts AS (
    SELECT *, soc * direction AS level,
        first_value(us) OVER (PARTITION BY vehicle_id, segment, direction, soc ORDER BY us {_RUNNING}) AS level_us,
        first_value(ah_cum) OVER (PARTITION BY vehicle_id, segment, direction, soc ORDER BY us {_RUNNING}) AS level_ah
    FROM transitions
),
running AS (
    SELECT *, min(level) OVER w AS low,
        min_by(level_us, level) OVER w AS low_us,
        min_by(level_ah, level) OVER w AS low_ah
    FROM firsts
    WINDOW w AS (PARTITION BY vehicle_id, segment, direction ORDER BY us {_RUNNING})
),
swings AS (
    SELECT *, level - low AS swing, max(level - low) OVER (PARTITION BY vehicle_id) AS best
    FROM running
)
SELECT vehicle_id, max(best) AS swing,
    min_by(low_us, us) AS start_us, min(us) AS end_us,
    min_by(low * direction, us) AS soc_from, min_by(soc, us) AS soc_to,
    min_by(ah_cum - low_ah, us) AS charge_ah
FROM swings
WHERE swing = best
GROUP BY vehicle_id
"""


def rest_growth_sql(th: Thresholds) -> str:
    """One row per vehicle: how fast the at-rest cell-voltage spread grows within rest stretches (mV/h).

    A rest stretch: the readings at rest (as for ``at_rest``) since the same last non-rest reading or gap
    (``rest_from_us``), spanning at least :data:`GROWTH_MIN_STRETCH_S`. Each stretch's least-squares slope
    of the spread against time; the vehicle's figure is their mean weighted by each stretch's span. A
    healthy pack's spread is flat at rest (no balancing in the simulator; balancing would pull it down);
    a self-discharging cell that is the lowest pulls it up by millivolts an hour. Between stretches the
    spread moves with the SOC (the OCV curve's slope), so stretches are never compared with each other."""
    rest_min_us = _num(th.rest_min_s * 1e6)
    return f"""
WITH rest AS (
    SELECT vehicle_id, rest_from_us, us, (cv_max - cv_min) * 1000.0 AS mv
    FROM {SAMPLES_TABLE}
    WHERE NOT dup AND state = 0 AND us - rest_from_us >= {rest_min_us}
),
stretches AS (
    SELECT vehicle_id, rest_from_us, min(us) AS first_us, (max(us) - min(us)) / 1000000.0 AS span_s,
        regr_slope(mv, us / 1000000.0) * 3600.0 AS slope
    FROM rest
    GROUP BY vehicle_id, rest_from_us
    HAVING max(us) - min(us) >= {_num(GROWTH_MIN_STRETCH_S * 1e6)}
)
SELECT vehicle_id, count(*) AS stretches, sum(span_s) AS rest_s, sum(slope * span_s) / sum(span_s) AS mv_per_h,
    max(slope) AS max_mv_per_h, min(first_us) AS first_us
FROM stretches
GROUP BY vehicle_id
"""


# --- Running it ----------------------------------------------------------------------------------


@dataclass
class Rows:
    """The result sets :func:`assemble` turns into the per-vehicle blocks (rows as dicts by column name)."""

    vehicles: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    resistance: list[dict[str, Any]]
    capacity: list[dict[str, Any]]
    rest_growth: list[dict[str, Any]] | None = None


def run_duckdb(
    connection: duckdb.DuckDBPyConnection, files: Sequence[Path | str], th: Thresholds
) -> dict[str, dict[str, Any]]:
    """The analytics block of every vehicle in the curated ``files``, by vehicle id (DuckDB)."""
    connection.execute(samples_sql(DUCKDB, "read_parquet(?)", th), [[str(f) for f in files]])
    try:
        connection.execute(sessions_sql(DUCKDB, th))
        queries = (vehicles_sql(th), session_details_sql(), resistance_sql(th), capacity_sql(), rest_growth_sql(th))
        rows = Rows(*(_dicts(connection.execute(query)) for query in queries))
    finally:
        for table in (SESSIONS_TABLE, SAMPLES_TABLE):
            connection.execute(DUCKDB.drop.format(name=table))
    return assemble(rows, th)


def run_spark(spark: SparkSession, view: str, th: Thresholds) -> dict[str, dict[str, Any]]:
    """The analytics block of every vehicle in the curated rows of Spark's temporary ``view`` (Spark)."""
    spark.sql(samples_sql(SPARK, view, th))
    try:
        spark.sql(sessions_sql(SPARK, th))
        queries = (vehicles_sql(th), session_details_sql(), resistance_sql(th), capacity_sql(), rest_growth_sql(th))
        rows = Rows(*([row.asDict() for row in spark.sql(query).collect()] for query in queries))
    finally:
        for table in (SESSIONS_TABLE, SAMPLES_TABLE):
            spark.sql(SPARK.drop.format(name=table))
            spark.catalog.dropTempView(table)  # uncaching keeps the view: a second run could not create it
    return assemble(rows, th)


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# --- Assembling the blocks -----------------------------------------------------------------------


def _instant(us: int | None) -> str | None:
    return None if us is None else format_timestamp(_EPOCH + timedelta(microseconds=int(us)))


def _round(value: float | None, digits: int) -> float | None:
    if value is None:
        return None
    result = round(float(value), digits)
    return 0.0 if result == 0 else result  # never -0.0


def document(blocks: Mapping[str, dict[str, Any]], th: Thresholds) -> dict[str, Any]:
    """The aggregate's ``analytics`` block: the thresholds used, and each vehicle's figures, sorted by id."""
    return {
        "thresholds": asdict(th),
        "vehicles": [{"vehicle_id": vehicle_id} | blocks[vehicle_id] for vehicle_id in sorted(blocks)],
    }


def assemble(rows: Rows, th: Thresholds) -> dict[str, dict[str, Any]]:
    """The JSON block of each vehicle (docs/battery-analytics.md, "The block"), by vehicle id."""
    sessions: dict[str, list[dict[str, Any]]] = {}
    for row in rows.sessions:
        sessions.setdefault(row["vehicle_id"], []).append(row)
    resistance = _by_vehicle(rows.resistance)
    capacity = _by_vehicle(rows.capacity)
    growth = _by_vehicle(rows.rest_growth or [])
    return {
        row["vehicle_id"]: _block(
            row,
            sessions.get(row["vehicle_id"], []),
            resistance.get(row["vehicle_id"]),
            capacity.get(row["vehicle_id"]),
            th,
        )
        | _health_signs(row, resistance.get(row["vehicle_id"]), growth.get(row["vehicle_id"]), th)
        for row in rows.vehicles
    }


def _health_signs(
    row: Mapping[str, Any], resistance: Mapping[str, Any] | None, growth: Mapping[str, Any] | None, th: Thresholds
) -> dict[str, Any]:
    """The figures the daily fleet-health alerts read (src/aggregator/fleet_health.py), added after the rest."""
    sag_steps = 0 if resistance is None else int(resistance["sag_steps"] or 0)
    sag_reason = None
    if sag_steps < th.min_steps:
        sag_reason = (
            f"{sag_steps} discharge-side current step(s) at or above {th.step_min_soc_pct:g} % SOC; "
            f"at least {th.min_steps} needed"
        )
    cooled = int(row["cooled_readings"])
    return {
        "weakest_cell": {
            "sag_ratio": None if sag_reason or resistance is None else _round(resistance["sag_ratio"], 3),
            "steps": sag_steps,
            "reason": sag_reason,
        },
        "rest_spread_growth": {
            "mv_per_h": None if growth is None else _round(growth["mv_per_h"], 3),
            "max_mv_per_h": None if growth is None else _round(growth["max_mv_per_h"], 3),
            "stretches": 0 if growth is None else int(growth["stretches"]),
            "rest_s": 0.0 if growth is None else _round(growth["rest_s"], 3),
            "first": None if growth is None else _instant(growth["first_us"]),
            "reason": None
            if growth is not None
            else f"no rest stretch of {GROWTH_MIN_STRETCH_S:g} s (after {th.rest_min_s:g} s at rest) without a gap",
        },
        "cooled_temp_spread_c": {
            "readings": cooled,
            "p95": _round(row["cooled_p95"], 3),
            "max": _round(row["cooled_max"], 3),
            "reason": None
            if cooled
            else f"no reading with current flowing and cell_temp_max at or above {COOLANT_ON_C:g} °C",
        },
        "module_lag": _module_lag(row),
        "rest_soc_spread_pct": _rest_soc_spread(row, th),
        "first_seen": {
            "pack_voltage_outside": _instant(row["first_outside_us"]),
            "above_warning": _instant(row["first_warning_us"]),
            "above_critical": _instant(row["first_critical_us"]),
        },
    }


def _module_lag(row: Mapping[str, Any]) -> dict[str, Any]:
    """The hour's module lag under the coolant and under the heater: readings, P95 (°C), seconds at or above
    ``module_lag_c``; ``first``: the first reading at or above it."""

    def case(name: str) -> dict[str, Any]:
        return {
            "readings": int(row[f"{name}_readings"]),
            "p95_c": _round(row[f"{name}_lag_p95"], 3),
            "seconds": _round(row[f"{name}_lag_s"] or 0.0, 3),
        }

    cooling, heating = case("cooling"), case("heating")
    reason = None
    if not cooling["readings"] and not heating["readings"]:
        reason = (
            f"no reading under the coolant (current flowing, cell_temp_max >= {COOLANT_ON_C:g} °C) or the heater "
            f"(charging, cell_temp_min < {HEATER_BELOW_C:g} °C <= cell_temp_max)"
        )
    return {
        "cooling": cooling,
        "heating": heating,
        "first": _instant(row["first_lag_us"]),
        "reason": reason,
    }


def _rest_soc_spread(row: Mapping[str, Any], th: Thresholds) -> dict[str, Any]:
    """The at-rest readings' SOC spread (points): each extreme cell's voltage read off the OCV curve, P50/P95/max."""
    rest = _at_rest(row, th)
    return {
        "readings": rest["readings"],
        "p50": _round(row["rest_soc_p50"], 3),
        "p95": _round(row["rest_soc_p95"], 3),
        "max": _round(row["rest_soc_max"], 3),
        "reason": rest["reason"],
    }


def _by_vehicle(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["vehicle_id"]: row for row in rows}


def _block(
    row: Mapping[str, Any],
    sessions: list[dict[str, Any]],
    resistance: Mapping[str, Any] | None,
    capacity: Mapping[str, Any] | None,
    th: Thresholds,
) -> dict[str, Any]:
    intervals = int(row["intervals"])
    no_interval = _no_interval_reason(int(row["readings"]), intervals, th)

    def interval_sum(name: str, digits: int) -> float | None:
        return None if no_interval else _round(row[name] or 0.0, digits)

    charged_ah, discharged_ah = interval_sum("charged_ah", 6), interval_sum("discharged_ah", 6)
    throughput = None if charged_ah is None or discharged_ah is None else _round(charged_ah + discharged_ah, 6)
    return {
        "samples": {
            "readings": int(row["readings"]),
            "duplicate_timestamps": int(row["duplicates"]),
            "first": _instant(row["first_us"]),
            "last": _instant(row["last_us"]),
            "intervals": intervals,
            "median_interval_s": _round(row["median_interval_s"], 6),
        },
        "gaps": {"count": int(row["gaps"]), "seconds": _round(row["gap_s"] or 0.0, 6)},
        "time_s": {
            "driving": interval_sum("driving_s", 3),
            "charging": interval_sum("charging_s", 3),
            "parked": interval_sum("parked_s", 3),
            "reason": no_interval,
        },
        "energy": {
            "charged_kwh": interval_sum("charged_kwh", 6),
            "discharged_kwh": interval_sum("discharged_kwh", 6),
            "charged_ah": charged_ah,
            "discharged_ah": discharged_ah,
            "throughput_ah": throughput,
            "equivalent_full_cycles": interval_sum("equivalent_full_cycles", 6),
            "reason": no_interval,
        },
        "cell_voltage_spread_mv": {
            "p50": _round(row["spread_p50"], 3),
            "p95": _round(row["spread_p95"], 3),
            "max": _round(row["spread_max"], 3),
            "at_rest": _at_rest(row, th),
        },
        "cell_temp_spread_c": {
            "p50": _round(row["temp_spread_p50"], 3),
            "p95": _round(row["temp_spread_p95"], 3),
            "max": _round(row["temp_spread_max"], 3),
        },
        "temperature": {
            "max_c": _round(row["temp_max_c"], 3),
            "minutes_above_warning": interval_sum("minutes_above_warning", 3),
            "minutes_above_critical": interval_sum("minutes_above_critical", 3),
            "reason": no_interval,
        },
        "charging_sessions": [_session(s, row, th) for s in sessions],
        "resistance": _resistance(resistance, th),
        "capacity": _capacity(capacity, no_interval, th),
        "pack_voltage": {
            "readings_outside": int(row["readings_outside"]),
            "fraction_outside": _round(int(row["readings_outside"]) / int(row["readings"]), 6),
            "max_outside_v": _round(max(float(row["max_outside_v"]), 0.0), 3),
        },
    }


def _no_interval_reason(readings: int, intervals: int, th: Thresholds) -> str | None:
    """Why no interval between readings can be counted, or None when one can."""
    if readings < 2:
        return "a single reading: no interval between readings"
    if intervals == 0:
        return f"every interval between readings is a gap (longer than {th.gap_s:g} s)"
    return None


def _at_rest(row: Mapping[str, Any], th: Thresholds) -> dict[str, Any]:
    count = int(row["rest_readings"])
    reason = None
    if count == 0:
        reason = f"no reading at rest (|current| <= {th.rest_current_a:g} A for at least {th.rest_min_s:g} s)"
    return {
        "readings": count,
        "p50": _round(row["rest_p50"], 3),
        "p95": _round(row["rest_p95"], 3),
        "max": _round(row["rest_max"], 3),
        "reason": reason,
    }


def _session(session: Mapping[str, Any], vehicle: Mapping[str, Any], th: Thresholds) -> dict[str, Any]:
    edge_us = th.session_merge_s * 1e6
    return {
        "start": _instant(session["start_us"]),
        "end": _instant(session["end_us"]),
        "duration_s": _round((session["end_us"] - session["start_us"]) / 1e6, 3),
        "soc_from": session["soc_from"],
        "soc_to": session["soc_to"],
        "energy_kwh": _round(session["energy_kwh"], 6),
        "peak_power_kw": _round(session["peak_power_kw"], 3),
        "open_start": session["start_us"] - vehicle["first_us"] <= edge_us,
        "open_end": vehicle["last_us"] - session["end_us"] <= edge_us,
    }


def _resistance(row: Mapping[str, Any] | None, th: Thresholds) -> dict[str, Any]:
    seen = 0 if row is None else int(row["steps_seen"])
    used = 0 if row is None else int(row["steps"])
    reason = None
    if seen == 0:
        reason = (
            f"no current step of at least {th.step_current_a:g} A between readings at most {th.step_max_dt_s:g} s apart"
        )
    elif used < th.min_steps:
        reason = (
            f"{used} current step(s) at or above {th.step_min_soc_pct:g} % SOC ({seen} in all); "
            f"at least {th.min_steps} needed"
        )
    value = None if reason is not None or row is None else _round(row["mohm_25c"], 3)
    return {"mohm_25c": value, "steps": used, "steps_seen": seen, "reason": reason}


def _capacity(row: Mapping[str, Any] | None, no_interval: str | None, th: Thresholds) -> dict[str, Any]:
    swing = 0.0 if row is None else float(row["swing"])
    reason = no_interval
    if reason is None and swing < th.capacity_min_swing_pct - 1e-9:
        reason = (
            f"the largest SOC swing without a gap is {swing:.1f} points; "
            f"at least {th.capacity_min_swing_pct:g} are needed"
        )
    if reason is None and row is not None and abs(float(row["charge_ah"])) <= 0.0:
        reason = "no charge was counted over the largest SOC swing"  # pragma: no cover - SOC moved without current
    window = None
    ah = None
    if row is not None and swing > 0:
        window = {
            "start": _instant(row["start_us"]),
            "end": _instant(row["end_us"]),
            "soc_from": _round(row["soc_from"], 1),
            "soc_to": _round(row["soc_to"], 1),
            "charge_ah": _round(row["charge_ah"], 6),
        }
    if reason is None and row is not None:
        ah = _round(float(row["charge_ah"]) / (float(row["soc_to"]) - float(row["soc_from"])) * 100.0, 3)
    return {
        "ah": ah,
        "swing_pct": _round(swing, 1),
        "window": window,
        "reason": reason,
    }
