"""The Spark engine equals DuckDB's: the same curated hour (counts, rows, schema, zstd, manifest) and rollup.

Skipped without pyspark or without Java. One Spark session serves the module: starting one takes
seconds, and its first query more (the JVM warming up); later ones take a second or two.
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark", reason="the Spark engine needs pyspark (pip install pyspark)")
if shutil.which("java") is None:
    pytest.skip("the Spark engine needs Java 17 or later (Debian: openjdk-17-jre-headless)", allow_module_level=True)

from pyspark.sql import SparkSession

from src.aggregator import curated, queries
from src.aggregator import spark as engine
from src.aggregator.curated import Compaction, CompactionFailed
from src.common.layout import batch_file_sizes
from src.common.schema import SIGNALS
from src.common.settings import AggregatorSettings
from tests.unit.test_aggregator_hourly_stats import HOUR, record, write_batch

pytestmark = pytest.mark.serial  # a JVM that takes both cores: not beside other tests


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """The engine's own session (no master given: local[*]), its JIT held to the quick tier for a short run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_SUBMIT_ARGS", "--driver-java-options -XX:TieredStopAtLevel=1 pyspark-shell")
        session = engine.spark_session()
    yield session
    session.stop()


def compact_both(spark: SparkSession, hour: datetime = HOUR) -> tuple[Compaction, Compaction]:
    """The hour compacted by DuckDB (into ``curated-duckdb``) and by Spark (into ``curated-spark``)."""
    settings = AggregatorSettings()
    duck_dir, spark_dir = settings.data_dir / "curated-duckdb", settings.data_dir / "curated-spark"
    with curated.connect(duck_dir, 256) as connection:
        by_duckdb = curated.compact_hour(connection, settings.raw_dir, duck_dir, hour)
    return by_duckdb, engine.compact_hour_spark(spark, settings.raw_dir, spark_dir, hour)


def rows(path: Path) -> list[tuple[object, ...]]:
    with duckdb.connect() as connection:
        query = "SELECT * FROM read_parquet(?, hive_partitioning = false)"
        return connection.execute(query, [str(path)]).fetchall()


def counts(result: Compaction) -> tuple[object, ...]:
    return result.raw_files, result.lines_read, result.lines_skipped, result.duplicates_dropped, result.rows


def readings(rng: random.Random, vehicles: int, seconds: int, hour: datetime = HOUR) -> list[dict[str, object]]:
    """Readings of two CAN ids per vehicle and second, with values of full double precision (and some
    exactly half a millionth past a rounding edge, where casting to DECIMAL(18, 6) rounds)."""
    out: list[dict[str, object]] = []
    for vehicle in range(vehicles):
        for second in range(seconds):
            for can_id in ("0x1F0", "0x2A0"):
                moment = hour + timedelta(seconds=second, milliseconds=200)
                values = {name: rng.uniform(-500.0, 500.0) for name in SIGNALS}
                values["battery_soc"] = rng.randrange(-(10**7), 10**7) / 1e7 + 5e-7
                out.append(
                    record(f"car-{vehicle:03d}", 0, **values)
                    | {
                        "can_id": can_id,
                        "timestamp": moment.isoformat().replace("+00:00", "Z"),
                        "ingest_received_at": (moment + timedelta(milliseconds=50)).isoformat(),
                    }
                )
    return out


def test_spark_curates_the_same_hour_as_duckdb(spark: SparkSession) -> None:
    """Duplicates across writers, a late copy, zones, bad lines: the same counts, rows, schema, codec and manifest."""
    first_copy = record("veh-00002", 1, soc=50.0)
    late_copy = record("veh-00002", 1, soc=10.0) | {"ingest_received_at": "2025-10-19T17:30:00.000001Z"}
    plus_two = record("veh-00001", 5) | {"timestamp": "2025-10-19T19:00:05.200+02:00"}
    same_instant = record("veh-00001", 5, soc=70.0) | {"ingest_received_at": "2025-10-19T17:00:06Z"}
    tie = record("veh-00003", 4, soc=33.0)  # received at the same time as w3's copy: the first file's wins
    write_batch(
        "batch-1760893200000-w1.jsonl",
        [
            *readings(random.Random(1), vehicles=3, seconds=20),
            first_copy,
            plus_two,
            tie,
            record("veh-00001", 7) | {"timestamp": "2025-10-19T17:00:07.200"},  # no zone: not a reading
            record("veh-00001", 8) | {"payload": {name: "NaN" for name in SIGNALS}},  # not finite
            record("veh-00001", 9) | {"vehicle_id": 42},  # a number as text, as DuckDB reads it
            b"\n",  # blank: not a line
            b"{broken\n",
        ],
    )
    write_batch(  # the same readings again (some with other values), and a copy without signals
        "batch-1760893201000-w2.jsonl",
        [*readings(random.Random(1), vehicles=2, seconds=10), late_copy, same_instant, tie | {"payload": {}}],
    )
    write_batch("batch-1760893201000-w3.jsonl", [record("veh-00003", 4, soc=34.0), b"   \n"])

    by_duckdb, by_spark = compact_both(spark)
    assert counts(by_spark) == counts(by_duckdb)
    assert (by_spark.rows, by_spark.lines_skipped) == (3 * 20 * 2 + 4, 4)
    assert by_duckdb.path is not None and by_spark.path is not None
    assert rows(by_spark.path) == rows(by_duckdb.path)
    assert pq.read_schema(by_spark.path).equals(pq.read_schema(by_duckdb.path))  # metadata aside
    assert str(pq.read_schema(by_spark.path).field("timestamp").type) == "timestamp[us, tz=UTC]"
    metadata = pq.ParquetFile(by_spark.path).metadata
    assert metadata.num_row_groups == 1
    assert {metadata.row_group(0).column(i).compression for i in range(metadata.num_columns)} == {"ZSTD"}
    manifests = [orjson.loads((r.path.parent / curated.MANIFEST_NAME).read_bytes()) for r in (by_duckdb, by_spark)]
    assert manifests[0] == manifests[1]
    assert sorted(p.name for p in by_spark.path.parent.iterdir()) == [curated.MANIFEST_NAME, curated.PARQUET_NAME]


def test_spark_rolls_up_as_duckdb_does(spark: SparkSession) -> None:
    """Counts, minima and maxima exactly; means within 1e-9 relative, over the curated files of two hours."""
    later = HOUR + timedelta(hours=1)
    write_batch("batch-1760893200000.jsonl", readings(random.Random(2), vehicles=4, seconds=60))
    write_batch("batch-1760896800000.jsonl", readings(random.Random(3), vehicles=5, seconds=30, hour=later), later)
    hours = [compact_both(spark, hour) for hour in (HOUR, later)]
    files = [by_spark.path for _, by_spark in hours if by_spark.path is not None]
    with duckdb.connect() as connection:
        expected = connection.execute(queries.ROLLUP, [[str(path) for path in files]]).fetchall()
    actual, blocks = engine.roll_up_spark(spark, files)
    assert blocks is None  # no thresholds, no analytics
    assert (
        [row[:2] for row in actual]
        == [row[:2] for row in expected]
        == [(f"car-{v:03d}", (120 if v < 4 else 0) + 60) for v in range(5)]
    )
    for got, want in zip(actual, expected, strict=True):
        for index in range(2, len(want), 3):  # min, max, mean of each signal
            assert got[index : index + 2] == want[index : index + 2]
            assert math.isclose(got[index + 2], want[index + 2], rel_tol=1e-9, abs_tol=0.0)
    assert engine.roll_up_spark(spark, []) == ([], None)


def test_a_failed_spark_compaction_keeps_the_previous_hour(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A raw file that cannot be read fails the hour, naming it; the curated hour and its directory are as before."""
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    _, before = compact_both(spark)
    assert before.path is not None
    content = before.path.read_bytes()
    listing = batch_file_sizes(AggregatorSettings().raw_dir, HOUR) | {"batch-1760893999000.jsonl": 10}
    monkeypatch.setattr(engine, "batch_file_sizes", lambda raw_dir, hour: listing)  # a file that vanished
    settings = AggregatorSettings()
    with pytest.raises(CompactionFailed, match=r"hour 2025-10-19T17: .*batch-1760893999000\.jsonl") as failure:
        engine.compact_hour_spark(spark, settings.raw_dir, settings.data_dir / "curated-spark", HOUR)
    assert failure.value.listing == listing
    assert before.path.read_bytes() == content
    assert sorted(p.name for p in before.path.parent.iterdir()) == [curated.MANIFEST_NAME, curated.PARQUET_NAME]


def test_a_compaction_spark_splits_into_two_files_fails_and_leaves_nothing(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    _, before = compact_both(spark)
    assert before.path is not None
    write_batch("batch-1760893201000.jsonl", [record(f"veh-{v:05d}", 2) for v in range(10)])
    monkeypatch.setattr(engine, "CURATED_SELECT", engine.CURATED_SELECT.replace("REPARTITION(1)", "REPARTITION(2)"))
    settings = AggregatorSettings()
    with pytest.raises(CompactionFailed, match="Spark wrote 2 data files, not 1"):
        engine.compact_hour_spark(spark, settings.raw_dir, settings.data_dir / "curated-spark", HOUR)
    assert len(rows(before.path)) == 1
    assert sorted(p.name for p in before.path.parent.iterdir()) == [curated.MANIFEST_NAME, curated.PARQUET_NAME]


def test_an_hour_of_no_readings_gives_an_empty_file_and_no_files_none(spark: SparkSession) -> None:
    by_duckdb, by_spark = compact_both(spark)
    assert by_spark.path is None and by_duckdb.path is None
    write_batch("batch-1760893200000.jsonl", [b"{broken\n"])
    by_duckdb, by_spark = compact_both(spark)
    assert counts(by_spark) == counts(by_duckdb) and by_spark.rows == 0
    assert by_spark.path is not None and rows(by_spark.path) == []


def test_the_session_is_local_utc_and_sized_for_an_hour(spark: SparkSession) -> None:
    assert spark.sparkContext.master == "local[*]"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.shuffle.partitions") == str(2 * spark.sparkContext.defaultParallelism)
    assert engine.spark_session(spark.sparkContext.master) is spark  # a second call reuses the session


def test_the_hourly_job_on_spark_writes_the_aggregate_duckdb_writes(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--engine spark` end to end: same curated rows, same aggregate (counts, min, max; means to 1e-9)."""
    from src.aggregator.hourly_stats import main
    from tests.unit.test_aggregator_hourly_stats import output

    monkeypatch.setattr(engine, "spark_session", lambda master=None: spark)  # the module's session, not a new JVM
    write_batch(
        "batch-1760893200000-a.jsonl", [record(f"veh-{v:05d}", s, soc=40 + s / 7) for v in range(3) for s in range(30)]
    )
    write_batch("batch-1760893201000-b.jsonl", [record("veh-00001", s) for s in range(5)] + [b"{broken\n"])
    assert main(["--hour", "2025-10-19T17"]) == 0
    duck_rows, duck = rows(curated_path()), output()
    assert main(["--hour", "2025-10-19T17", "--engine", "spark"]) == 0
    assert rows(curated_path()) == duck_rows
    on_spark = output()
    assert on_spark["quality"] == duck["quality"]
    for ours, theirs in zip(on_spark["vehicles"], duck["vehicles"], strict=True):
        assert ours["message_count"] == theirs["message_count"]
        for signal in SIGNALS:
            assert (ours[signal]["min"], ours[signal]["max"]) == (theirs[signal]["min"], theirs[signal]["max"])
            assert ours[signal]["avg"] == pytest.approx(theirs[signal]["avg"], rel=1e-9, abs=1e-6)
    assert "analytics" in on_spark and close(on_spark["analytics"], duck["analytics"]) == []
    assert "readings.parquet" in capsys.readouterr().out


def curated_path() -> Path:
    return AggregatorSettings().curated_dir / "year=2025/month=10/day=19/hour=17" / curated.PARQUET_NAME


def close(ours: object, theirs: object, where: str = "") -> list[str]:
    """Where two analytics blocks differ: every key and count exactly, every float to 1e-9 (relative or absolute)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        if set(ours) != set(theirs):
            return [f"{where}: keys {sorted(set(ours) ^ set(theirs))}"]
        return [d for key in ours for d in close(ours[key], theirs[key], f"{where}.{key}")]
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{where}: {len(ours)} != {len(theirs)} items"]
        return [d for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) for d in close(a, b, f"{where}[{i}]")]
    if isinstance(ours, float) and isinstance(theirs, float):
        return [] if math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-9) else [f"{where}: {ours} != {theirs}"]
    return [] if ours == theirs else [f"{where}: {ours!r} != {theirs!r}"]


@pytest.mark.parametrize("rate_ms", [200, 1000])
def test_spark_computes_the_battery_analytics_duckdb_computes(
    spark: SparkSession, tmp_path: Path, rate_ms: int
) -> None:
    """A simulated hour's analytics (sessions, steps, swings, gaps, spreads) on Spark equal DuckDB's."""
    from tests.unit.test_aggregator_analytics import TH, simulate

    duck = simulate(tmp_path, rate_ms, 900.0, n=4)  # DuckDB's blocks, by vehicle; the curated file stays
    files = sorted((tmp_path / "curated").rglob(curated.PARQUET_NAME))
    _, on_spark = engine.roll_up_spark(spark, files, TH)
    assert on_spark is not None and set(on_spark) == set(duck.blocks)
    assert [d for vid in duck.blocks for d in close(on_spark[vid], duck.blocks[vid], vid)] == []
    assert any(block["resistance"]["steps"] for block in duck.blocks.values())  # steps were compared, not only nulls


def test_spark_reads_the_at_rest_soc_spread_off_the_ocv_curve_as_duckdb_does(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Protects the cell_imbalance figure's parity: the OCV curve read backwards (a CASE per segment, clamped at its
    ends) gives the same at-rest SOC spread on Spark as on DuckDB, for resting packs at mid SOC, near full, beyond
    the curve and under load (null)."""
    from tests.unit.test_aggregator_analytics import TH, row, run

    rows = [
        row(k, current, cell_min=low, cell_max=high, vehicle=vehicle)
        for vehicle, current, low, high in (
            ("mid", 0.0, 3.690, 3.698), ("full", 0.0, 4.080, 4.100), ("beyond", 0.0, 3.200, 4.250),
            ("loaded", -30.0, 3.690, 3.740), ("varied", 0.0, 3.611, 3.733),
        )
        for k in range(400)
    ]  # fmt: skip
    duck = run(tmp_path, rows)
    _, on_spark = engine.roll_up_spark(spark, sorted(tmp_path.glob("hour-*.parquet")), TH)
    assert on_spark is not None and set(on_spark) == set(duck)
    assert [d for vid in duck for d in close(on_spark[vid], duck[vid], vid)] == []
    assert duck["varied"]["rest_soc_spread_pct"]["p50"] is not None
