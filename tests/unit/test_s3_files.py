"""DuckDB reads S3 objects itself through s3_files: batch objects (gzip and plain) and Parquet, from moto's server."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, FlexibleChecksumError, ResponseStreamingError

from src.aggregator import s3_files
from src.aggregator.s3_files import LISTED_MTIME, ObjectFile, S3Files, registered
from src.aggregator.sources import S3Bucket, list_s3_hour
from src.common.aws import sync_client
from src.common.layout import s3_hour_prefix
from src.common.settings import CommonSettings

HOUR = datetime(2026, 1, 1, 10, tzinfo=UTC)
COLUMNS = "{'vehicle_id': 'VARCHAR', 'n': 'INTEGER'}"
READ_NDJSON = f"""
SELECT vehicle_id, n, filename
FROM read_ndjson(?, columns = {COLUMNS}, format = 'newline_delimited', ignore_errors = true, filename = true)
ORDER BY n
"""


def lines(first: int, count: int) -> bytes:
    readings = ({"vehicle_id": f"veh-{n % 7:05d}", "n": n} for n in range(first, first + count))
    return b"".join(orjson.dumps(reading) + b"\n" for reading in readings)


def put(bucket: str, key: str, body: bytes) -> None:
    sync_client("s3", CommonSettings()).put_object(Bucket=bucket, Key=key, Body=body)


@pytest.fixture
def connection() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as connection:
        yield connection


@pytest.fixture
def files(bucket: str, connection: duckdb.DuckDBPyConnection) -> Iterator[S3Files]:
    with registered(connection, CommonSettings()) as files:
        yield files


def put_hour(bucket: str) -> None:
    """Three batch objects of the hour: two gzipped, one plain; 30 readings in all."""
    prefix = s3_hour_prefix(HOUR)
    put(bucket, f"{prefix}batch-1767261600000-w1.jsonl.gz", gzip.compress(lines(0, 10)))
    put(bucket, f"{prefix}batch-1767261600001-w1.jsonl", lines(10, 10))
    put(bucket, f"{prefix}batch-1767261600002-w2.jsonl.gz", gzip.compress(lines(20, 10)))


def test_duckdb_reads_an_hours_gzip_and_plain_objects_as_listed(
    bucket: str, connection: duckdb.DuckDBPyConnection, files: S3Files
) -> None:
    """Listed objects need no HeadObject; DuckDB decompresses the .gz ones itself; filenames are the objects' URLs."""
    put_hour(bucket)
    listed = list_s3_hour(S3Bucket(bucket, CommonSettings()), HOUR)
    paths = files.paths(bucket, listed)
    assert paths == [f"s3://{bucket}/{obj.key}" for obj in listed]
    rows = connection.execute(READ_NDJSON, [paths]).fetchall()
    assert [n for _, n, _ in rows] == list(range(30))
    assert {filename for _, _, filename in rows} == set(paths)
    assert rows[0][0] == "veh-00000"
    assert files.modified(paths[0]) == LISTED_MTIME


def test_keys_without_sizes_are_looked_up(bucket: str, connection: duckdb.DuckDBPyConnection, files: S3Files) -> None:
    put_hour(bucket)
    prefix = s3_hour_prefix(HOUR)
    paths = files.paths(bucket, [f"{prefix}batch-1767261600001-w1.jsonl", f"{prefix}batch-1767261600002-w2.jsonl.gz"])
    assert [n for _, n, _ in connection.execute(READ_NDJSON, [paths]).fetchall()] == list(range(10, 30))
    assert files.modified(paths[0]) > LISTED_MTIME  # the object's own time, from HeadObject


def test_a_large_object_is_read_in_ranges_by_several_threads(
    bucket: str, connection: duckdb.DuckDBPyConnection, files: S3Files
) -> None:
    """DuckDB reads blocks of one handle from several threads at once: each read gets its own bytes."""
    body = lines(0, 120_000)  # about 5 MB: several of DuckDB's 2 MB blocks
    put(bucket, "raw/big.jsonl", body)
    put(bucket, "raw/big.jsonl.gz", gzip.compress(body, compresslevel=1))
    connection.execute("SET threads = 4")
    for key in ("raw/big.jsonl", "raw/big.jsonl.gz"):
        count, total = connection.execute(
            f"SELECT count(*), sum(n) FROM read_ndjson(?, columns = {COLUMNS}, format = 'newline_delimited')",
            [files.paths(bucket, [key])],
        ).fetchone() or (None, None)
        assert (count, total) == (120_000, sum(range(120_000)))


def test_duckdb_reads_a_parquet_object(
    bucket: str, connection: duckdb.DuckDBPyConnection, files: S3Files, tmp_path: Path
) -> None:
    """A curated hour: DuckDB reads its footer and column chunks with ranged GetObjects, on several threads."""
    local = tmp_path / "readings.parquet"
    connection.execute(
        f"COPY (SELECT 'veh-' || (i % 50) AS vehicle_id, i AS n FROM range(300000) t(i)) TO '{local}' "
        "(FORMAT parquet, ROW_GROUP_SIZE 20000)"
    )
    key = f"curated/{s3_hour_prefix(HOUR).removeprefix('raw/')}readings.parquet"
    put(bucket, key, local.read_bytes())
    assert s3_files.exists(CommonSettings(), bucket, key)
    connection.execute("SET threads = 4")
    [path] = files.paths(bucket, [key])
    row = connection.execute(
        "SELECT count(*), count(DISTINCT vehicle_id), sum(n) FROM read_parquet(?)", [path]
    ).fetchone()
    assert row == (300_000, 50, sum(range(300_000)))
    assert connection.execute("SELECT max(n) FROM read_parquet(?)", [path]).fetchone() == (299_999,)


def test_exists(bucket: str) -> None:
    put(bucket, "curated/x/readings.parquet", b"PAR1")
    assert s3_files.exists(CommonSettings(), bucket, "curated/x/readings.parquet")
    assert not s3_files.exists(CommonSettings(), bucket, "curated/y/readings.parquet")


def test_exists_raises_what_is_not_a_missing_object(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Access denied is not "no curated hour": the caller must not fall back to raw silently."""
    files = S3Files(CommonSettings())

    def denied(**kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")

    monkeypatch.setattr(files.client, "head_object", denied)
    with pytest.raises(OSError, match=rf"s3://{bucket}/k: .*403"):
        files.exists(f"s3://{bucket}/k")


def test_a_missing_object_is_an_error_naming_it(
    bucket: str, connection: duckdb.DuckDBPyConnection, files: S3Files
) -> None:
    paths = files.paths(bucket, ["raw/nothing-here.jsonl.gz"])
    with pytest.raises(duckdb.Error, match=rf'No files found that match the pattern "s3://{bucket}/raw/nothing-here'):
        connection.execute(READ_NDJSON, [paths])


def test_a_listed_object_deleted_before_it_is_read_is_an_error_naming_it(
    bucket: str, connection: duckdb.DuckDBPyConnection, files: S3Files
) -> None:
    put_hour(bucket)
    listed = list_s3_hour(S3Bucket(bucket, CommonSettings()), HOUR)
    sync_client("s3", CommonSettings()).delete_object(Bucket=bucket, Key=listed[1].key)
    with pytest.raises(duckdb.Error, match=rf"s3://{bucket}/{listed[1].key}: no such object"):
        connection.execute(READ_NDJSON, [files.paths(bucket, listed)])


def test_an_object_replaced_since_it_was_listed_is_an_error_naming_it(
    bucket: str, connection: duckdb.DuckDBPyConnection, files: S3Files
) -> None:
    put_hour(bucket)
    listed = list_s3_hour(S3Bucket(bucket, CommonSettings()), HOUR)
    put(bucket, listed[0].key, gzip.compress(lines(0, 11)))
    with pytest.raises(duckdb.Error, match=rf"s3://{bucket}/{listed[0].key}: \d+ bytes, not the .* listed"):
        connection.execute(READ_NDJSON, [files.paths(bucket, listed)])


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (gzip.compress(lines(0, 2000))[:-500], "Unexpected end of GZIP stream"),
        (b"not gzip\n", "Input is not a GZIP stream"),
    ],
)
def test_a_damaged_gzip_object_is_an_error_naming_it(
    bucket: str, connection: duckdb.DuckDBPyConnection, files: S3Files, body: bytes, error: str
) -> None:
    """Even with ignore_errors (which skips bad lines), a damaged .gz fails the read at once, naming the object."""
    key = "raw/batch-1767261600000-w1.jsonl.gz"
    put(bucket, key, body)
    with pytest.raises(duckdb.Error, match=rf"{error}: s3://{bucket}/{key}"):
        connection.execute(READ_NDJSON, [files.paths(bucket, [key])])


def test_a_broken_body_is_resumed_where_it_broke(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    body = lines(0, 3000)
    put(bucket, "raw/a.jsonl", body)
    files = S3Files(CommonSettings())
    get, ranges = files.client.get_object, []

    def breaking_get(**kwargs: Any) -> dict[str, Any]:
        ranges.append((kwargs.get("Range"), kwargs.get("IfMatch")))
        response = get(**kwargs)
        if len(ranges) == 1:
            response["Body"] = BreaksAfter(response["Body"], 1000)
        return response

    monkeypatch.setattr(files.client, "get_object", breaking_get)
    monkeypatch.setattr(s3_files, "READ_SIZE", 1000)
    with files.open(f"s3://{bucket}/raw/a.jsonl") as handle:
        assert handle.read() == body
    etag = sync_client("s3", CommonSettings()).head_object(Bucket=bucket, Key="raw/a.jsonl")["ETag"]
    assert ranges == [(None, None), (f"bytes=1000-{len(body) - 1}", etag)]


def test_a_body_that_keeps_breaking_is_an_error_naming_the_object(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    put(bucket, "raw/a.jsonl", lines(0, 100))
    files = S3Files(CommonSettings())
    get = files.client.get_object

    def always_breaking_get(**kwargs: Any) -> dict[str, Any]:
        response: dict[str, Any] = get(**kwargs)
        return {**response, "Body": BreaksAfter(response["Body"], 0)}

    monkeypatch.setattr(files.client, "get_object", always_breaking_get)
    with files.open(f"s3://{bucket}/raw/a.jsonl") as handle, pytest.raises(OSError, match=r"byte 0 .* 4 times"):
        handle.read()


def test_an_object_replaced_while_it_is_read_is_an_error_naming_it(bucket: str) -> None:
    """Every GetObject after an object's first is pinned to the same object by its ETag."""
    put(bucket, "raw/a.parquet", b"0123456789")
    files = S3Files(CommonSettings())
    with files.open(f"s3://{bucket}/raw/a.parquet") as handle:
        assert handle.read(4) == b"0123"
        put(bucket, "raw/a.parquet", b"abcdefghij")  # same size, other bytes
        with pytest.raises(OSError, match=rf"s3://{bucket}/raw/a.parquet: replaced while it was being read"):
            handle.read()


class Broken:
    """A body that fails at once with ``error``, or ends (returns no bytes) if there is none."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def read(self, size: int) -> bytes:
        if self.error is not None:
            raise self.error
        return b""

    def close(self) -> None:
        pass


def fail(error: Exception) -> Any:
    def failing(**kwargs: Any) -> None:
        raise error

    return failing


@pytest.mark.parametrize(
    ("operation", "replacement", "message"),
    [
        ("head_object", fail(EndpointConnectionError(endpoint_url="http://s3")), "Could not connect"),
        ("get_object", fail(EndpointConnectionError(endpoint_url="http://s3")), "Could not connect"),
        ("get_object", fail(ClientError({"Error": {"Code": "AccessDenied"}}, "GetObject")), "AccessDenied"),
        (
            "get_object",
            lambda **kw: {
                "Body": Broken(FlexibleChecksumError(error_msg="CRC32 mismatch")),
                "ContentLength": 10,
                "ETag": "e",
            },
            "CRC32 mismatch",
        ),
        ("get_object", lambda **kw: {"Body": Broken(None), "ContentLength": 10, "ETag": "e"}, "ended at byte 0 of 10"),
    ],
)
def test_s3_failures_are_errors_naming_the_object(
    bucket: str, monkeypatch: pytest.MonkeyPatch, operation: str, replacement: Any, message: str
) -> None:
    put(bucket, "raw/a.jsonl", b"0123456789")
    files = S3Files(CommonSettings())
    monkeypatch.setattr(files.client, operation, replacement)
    with pytest.raises(OSError, match=rf"s3://{bucket}/raw/a.jsonl: .*{message}"):
        files.open(f"s3://{bucket}/raw/a.jsonl").read()


class BreaksAfter:
    """A body whose connection breaks once ``good`` bytes have been read."""

    def __init__(self, body: Any, good: int) -> None:
        self.body, self.left = body, good

    def read(self, size: int) -> bytes:
        if self.left <= 0:
            raise ResponseStreamingError(error="connection reset")
        data: bytes = self.body.read(min(size, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.body.close()


def test_the_file_seeks_like_a_file(bucket: str) -> None:
    put(bucket, "raw/a.jsonl", b"0123456789")
    files = S3Files(CommonSettings())
    with files.open(f"s3://{bucket}/raw/a.jsonl") as handle:
        assert isinstance(handle, ObjectFile) and handle.readable() and handle.seekable()
        assert handle.read(3) == b"012" and handle.tell() == 3
        assert handle.seek(-2, io.SEEK_END) == 8 and handle.read(5) == b"89"
        assert handle.read(1) == b""
        assert handle.seek(-5, io.SEEK_CUR) == 5 and handle.read() == b"56789"
        with pytest.raises(ValueError, match="cannot seek to -1"):
            handle.seek(-1)
    assert files.size(f"s3://{bucket}/raw/a.jsonl") == 10


def test_what_it_does_not_do(bucket: str, connection: duckdb.DuckDBPyConnection, files: S3Files) -> None:
    """Read only, no wildcards (list the objects instead), one registration per connection at a time."""
    with pytest.raises(NotImplementedError, match="read only"):
        files.open(f"s3://{bucket}/raw/a.jsonl", "wb")
    put(bucket, "raw/a.jsonl", lines(0, 1))
    with pytest.raises(duckdb.Error, match=rf'No files found that match the pattern "s3://{bucket}/raw/\*.jsonl"'):
        connection.execute("SELECT * FROM read_ndjson(?)", [f"s3://{bucket}/raw/*.jsonl"])
    with pytest.raises(FileNotFoundError, match="not a bucket and key"):
        files.info(f"s3://{bucket}")
    with pytest.raises(duckdb.Error, match="already been registered"), registered(connection, CommonSettings()):
        pass
    assert connection.list_filesystems() == ["s3"]


def test_leaving_unregisters(bucket: str, connection: duckdb.DuckDBPyConnection) -> None:
    with registered(connection, CommonSettings()):
        assert connection.list_filesystems() == ["s3"]
    assert connection.list_filesystems() == []
    with registered(connection, CommonSettings()):  # and a connection closed inside is no error on leaving
        connection.close()
