"""The dashboard's SQL, in one place: which curated files an hour has, and the DuckDB statements both pages run.

- the fleet page's past hour: each vehicle's last reading of the hour (:func:`last_readings`);
- the vehicle page: one vehicle's signals over a window, from curated files and pre-filtered raw lines,
  deduplicated and bucketed (:func:`series_sql`, run by :mod:`src.dashboard.series`).

Values (file lists, the vehicle, the window) go in as parameters, never spliced into the SQL; the only
text spliced in is column names, which are constants. Every call opens a fresh in-memory DuckDB
(UTC, bounded memory), so calls from several worker threads never share one. Blocking: run them in
a worker thread.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from src.common.layout import hour_partition
from src.common.schema import SIGNALS

DUCKDB_MEMORY = "256MB"
DUCKDB_THREADS = 2
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SPREAD = "cell_voltage_spread_mv"
"""The derived series: ``cell_voltage_max - cell_voltage_min`` in mV."""
SERIES = (*SIGNALS, SPREAD)
_SIGNAL_LIST = ", ".join(SIGNALS)

# ----- the fleet page: a past hour -----

LAST_READINGS_SQL = f"""
SELECT vehicle_id,
    max(epoch_us("timestamp")) AS at_us,
    arg_min(struct_pack({_SIGNAL_LIST}), struct_pack(newest := -epoch_us("timestamp"), can_id := can_id)) AS reading
FROM read_parquet($files, hive_partitioning = false)
GROUP BY vehicle_id
ORDER BY vehicle_id
"""
"""The hour's last reading per vehicle; of two at its last timestamp, the first by CAN id (as the analytics keep).

One aggregate pass over the nine columns it needs (``arg_min`` on (newest first, CAN id)), not a window
function: no sort of the hour's rows, about three times faster on 1,000 vehicles (docs/dashboard.md)."""

# ----- the vehicle page: one vehicle over a window -----

_PAYLOAD = ", ".join(f"{signal} DOUBLE" for signal in SIGNALS)
_RAW_COLUMNS = (
    "{'timestamp': 'VARCHAR', 'vehicle_id': 'VARCHAR', 'can_id': 'VARCHAR', "
    f"'ingest_received_at': 'VARCHAR', 'payload': 'STRUCT({_PAYLOAD})'}}"
)
_CURATED_READINGS = f"""
SELECT can_id, "timestamp", ingest_received_at, {_SIGNAL_LIST}
FROM read_parquet($curated)
WHERE vehicle_id = $vehicle AND "timestamp" >= $start AND "timestamp" < $end
"""
_RAW_READINGS = f"""
SELECT can_id, "timestamp", ingest_received_at, {_SIGNAL_LIST}
FROM (
    SELECT can_id,
        try_cast("timestamp" AS TIMESTAMPTZ) AS "timestamp",
        try_cast(ingest_received_at AS TIMESTAMPTZ) AS ingest_received_at,
        {", ".join(f"payload.{signal} AS {signal}" for signal in SIGNALS)}
    FROM read_ndjson($raw, columns = {_RAW_COLUMNS}, format = 'newline_delimited', ignore_errors = true)
    WHERE vehicle_id = $vehicle
)
WHERE "timestamp" >= $start AND "timestamp" < $end
    AND can_id IS NOT NULL AND coalesce({" AND ".join(f"isfinite({signal})" for signal in SIGNALS)}, false)
"""
_BUCKETED = f"""
WITH readings AS ({{readings}}),
samples AS (
    SELECT *, (cell_voltage_max - cell_voltage_min) * 1000 AS {SPREAD}
    FROM readings
    QUALIFY row_number() OVER (PARTITION BY "timestamp" ORDER BY can_id, ingest_received_at, {_SIGNAL_LIST}) = 1
)
SELECT
    CASE WHEN (SELECT count(*) FROM samples) <= $points THEN epoch_us("timestamp")
         ELSE $start_us + (epoch_us("timestamp") - $start_us) // $bucket_us * $bucket_us END AS t_us,
    count(*) AS readings,
    {", ".join(f"min({name}), max({name})" for name in SERIES)}
FROM samples
GROUP BY t_us
ORDER BY t_us
"""
"""Each point: its time (the reading's, or its bucket's start), how many samples it holds, then min and max of
every series; a point per sample while the window holds at most ``$points`` of them."""
SERIES_COLUMNS = ("t_us", "readings", *(f"{name}_{end}" for name in SERIES for end in ("min", "max")))
"""The columns of a :func:`series_sql` row, in order."""


def series_sql(curated: bool, raw: bool) -> str:
    """The vehicle page's statement over the curated files (``$curated``), the raw lines (``$raw``), or both."""
    parts = [part for part, wanted in ((_CURATED_READINGS, curated), (_RAW_READINGS, raw)) if wanted]
    return _BUCKETED.replace("{readings}", " UNION ALL ".join(parts))


# ----- running them -----


def curated_files(curated_dir: Path, hour: datetime) -> list[Path]:
    """The hour's curated Parquet files (the contract's ``*.parquet``; names starting with ``.`` or ``_`` skipped)."""
    directory = curated_dir / hour_partition(hour)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if p.is_file() and not p.name.startswith((".", "_")))


def query(sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a fresh in-memory DuckDB (UTC, bounded memory), closed afterwards; raises duckdb.Error."""
    connection = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY, "threads": DUCKDB_THREADS})
    try:
        connection.execute("SET TimeZone = 'UTC'")  # a timestamp without a zone means UTC, on every machine
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def last_readings(files: list[Path]) -> dict[str, dict[str, Any]]:
    """vehicle_id -> {"at": datetime (UTC), and the seven signals by name}; raises duckdb.Error on a damaged file."""
    if not files:
        return {}
    rows = query(LAST_READINGS_SQL, {"files": [str(f) for f in files]})
    # Instants come back as microseconds: exact, and no per-row time-zone conversion in the client.
    return {vehicle_id: {"at": EPOCH + timedelta(microseconds=at_us), **reading} for vehicle_id, at_us, reading in rows}
