"""The Athena DDL: the curated table's columns are the Parquet file's, the projections are the S3 layout's."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.aggregator import athena, queries
from src.aggregator.curated import compact_hour, connect
from src.common.layout import batch_file_name, hour_partition, s3_curated_prefix, s3_hour_prefix
from src.common.schema import SIGNALS
from src.common.settings import CommonSettings
from tests.factories import reading_dict

BUCKET = "telemetry-dev"
HOUR = datetime(2026, 1, 5, 8, tzinfo=UTC)  # one-digit month and day: the digits must pad them


def raw_record(vehicle_id: str, second: int) -> dict[str, Any]:
    taken = HOUR + timedelta(seconds=second, microseconds=123456)
    return reading_dict(vehicle_id, taken, received=taken + timedelta(milliseconds=40))


@pytest.fixture
def curated_parquet() -> Path:
    """A curated hour built by the hourly job's own compaction from a small raw hour."""
    settings = CommonSettings()
    directory = settings.raw_dir / hour_partition(HOUR)
    directory.mkdir(parents=True)
    lines = [raw_record(f"veh-{v:05d}", s) for v in range(3) for s in range(4)]
    ms = int(HOUR.timestamp() * 1000) + 1000
    (directory / batch_file_name(ms, "a_000001")).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    with connect(settings.curated_dir, 256) as connection:
        result = compact_hour(connection, settings.raw_dir, settings.curated_dir, HOUR)
    assert result.path is not None and result.rows == 12
    return result.path


def statement(text: str, table: str) -> str:
    """The ``CREATE EXTERNAL TABLE`` of ``table`` in the printed DDL."""
    match = re.search(rf"CREATE EXTERNAL TABLE `telemetry`\.`{table}` \(.*?\n\);", text, re.S)
    assert match, f"no CREATE EXTERNAL TABLE for {table}"
    return match.group(0)


def columns(ddl: str) -> list[tuple[str, str]]:
    body = re.search(r"^CREATE EXTERNAL TABLE [^\n]+ \(\n(.*?)\n\)\nPARTITIONED BY", ddl, re.S)
    assert body
    return [(m["name"], m["type"]) for m in re.finditer(r"^  `(?P<name>\w+)` (?P<type>.+?),?$", body.group(1), re.M)]


def partition_columns(ddl: str) -> list[tuple[str, str]]:
    match = re.search(r"^PARTITIONED BY \((.*)\)$", ddl, re.M)
    assert match
    return re.findall(r"`(\w+)` (\w+)", match.group(1))


def properties(ddl: str) -> dict[str, str]:
    body = re.search(r"TBLPROPERTIES \(\n(.*?)\n\);", ddl, re.S)
    assert body
    return dict(re.findall(r"^  '([^']+)' = '([^']*)',?$", body.group(1), re.M))


def location(ddl: str) -> str:
    match = re.search(r"^LOCATION '([^']+)'$", ddl, re.M)
    assert match
    return match.group(1)


def printed(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert athena.main(["--bucket", BUCKET, *args]) == 0
    return capsys.readouterr().out


def athena_type_of(field: pa.Field) -> str:
    """The Hive DDL type under which Athena reads a Parquet column of this Arrow type correctly."""
    if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
        return "string"
    if pa.types.is_float64(field.type):
        return "double"
    if pa.types.is_timestamp(field.type) and field.type.tz == "UTC":
        return "timestamp"
    raise AssertionError(f"{field.name}: {field.type} has no Athena type in this test")


def test_the_curated_table_has_the_parquet_files_columns_in_order_with_their_types(
    curated_parquet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = pq.read_schema(curated_parquet)
    ddl = statement(printed(capsys), "curated_readings")
    assert columns(ddl) == [(field.name, athena_type_of(field)) for field in schema]
    assert [name for name, _ in columns(ddl)] == [name for name, _ in queries.COLUMNS]
    assert "STORED AS PARQUET" in ddl


def test_the_curated_timestamps_are_int64_micros_adjusted_to_utc_not_int96(curated_parquet: Path) -> None:
    """What Athena's ``timestamp`` reads as an instant: INT64, TIMESTAMP(isAdjustedToUTC=true, MICROS)."""
    parquet_schema = pq.ParquetFile(curated_parquet).schema
    by_name = {parquet_schema.column(i).name: parquet_schema.column(i) for i in range(len(parquet_schema))}
    stamps = [by_name[name] for name, kind in queries.COLUMNS if kind == "TIMESTAMPTZ"]
    assert [column.name for column in stamps] == ["timestamp", "ingest_received_at"]
    for column in stamps:
        assert column.physical_type == "INT64"
        logical = orjson.loads(column.logical_type.to_json())
        assert (logical["Type"], logical["isAdjustedToUTC"], logical["timeUnit"]) == ("Timestamp", True, "microseconds")


@pytest.mark.parametrize(
    ("table", "prefix_of"), [("raw_readings", s3_hour_prefix), ("curated_readings", s3_curated_prefix)]
)
def test_the_projection_finds_every_hour_where_the_pipeline_puts_it(
    table: str, prefix_of: Callable[[datetime], str], capsys: pytest.CaptureFixture[str]
) -> None:
    ddl = statement(printed(capsys, "--since", "2025", "--until", "2030"), table)
    props = properties(ddl)
    keys = ["year", "month", "day", "hour"]
    assert partition_columns(ddl) == [(key, "int") for key in keys]
    assert props["projection.enabled"] == "true"
    assert {key: props[f"projection.{key}.type"] for key in keys} == dict.fromkeys(keys, "integer")
    assert [props[f"projection.{key}.range"] for key in keys] == ["2025,2030", "1,12", "1,31", "0,23"]
    assert [props.get(f"projection.{key}.digits") for key in keys] == [None, "2", "2", "2"]
    template = props["storage.location.template"]
    assert re.findall(r"\$\{(\w+)\}", template) == keys
    assert template.startswith(location(ddl)) and location(ddl) == f"s3://{BUCKET}/{table.split('_')[0]}/"
    assert template.endswith("/")
    for hour in (HOUR, datetime(2030, 12, 31, 23, tzinfo=UTC), datetime(2025, 1, 1, 0, tzinfo=UTC)):
        values = {"year": hour.year, "month": hour.month, "day": hour.day, "hour": hour.hour}
        projected = template
        for key, value in values.items():
            digits = int(props.get(f"projection.{key}.digits", "1"))
            projected = projected.replace(f"${{{key}}}", f"{value:0{digits}d}")
        assert projected == f"s3://{BUCKET}/" + prefix_of(hour)


def test_the_partition_columns_are_what_duckdb_reads_from_the_local_tree(curated_parquet: Path) -> None:
    """The same names locally (hive partitioning) as in Athena, and one integer WHERE clause selects the hour.

    DuckDB types ``month=01`` as VARCHAR (``01`` is not how an integer prints) but compares it
    with ``1`` as a number; ``hive_types`` makes the four keys integers outright.
    """
    glob = str(curated_parquet.parents[4] / "**" / "*.parquet")
    where = f"year = {HOUR.year} AND month = {HOUR.month} AND day = {HOUR.day} AND hour = {HOUR.hour}"
    typed = "{'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}"
    with duckdb.connect() as connection:
        (count,) = connection.execute(
            f"SELECT count(*) FROM read_parquet(?, hive_partitioning = true) WHERE {where}", [glob]
        ).fetchall()[0]
        keys = connection.execute(
            f"SELECT DISTINCT year, month, day, hour FROM read_parquet(?, hive_types = {typed})",
            [glob],
        ).fetchall()
    assert count == 12
    assert keys == [(HOUR.year, HOUR.month, HOUR.day, HOUR.hour)]


def test_the_raw_table_reads_the_stored_record_through_the_openx_serde(capsys: pytest.CaptureFixture[str]) -> None:
    ddl = statement(printed(capsys), "raw_readings")
    assert "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'" in ddl
    assert "WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')" in ddl
    assert "STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'" in ddl
    found = dict(columns(ddl))
    record = raw_record("veh-00001", 1)
    assert set(found) == set(record)  # every field of a stored line, nothing else
    for name in ("timestamp", "ingest_received_at", "vehicle_id", "can_id"):
        assert found[name] == "string"  # ISO 8601 with T and Z: not Hive's timestamp text
    payload = re.fullmatch(r"struct<(.*)>", found["payload"])
    assert payload and payload.group(1).split(",") == [f"{signal}:double" for signal in SIGNALS]
    assert set(record["payload"]) == set(SIGNALS)


def test_main_prints_the_database_then_both_tables_for_the_settings_bucket(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_BUCKET", "fleet-data")
    assert athena.main(["--database", "fleet", "--table-prefix", "dev_"]) == 0
    out = capsys.readouterr().out
    created = re.findall(r"^CREATE (?:DATABASE IF NOT EXISTS|EXTERNAL TABLE) ([`\w.]+)", out, re.M)
    assert created == ["`fleet`", "`fleet`.`dev_raw_readings`", "`fleet`.`dev_curated_readings`"]
    assert out.count(";\n") == 3 and "s3://fleet-data/curated/" in out and "s3://fleet-data/raw/" in out
    assert "'projection.year.range' = '2026,2035'" in out  # default: ten years from 2026


def test_main_exits_2_without_a_bucket(capsys: pytest.CaptureFixture[str]) -> None:
    assert athena.main([]) == athena.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and "--bucket" in captured.err and "S3_BUCKET" in captured.err


def test_main_exits_2_for_a_name_that_is_no_bucket(capsys: pytest.CaptureFixture[str]) -> None:
    assert athena.main(["--bucket", "s3://Bad_Bucket"]) == athena.EXIT_USAGE
    assert "not an S3 bucket name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--database", "Tele-Metry"],
        ["--table-prefix", "dev-"],
        ["--since", "2030", "--until", "2029"],
        ["--since", "99"],
    ],
)
def test_bad_names_and_year_ranges_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        athena.main(["--bucket", BUCKET, *args])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_curated_column_of_an_unmapped_type_fails_loudly() -> None:
    """A new column type in queries.COLUMNS must be mapped before the DDL can be printed."""
    with pytest.raises(ValueError, match="BIGINT"):
        athena.curated_columns([("vehicle_id", "VARCHAR"), ("n", "BIGINT")])
