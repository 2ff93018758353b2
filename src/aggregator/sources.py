"""Where an hour's batch files come from: local paths or S3 objects, both read as a stream of bytes.

:func:`open_source` opens either (S3 objects streamed, ``.jsonl.gz`` decompressed on the
fly, nothing copied to disk). A source listed but gone raises FileNotFoundError (the reader
skips it); anything else that stops an object from being read completely raises
:class:`SourceUnreadable`, after botocore's retries and up to :data:`RESUMES` resumes of a
broken body. Each process makes its own S3 client; botocore is imported only when S3 is used.
Design: docs/architecture.md, "Design notes: aggregator".
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import zlib
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from src.common.layout import GZIP_SUFFIX, s3_batch_name, s3_hour_prefix
from src.common.settings import CommonSettings

if TYPE_CHECKING:
    from concurrent.futures import Future

    from src.common.aws import SyncS3Client

log = logging.getLogger(__name__)

GZIP_PLAN_RATIO = 8
"""A gzip-compressed object counts as this many times its size when the hour is split into tasks,
so tasks hold about as many readings whichever the form (a conservative gzip ratio)."""
RESUMES = 3
"""How often one object's body is resumed after its connection broke, before the object counts as unreadable."""
OPEN_AHEAD = 8
"""S3 objects a worker opens ahead of the one it is reading, hiding S3's latency per request.
With the one being read, it must stay within botocore's default pool of 10 connections per client."""
LIST_PAGE_SIZE = 1000
"""Keys per ListObjectsV2 page (S3's maximum)."""


class SourceUnreadable(RuntimeError):
    """A batch file or object that exists but could not be read completely (or the hour could not be listed)."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class Opened(NamedTuple):
    """An opened source: its bytes, how many bytes it takes in storage, how many ``handle`` gives if known."""

    handle: Readable
    stored_bytes: int
    size: int | None


@dataclass(frozen=True)
class S3Bucket:
    """A bucket and how to reach it (the settings' endpoint, region and credentials)."""

    name: str
    settings: CommonSettings

    def client(self) -> SyncS3Client:
        """This process's client for the bucket's settings, made on first use."""
        return _client(os.getpid(), self.settings)

    def url(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}"


@dataclass(frozen=True)
class S3Object:
    """One listed object: where it is and its size in storage."""

    bucket: S3Bucket
    key: str
    size: int

    @property
    def name(self) -> str:
        """The key's last part, as a file name (``.gz`` kept)."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def gzipped(self) -> bool:
        return self.key.endswith(GZIP_SUFFIX)

    def __str__(self) -> str:
        return self.bucket.url(self.key)


Source = Path | S3Object
"""A batch file: a local path or an S3 object."""


@functools.lru_cache(maxsize=8)
def _client(pid: int, settings: CommonSettings) -> SyncS3Client:
    """One client per process and settings: ``pid`` keeps a forked child from using its parent's."""
    del pid
    from src.common.aws import sync_client

    return sync_client("s3", settings)


def planned_bytes(source: Source) -> int:
    """What a source weighs when the hour is split into tasks (see :data:`GZIP_PLAN_RATIO`)."""
    if isinstance(source, Path):
        try:
            return source.stat().st_size
        except FileNotFoundError:  # the reader reports it
            return 0
    return source.size * GZIP_PLAN_RATIO if source.gzipped else source.size


def open_source(source: Source) -> Opened:
    """Open a source for reading; FileNotFoundError if it is gone, :class:`SourceUnreadable` if S3 fails."""
    if isinstance(source, Path):
        handle = open(source, "rb")  # noqa: SIM115 - the caller closes it
        size = os.fstat(handle.fileno()).st_size
        return Opened(handle, size, size)
    import gzip

    stream = _ObjectStream(source)
    if source.gzipped:
        unzipped = gzip.GzipFile(fileobj=cast("Any", stream), mode="rb")  # read forwards only: seek is never called
        return Opened(_Checked(source, unzipped, stream), stream.length, None)
    return Opened(_Checked(source, stream, stream), stream.length, stream.length)


def open_in_turn(sources: Sequence[Source]) -> Generator[tuple[Source, Opened | None]]:
    """Each source with :func:`open_source`'s result (None if it vanished), in order; its errors raised in its turn.

    S3 objects are opened up to :data:`OPEN_AHEAD` ahead on threads; whatever is left open
    when the caller stops early is closed.
    """
    if not any(isinstance(source, S3Object) for source in sources):
        for source in sources:
            yield source, _open_or_none(source)
        return
    from concurrent.futures import ThreadPoolExecutor

    for source in sources:  # this process's client, made before the threads share it
        if isinstance(source, S3Object):
            source.bucket.client()
    queued = iter(sources)
    pending: deque[tuple[Source, Future[Opened | None]]] = deque()
    with ThreadPoolExecutor(OPEN_AHEAD, thread_name_prefix="open-ahead") as pool:
        try:
            while True:
                for source in islice(queued, OPEN_AHEAD + 1 - len(pending)):
                    pending.append((source, pool.submit(_open_or_none, source)))
                if not pending:
                    return
                source, future = pending.popleft()
                yield source, future.result()
        finally:
            for _, future in pending:
                if not future.cancel() and future.exception() is None and (opened := future.result()) is not None:
                    opened.handle.close()


def _open_or_none(source: Source) -> Opened | None:
    try:
        return open_source(source)
    except FileNotFoundError:
        return None


def list_s3_hour(bucket: S3Bucket, hour: datetime) -> list[S3Object]:
    """The hour's batch objects (the partition's own, compressed or not), ordered by batch file name, oldest first.

    A batch file present in both forms is read once, from the uncompressed key.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    prefix = s3_hour_prefix(hour)
    named: list[tuple[str, str, int]] = []
    try:
        pages = bucket.client().get_paginator("list_objects_v2")
        paging = pages.paginate(
            Bucket=bucket.name, Prefix=prefix, Delimiter="/", PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        )
        for page in paging:
            for item in page.get("Contents", []):
                name = s3_batch_name(item["Key"])
                if name is not None:
                    named.append((name, item["Key"], item["Size"]))
    except (BotoCoreError, ClientError) as exc:
        raise SourceUnreadable(f"cannot list {bucket.url(prefix)}: {exc}") from None
    objects: list[S3Object] = []
    last = None
    for name, key, size in sorted(named):
        if name == last:
            log.warning("%s holds the same batch file as %s; read once", bucket.url(key), objects[-1])
            continue
        objects.append(S3Object(bucket, key, size))
        last = name
    return objects


class _ObjectStream:
    """An object's bytes as sent by GetObject; a body broken midway is resumed with a ranged GetObject.

    botocore verifies the body against the checksum stored at upload, if any (``ChecksumMode``);
    a resumed body is pinned to the same object by its ETag.
    """

    def __init__(self, obj: S3Object) -> None:
        self.obj = obj
        self.client = obj.bucket.client()
        self.position = 0
        response = self._get(ChecksumMode="ENABLED")
        self.etag: str = response["ETag"]
        self.length: int = response["ContentLength"]
        self.body = response["Body"]

    def _get(self, **options: str) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.obj.bucket.name, Key=self.obj.key, **options)  # type: ignore[arg-type]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchKey" and not self.position:
                raise FileNotFoundError(str(self.obj)) from None
            raise SourceUnreadable(f"{self.obj}: {exc}") from None
        except BotoCoreError as exc:
            raise SourceUnreadable(f"{self.obj}: {exc}") from None

    def read(self, size: int = -1, /) -> bytes:
        from botocore.exceptions import IncompleteReadError, ResponseStreamingError
        from botocore.exceptions import ReadTimeoutError as BotocoreReadTimeout

        broken = (ResponseStreamingError, BotocoreReadTimeout, IncompleteReadError, ConnectionError)
        resumes = 0
        while True:
            try:
                data: bytes = self.body.read(None if size < 0 else size)
            except broken as exc:
                if resumes == RESUMES:
                    raise SourceUnreadable(
                        f"{self.obj}: body broke at byte {self.position:,} of {self.length:,} "
                        f"{RESUMES + 1} times, last: {exc}"
                    ) from None
                resumes += 1
                log.warning("%s: body broke at byte %d (%s); resuming there", self.obj, self.position, exc)
                self.close()
                self.body = self._get(Range=f"bytes={self.position}-", IfMatch=self.etag)["Body"]
                continue
            self.position += len(data)
            return data

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection may fail again: nothing to save
            self.body.close()


class _Checked:
    """A reader of an S3 object whose failures all surface as :class:`SourceUnreadable`, naming the object."""

    def __init__(self, obj: S3Object, reader: Readable, stream: _ObjectStream) -> None:
        self.obj, self.reader, self.stream = obj, reader, stream

    def read(self, size: int = -1, /) -> bytes:
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError

        try:
            return self.reader.read(size)
        except SourceUnreadable:
            raise
        except (EOFError, OSError, zlib.error) as exc:  # gzip damage (BadGzipFile is an OSError), a socket error
            raise SourceUnreadable(f"{self.obj}: {type(exc).__name__}: {exc}") from None
        except (BotoCoreError, HTTPError) as exc:  # a checksum that does not match, say
            raise SourceUnreadable(f"{self.obj}: {exc}") from None

    def close(self) -> None:
        self.reader.close()
        self.stream.close()
