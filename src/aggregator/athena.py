"""Glue/Athena DDL for the bucket's ``raw/`` and ``curated/`` trees, with partition projection.

    python -m src.aggregator.athena [--bucket NAME] [--database telemetry] [--table-prefix P] [--since 2026]
    python scripts/athena_ddl.py ...                    # the same command

Prints three statements, to run one at a time in Athena (engine version 3): the database,
then an external table over each tree, both partitioned by the hour's ``year``, ``month``,
``day`` and ``hour`` (``int``; the UTC hour a reading was *received*, as the layout is) with
partition projection: Athena computes each hour's S3 prefix from the table's properties,
so no ``MSCK REPAIR TABLE`` or ``ALTER TABLE ADD PARTITION`` is ever needed. Years are
projected from ``--since`` to ``--until`` (default ``--since`` + 9); extend the range with
``ALTER TABLE ... SET TBLPROPERTIES ('projection.year.range' = ...)`` before it runs out, or
later hours return no rows (Athena projects only the range, silently).

* ``curated_readings`` (``curated/``, zstd Parquet): the columns of
  :data:`src.aggregator.queries.COLUMNS`, in order, DuckDB types mapped to Hive DDL types
  (:data:`ATHENA_TYPES`). The Parquet timestamps are INT64 microseconds adjusted to UTC;
  Athena reads them as ``timestamp`` holding the UTC wall clock, rounded to milliseconds.
* ``raw_readings`` (``raw/``, JSON lines, gzipped or not): the stored record through the
  OpenX JSON SerDe with malformed lines ignored (they read as all-NULL rows), the payload a
  ``struct`` of the seven signals. ``timestamp`` and ``ingest_received_at`` are ``string``:
  the Hive ``timestamp`` type expects ``YYYY-MM-DD HH:MM:SS.SSS`` text, not ISO 8601 with
  ``T``, microseconds and ``Z``, so queries convert them with ``from_iso8601_timestamp``.

The aggregates (``aggregated/``) get no table: they are indented JSON documents, which
Athena's JSON SerDes cannot read (one document per line only). docs/querying.md has the
queries; exit status 0, or 2 on a usage error (no bucket given nor in ``S3_BUCKET``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from src.aggregator.queries import COLUMNS
from src.common.layout import S3_CURATED_PREFIX, S3_RAW_PREFIX
from src.common.schema import SIGNALS
from src.common.settings import CommonSettings

EXIT_OK = 0
EXIT_USAGE = 2

DEFAULT_DATABASE = "telemetry"
DEFAULT_SINCE = 2026
PROJECTED_YEARS = 10
RAW_TABLE = "raw_readings"
CURATED_TABLE = "curated_readings"

ATHENA_TYPES = {"VARCHAR": "string", "DOUBLE": "double", "TIMESTAMPTZ": "timestamp"}
"""A curated column's DuckDB type -> the Hive DDL type Athena reads its Parquet column as."""

JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
TEXT_INPUT_FORMAT = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"

NAME_RE = re.compile(r"^[a-z0-9_]+$")  # Athena's database and table names: lower case, digits, underscores
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class PartitionKey:
    """One hive partition level of the layout, projected as an integer range."""

    name: str
    low: int
    high: int
    digits: int | None = None  # zero-padded to this many digits in the S3 key

    def properties(self) -> dict[str, str]:
        found = {f"projection.{self.name}.type": "integer", f"projection.{self.name}.range": f"{self.low},{self.high}"}
        if self.digits is not None:
            found[f"projection.{self.name}.digits"] = str(self.digits)
        return found


def partition_keys(since: int, until: int) -> tuple[PartitionKey, ...]:
    """``year=YYYY/month=MM/day=DD/hour=HH`` (:func:`src.common.layout.hour_partition`) as projected keys."""
    return (
        PartitionKey("year", since, until),
        PartitionKey("month", 1, 12, 2),
        PartitionKey("day", 1, 31, 2),
        PartitionKey("hour", 0, 23, 2),
    )


def athena_type(duckdb_type: str) -> str:
    """The Hive DDL type of a curated column; ValueError for a type this module does not know yet."""
    try:
        return ATHENA_TYPES[duckdb_type]
    except KeyError:
        raise ValueError(f"no Athena type known for the DuckDB type {duckdb_type!r}: add it to ATHENA_TYPES") from None


def curated_columns(columns: Sequence[tuple[str, str]] = COLUMNS) -> list[tuple[str, str]]:
    """The curated table's columns: the Parquet file's, in its order, with Athena types."""
    return [(name, athena_type(kind)) for name, kind in columns]


def raw_columns() -> list[tuple[str, str]]:
    """The raw table's columns: the record's scalar fields as strings, then the payload struct."""
    payload = ",".join(f"{signal}:double" for signal in SIGNALS)
    return [(name, "string") for name, _ in COLUMNS if name not in SIGNALS] + [("payload", f"struct<{payload}>")]


def location(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}"


def location_template(bucket: str, prefix: str, keys: Sequence[PartitionKey]) -> str:
    """``s3://bucket/prefix/year=${year}/.../hour=${hour}/``: where Athena looks for one projected hour."""
    return location(bucket, prefix) + "".join(f"{key.name}=${{{key.name}}}/" for key in keys)


def table_properties(bucket: str, prefix: str, keys: Sequence[PartitionKey]) -> dict[str, str]:
    properties = {"projection.enabled": "true"}
    for key in keys:
        properties.update(key.properties())
    properties["storage.location.template"] = location_template(bucket, prefix, keys)
    return properties


def _quote(name: str) -> str:
    return f"`{name}`"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_table(
    qualified_name: str,
    columns: Sequence[tuple[str, str]],
    keys: Sequence[PartitionKey],
    storage: str,
    table_location: str,
    properties: dict[str, str],
) -> str:
    """``CREATE EXTERNAL TABLE``: names in backticks (``timestamp`` is a DDL keyword), one item a line."""
    column_lines = ",\n".join(f"  {_quote(name)} {kind}" for name, kind in columns)
    key_list = ", ".join(f"{_quote(key.name)} int" for key in keys)
    property_lines = ",\n".join(f"  {_literal(k)} = {_literal(v)}" for k, v in properties.items())
    return (
        f"CREATE EXTERNAL TABLE {qualified_name} (\n{column_lines}\n)\n"
        f"PARTITIONED BY ({key_list})\n"
        f"{storage}\n"
        f"LOCATION {_literal(table_location)}\n"
        f"TBLPROPERTIES (\n{property_lines}\n);"
    )


def statements(
    bucket: str,
    database: str = DEFAULT_DATABASE,
    table_prefix: str = "",
    since: int = DEFAULT_SINCE,
    until: int | None = None,
) -> list[str]:
    """The database, the raw table and the curated table, in that order."""
    keys = partition_keys(since, until if until is not None else since + PROJECTED_YEARS - 1)
    raw_storage = (
        f"ROW FORMAT SERDE {_literal(JSON_SERDE)}\n"
        f"WITH SERDEPROPERTIES ({_literal('ignore.malformed.json')} = {_literal('true')})\n"
        f"STORED AS INPUTFORMAT {_literal(TEXT_INPUT_FORMAT)}\n"
        f"OUTPUTFORMAT {_literal(TEXT_OUTPUT_FORMAT)}"
    )
    raw = create_table(
        f"{_quote(database)}.{_quote(table_prefix + RAW_TABLE)}",
        raw_columns(),
        keys,
        raw_storage,
        location(bucket, S3_RAW_PREFIX),
        table_properties(bucket, S3_RAW_PREFIX, keys),
    )
    curated = create_table(
        f"{_quote(database)}.{_quote(table_prefix + CURATED_TABLE)}",
        curated_columns(),
        keys,
        "STORED AS PARQUET",
        location(bucket, S3_CURATED_PREFIX),
        table_properties(bucket, S3_CURATED_PREFIX, keys),
    )
    return [f"CREATE DATABASE IF NOT EXISTS {_quote(database)};", raw, curated]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.aggregator.athena", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", help="the bucket holding raw/ and curated/ (default: S3_BUCKET)")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help=f"Glue database (default {DEFAULT_DATABASE})")
    parser.add_argument("--table-prefix", default="", help="put before the table names, e.g. dev_ (default none)")
    parser.add_argument(
        "--since",
        type=int,
        default=DEFAULT_SINCE,
        metavar="YEAR",
        help=f"first projected year (default {DEFAULT_SINCE})",
    )
    parser.add_argument(
        "--until", type=int, metavar="YEAR", help=f"last projected year (default --since + {PROJECTED_YEARS - 1})"
    )
    args = parser.parse_args(argv)
    if not NAME_RE.match(args.database):
        parser.error(f"--database {args.database!r}: use lower-case letters, digits and underscores")
    if args.table_prefix and not NAME_RE.match(args.table_prefix):
        parser.error(f"--table-prefix {args.table_prefix!r}: use lower-case letters, digits and underscores")
    until = args.until if args.until is not None else args.since + PROJECTED_YEARS - 1
    if not 1000 <= args.since <= until <= 9999:
        parser.error(f"years must be four digits, --since ({args.since}) at most --until ({until})")
    args.until = until
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = CommonSettings()
    bucket = args.bucket or settings.s3_bucket
    if bucket is None:
        print(
            "error: no bucket: pass --bucket or set S3_BUCKET (it names the bucket holding raw/ and curated/)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not BUCKET_RE.match(bucket):
        print(f"error: {bucket!r} is not an S3 bucket name", file=sys.stderr)
        return EXIT_USAGE
    print("\n\n".join(statements(bucket, args.database, args.table_prefix, args.since, args.until)))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
