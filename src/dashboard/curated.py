"""The dashboard's one query of the curated data: each vehicle's last reading of an hour.

DuckDB over the hour's Parquet files (``DATA_DIR/curated/<hive hour>/*.parquet``, the
contract's layout), the file list passed as a parameter, never spliced into the SQL. A fresh
in-memory connection per call, so calls from several worker threads never share one.
Blocking: run it in a worker thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from src.common.layout import hour_partition
from src.dashboard.live import SIGNALS

LAST_READINGS_SQL = """
WITH readings AS (
    SELECT * FROM read_parquet($files, hive_partitioning = false)
)
SELECT vehicle_id, timestamp, {signals}
FROM readings
QUALIFY row_number() OVER (PARTITION BY vehicle_id ORDER BY timestamp DESC, can_id) = 1
ORDER BY vehicle_id
""".format(signals=", ".join(SIGNALS))  # the column names are constants, never input
"""The hour's last reading per vehicle; of two at its last timestamp, the first by CAN id (as the analytics keep)."""


def hour_files(curated_dir: Path, hour: datetime) -> list[Path]:
    """The curated hour's Parquet files, by name (none before the hourly job has run)."""
    directory = curated_dir / hour_partition(hour)
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def last_readings(files: list[Path]) -> dict[str, dict[str, Any]]:
    """vehicle_id -> {"at": datetime (UTC), and the seven signals by name}; raises duckdb.Error on a damaged file."""
    if not files:
        return {}
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        rows = connection.execute(LAST_READINGS_SQL, {"files": [str(f) for f in files]}).fetchall()
    return {row[0]: {"at": row[1].astimezone(UTC), **dict(zip(SIGNALS, row[2:], strict=True))} for row in rows}
