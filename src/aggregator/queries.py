"""The hourly job's SQL, in one place: raw JSONL parsed, a curated hour written, its schema.

Run by DuckDB (:mod:`src.aggregator.curated`). Values go in as parameters (``?``); the only
text spliced in is the output path, quoted by :func:`sql_string`.
"""

from __future__ import annotations

from src.common.schema import SIGNALS

KEY = ("vehicle_id", "can_id", "timestamp")
"""A reading's natural key."""

COLUMNS: tuple[tuple[str, str], ...] = (
    ("vehicle_id", "VARCHAR"),
    ("can_id", "VARCHAR"),
    ("timestamp", "TIMESTAMPTZ"),
    ("ingest_received_at", "TIMESTAMPTZ"),
    *((signal, "DOUBLE") for signal in SIGNALS),
)
"""The curated hour's columns and their DuckDB types (timestamps: UTC, microseconds)."""

_PAYLOAD = ", ".join(f"{signal} DOUBLE" for signal in SIGNALS)
_RAW_COLUMNS = (
    "{'timestamp': 'VARCHAR', 'vehicle_id': 'VARCHAR', 'can_id': 'VARCHAR', "
    f"'ingest_received_at': 'VARCHAR', 'payload': 'STRUCT({_PAYLOAD})'}}"
)

_READ_RAW = (
    f"read_ndjson(?, columns = {_RAW_COLUMNS}, format = 'newline_delimited', ignore_errors = true, filename = true)"
)


def _instant(column: str) -> str:
    """An ISO 8601 text as a UTC instant; NULL without a zone (its instant would depend on the machine)."""
    return (
        f"CASE WHEN suffix({column}, 'Z') OR regexp_matches({column}, '[+-]\\d\\d:?\\d\\d$') "
        f"THEN try_cast({column} AS TIMESTAMPTZ) END"
    )


_IS_READING = " AND ".join(
    [f'"{name}" IS NOT NULL' for name in ("vehicle_id", "can_id", "timestamp", "ingest_received_at")]
    + [f"isfinite({signal})" for signal in SIGNALS]
)

PARSE_RAW = f"""
CREATE OR REPLACE TEMP TABLE parsed AS
SELECT * EXCLUDE (filename), CASE WHEN NOT is_reading THEN filename END AS filename
FROM (
    SELECT *, coalesce({_IS_READING}, false) AS is_reading
    FROM (
        SELECT
            vehicle_id, can_id,
            {_instant('"timestamp"')} AS "timestamp",
            {_instant("ingest_received_at")} AS ingest_received_at,
            {", ".join(f"payload.{signal} AS {signal}" for signal in SIGNALS)},
            filename
        FROM {_READ_RAW}
    )
)
"""
"""Every non-blank line of the files (the parameter: their paths), typed; a line that is not
valid JSON or lacks a field, or whose signal is not a finite number, has ``is_reading`` false
and keeps its file's name (a reading does not: the table stays small)."""

COUNT_PARSED = "SELECT count(*), count(*) FILTER (WHERE is_reading) FROM parsed"

SKIPS_BY_FILE = """
SELECT filename, count(*) FROM parsed WHERE NOT is_reading GROUP BY filename ORDER BY filename LIMIT ?
"""

_CURATED_SELECT = f"""
SELECT vehicle_id, can_id, "timestamp", ingest_received_at, {", ".join(SIGNALS)}
FROM parsed
WHERE is_reading
QUALIFY row_number() OVER (
    PARTITION BY vehicle_id, can_id, "timestamp"
    ORDER BY ingest_received_at, {", ".join(SIGNALS)}
) = 1
ORDER BY vehicle_id, "timestamp", can_id
"""
"""One row per natural key, the copy received first (ties broken by the values, so reruns agree:
copies that tie on those too are the same row); sorted so that one vehicle's rows are contiguous."""


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def copy_curated(path: str) -> str:
    """Write the curated rows of ``parsed`` to ``path`` as zstd Parquet; the statement returns the row count."""
    return f"COPY ({_CURATED_SELECT}) TO {sql_string(path)} (FORMAT parquet, COMPRESSION zstd)"


ROLLUP = f"""
SELECT
    vehicle_id,
    count(*) AS message_count,
    {", ".join(f"min({s}), max({s}), avg({s}::DECIMAL(18, 6))::DOUBLE" for s in SIGNALS)}
FROM read_parquet(?)
GROUP BY vehicle_id
ORDER BY vehicle_id
"""
"""Per vehicle: the count, then min, max and mean of each signal, over curated files (the parameter:
their paths). The mean is summed exactly, in decimals at the 6 places the aggregate keeps, so it
does not depend on the order rows are added in, nor on the engine."""
