"""S3 objects as files DuckDB reads itself: ``read_ndjson`` and ``read_parquet`` over ``s3://`` paths, streamed.

DuckDB's own S3 support (the httpfs extension) is downloaded on first use, which this deployment
cannot do. DuckDB's Python client reads instead through an fsspec filesystem registered with a
connection: :class:`S3Files` is one over the project's blocking botocore client (the settings'
endpoint, region and credentials), made in the process that reads. Nothing is copied to disk.

Each read DuckDB makes is one GetObject of just the bytes it asks for: a batch file (gzip or not:
DuckDB decompresses ``.gz`` itself, by the name) is read whole in one read, so one request; a
large object (a Parquet file) in blocks of up to 2 MB, its footer first, several at once. DuckDB
keeps what it read in its external file cache. Every request after an object's first is pinned to
the same object by its ETag, and a body that breaks midway is resumed up to :data:`RESUMES` times.
DuckDB's ``threads`` setting is how many requests are in flight at once.

An object's size comes from the listing when :meth:`S3Files.paths` is given listed objects (as
:func:`~src.aggregator.sources.list_s3_hour` returns them), else from one HeadObject. Failures reach
DuckDB's caller as :class:`duckdb.Error` whose message names the object (a Python traceback as text).
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from fsspec import AbstractFileSystem  # type: ignore[import-untyped]

from src.aggregator.sources import RESUMES
from src.common.aws import sync_client
from src.common.settings import CommonSettings

if TYPE_CHECKING:
    import duckdb

    from src.common.aws import SyncS3Client

PROTOCOL = "s3"
"""The protocol :class:`S3Files` registers: DuckDB reads ``s3://bucket/key`` through it."""
LISTED_MTIME = datetime(2000, 1, 1, tzinfo=UTC)
"""What :meth:`S3Files.modified` says of a listed object (the listing's time is not kept). DuckDB keeps
the bytes it read in its external file cache only for a file whose time is known and not recent (one
GetObject per batch file, not one per read); it compares the time only to tell whether its cached
bytes of a path are current, and an :class:`S3Files` lives no longer than one job's connection."""
WILDCARDS = frozenset("*?[")
READ_SIZE = 1 << 20
"""Bytes taken from a body at a time while a read collects what DuckDB asked for."""


class Listed(Protocol):
    """A listed object: its key and its size (an :class:`~src.aggregator.sources.S3Object`, say)."""

    @property
    def key(self) -> str: ...

    @property
    def size(self) -> int: ...


class S3Files(AbstractFileSystem):
    """The ``s3`` filesystem DuckDB reads objects through, read only; one per connection (see :func:`registered`)."""

    protocol = PROTOCOL
    cachable = False  # fsspec would otherwise hand out one shared instance for equal arguments

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__()
        self.client: SyncS3Client = sync_client("s3", settings)
        self._entries: dict[str, dict[str, Any]] = {}

    def paths(self, bucket: str, objects: Iterable[str | Listed]) -> list[str]:
        """The paths DuckDB reads ``objects`` by, in order: keys, or listed objects whose sizes need no HeadObject."""
        paths = []
        for obj in objects:
            key = obj if isinstance(obj, str) else obj.key
            if not isinstance(obj, str):
                self._entries[f"{bucket}/{key}"] = _entry(f"{bucket}/{key}", obj.size, LISTED_MTIME)
            paths.append(f"{PROTOCOL}://{bucket}/{key}")
        return paths

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """The object's name, size and type; FileNotFoundError if there is none, OSError if S3 cannot say."""
        name = self._strip_protocol(path)
        entry = self._entries.get(name)
        if entry is None:
            from botocore.exceptions import BotoCoreError, ClientError

            bucket, key = _split(name)
            try:
                head = self.client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    raise FileNotFoundError(f"{PROTOCOL}://{name}: no such object") from None
                raise OSError(f"{PROTOCOL}://{name}: {exc}") from None
            except BotoCoreError as exc:
                raise OSError(f"{PROTOCOL}://{name}: {exc}") from None
            entry = self._entries[name] = _entry(name, head["ContentLength"], head["LastModified"])
        return entry

    def exists(self, path: str, **kwargs: Any) -> bool:
        """Whether the object exists; unlike fsspec's, an error other than "no such object" is raised, not False."""
        try:
            self.info(path)
        except FileNotFoundError:
            return False
        return True

    def glob(self, path: str, maxdepth: int | None = None, **kwargs: Any) -> list[str]:
        """DuckDB expands every path it is given: an object's path names just that object (if it exists).

        A pattern matches nothing (list the objects instead): DuckDB, finding no object at a path, also
        tries ``<path>/**/*.json`` before it reports that no file matches the path.
        """
        if WILDCARDS.intersection(path):
            return []
        return [self._strip_protocol(path)] if self.exists(path) else []

    def modified(self, path: str) -> datetime:
        mtime: datetime = self.info(path)["mtime"]
        return mtime

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> ObjectFile:
        if mode != "rb":
            raise NotImplementedError(f"{PROTOCOL}://{path}: read only, cannot open with mode {mode!r}")
        name = self._strip_protocol(path)
        bucket, key = _split(name)
        return ObjectFile(self.client, bucket, key, self.info(name)["size"])


class ObjectFile(io.RawIOBase):
    """One object's bytes, read where DuckDB asks: each read is one GetObject of just the bytes asked for.

    DuckDB reads one handle from several threads at once (blocks of a few MB), each a ``seek`` then
    a ``read`` on its own thread, or a ``read`` where the last one ended. So a read keeps no body
    open between calls, and a seek is remembered for the thread that made it as well as for all.
    """

    def __init__(self, client: SyncS3Client, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self.client, self.bucket, self.key, self.size = client, bucket, key, size
        self.position = 0
        self._seeks = threading.local()  # this thread's last seek, not yet read from
        self._etag: str | None = None

    @property
    def url(self) -> str:
        return f"{PROTOCOL}://{self.bucket}/{self.key}"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        """Move where the next read starts (no request)."""
        target = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence] + offset
        if target < 0:
            raise ValueError(f"{self.url}: cannot seek to {target}")
        self.position = self._seeks.position = target
        return target

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes from the position (all the rest if negative); OSError naming the object if S3 fails."""
        start: int | None = getattr(self._seeks, "position", None)
        self._seeks.position = None
        if start is None:
            start = self.position
        end = self.size if size is None or size < 0 else min(self.size, start + size)
        data = self._fetch(start, end) if start < end else b""
        self.position = start + len(data)
        return data

    def _fetch(self, start: int, end: int) -> bytes:
        """The object's bytes ``start`` to ``end``: one GetObject, resumed where its body broke."""
        from botocore.exceptions import (
            BotoCoreError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )
        from urllib3.exceptions import HTTPError

        chunks: list[bytes] = []
        at = start
        for attempt in range(RESUMES + 1):
            body = self._get(at, end)
            try:
                while at < end and (data := body.read(min(end - at, READ_SIZE))):
                    chunks.append(data)
                    at += len(data)
                if at < end:
                    raise OSError(f"{self.url}: body ended at byte {at:,} of {self.size:,}")
                return b"".join(chunks)
            except (ResponseStreamingError, ReadTimeoutError, IncompleteReadError, ConnectionError) as exc:
                if attempt == RESUMES:
                    raise OSError(
                        f"{self.url}: body broke at byte {at:,} of {self.size:,} {RESUMES + 1} times, last: {exc}"
                    ) from None
            except (BotoCoreError, HTTPError) as exc:  # a checksum that does not match, say
                raise OSError(f"{self.url}: {exc}") from None
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection may fail again: nothing to save
                    body.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, start: int, end: int) -> Any:
        """The body of a GetObject of bytes ``start`` to ``end``, pinned to the object read so far."""
        from botocore.exceptions import BotoCoreError, ClientError

        options: dict[str, str] = {}
        whole = start == 0 and end == self.size
        if whole:
            options["ChecksumMode"] = "ENABLED"  # botocore checks a whole body against the checksum stored at upload
        else:
            options["Range"] = f"bytes={start}-{end - 1}"
        if self._etag is not None:
            options["IfMatch"] = self._etag
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key, **options)  # type: ignore[arg-type]
        except ClientError as exc:
            code = _error_code(exc)
            if code == "NoSuchKey":
                raise FileNotFoundError(f"{self.url}: no such object (deleted since it was listed?)") from None
            if code == "PreconditionFailed":
                raise OSError(f"{self.url}: replaced while it was being read") from None
            raise OSError(f"{self.url}: {exc}") from None
        except BotoCoreError as exc:
            raise OSError(f"{self.url}: {exc}") from None
        total = response["ContentLength"] if whole else int(response["ContentRange"].rsplit("/", 1)[1])
        if total != self.size:
            response["Body"].close()
            raise OSError(f"{self.url}: {total:,} bytes, not the {self.size:,} listed: replaced since it was listed")
        self._etag = response["ETag"]
        return response["Body"]


@contextlib.contextmanager
def registered(connection: duckdb.DuckDBPyConnection, settings: CommonSettings) -> Iterator[S3Files]:
    """``s3://`` paths readable by ``connection`` while inside; give DuckDB the paths :meth:`S3Files.paths` makes."""
    files = S3Files(settings)
    connection.register_filesystem(files)
    try:
        yield files
    finally:
        with contextlib.suppress(Exception):  # the connection may have been closed inside
            connection.unregister_filesystem(PROTOCOL)


def exists(settings: CommonSettings, bucket: str, key: str) -> bool:
    """Whether the object exists (one HeadObject); OSError if S3 cannot say."""
    return S3Files(settings).exists(f"{bucket}/{key}")


def _entry(name: str, size: int, mtime: datetime) -> dict[str, Any]:
    return {"name": name, "size": size, "type": "file", "mtime": mtime}


def _split(name: str) -> tuple[str, str]:
    bucket, _, key = name.partition("/")
    if not bucket or not key:
        raise FileNotFoundError(f"{PROTOCOL}://{name}: not a bucket and key")
    return bucket, key


def _error_code(exc: Any) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code
