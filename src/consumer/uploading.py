"""Copies of the durable batch files in S3, made beside the SQS path, never in it.

Each submitted file is uploaded to ``raw/<hive path>/<file name>[.gz]`` with Content-MD5,
retried (bounded backoff, full jitter) until it succeeds; nothing local is ever deleted
here. Uploads left at shutdown or lost in a crash are found by :meth:`Uploader.catch_up`
at the next start. gzip uses ``mtime=0``: a file always compresses to the same bytes.
Why: docs/architecture.md, "The S3 tier".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gzip
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from src.common.aws import S3Client
from src.common.layout import S3_RAW_PREFIX, hour_partitions, partition_batch_files, s3_batch_name, s3_raw_key
from src.common.retry import Backoff
from src.consumer.metrics import UploadStats

log = logging.getLogger(__name__)

GZIP_LEVEL = 6
"""zlib's default (costs and ratios: docs/performance.md, "S3 tier")."""
UPLOAD_BACKOFF_BASE_S = 0.5
UPLOAD_BACKOFF_CAP_S = 30.0

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class Body:
    """What one PutObject sends: the (possibly compressed) bytes and their Content-MD5."""

    data: bytes
    content_md5: str
    content_type: str


def read_body(path: Path, gzipped: bool) -> Body:
    """The file's bytes, gzip-compressed if asked, with the base64 MD5 S3 checks them against."""
    data = path.read_bytes()
    if gzipped:
        data = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
    return Body(data, digest, "application/gzip" if gzipped else "application/x-ndjson")


class Uploader:
    """A queue of local batch files and the tasks that copy them to S3.

    ``submit`` is synchronous and never blocks, so the flush path can call it freely; a
    file already waiting or being uploaded is not queued twice.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        raw_dir: Path,
        *,
        gzipped: bool,
        concurrency: int,
        stats: UploadStats | None = None,
        backoff_factory: Callable[[], Backoff] = lambda: Backoff(UPLOAD_BACKOFF_BASE_S, UPLOAD_BACKOFF_CAP_S),
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.raw_dir = raw_dir
        self.gzipped = gzipped
        self.concurrency = concurrency
        self.stats = stats or UploadStats()
        self._backoff_factory = backoff_factory
        self._sleep = sleep
        self._queue: asyncio.Queue[Path] = asyncio.Queue()
        self._pending: set[Path] = set()
        self._workers: list[asyncio.Task[None]] = []

    @property
    def pending(self) -> int:
        """Files queued or being uploaded."""
        return len(self._pending)

    def key_for(self, path: Path) -> str:
        return s3_raw_key(path.relative_to(self.raw_dir), self.gzipped)

    def submit(self, paths: Iterable[Path]) -> None:
        """Queue ``paths`` (durable batch files under ``raw_dir``) for upload."""
        for path in paths:
            if path not in self._pending:
                self._pending.add(path)
                self._queue.put_nowait(path)

    def start(self) -> None:
        """Start the upload tasks on the running loop."""
        self._workers = [asyncio.create_task(self._work(i), name=f"uploader-{i}") for i in range(self.concurrency)]

    async def drain(self, timeout_s: float) -> None:
        """Give queued uploads up to ``timeout_s`` to finish, then stop the tasks.

        Whatever is left is not lost: the files are on disk and the next start's
        :meth:`catch_up` finds them missing in S3.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._pending:
            log.warning(
                "stopping with %d upload(s) pending; the next start uploads them (catch-up)", len(self._pending)
            )

    async def catch_up(self) -> int:
        """Queue every local batch file S3 lacks (either key form); the number queued.

        One ListObjectsV2 (paginated) per local hour partition. A listing that fails is
        retried with backoff like an upload: until it succeeds, those files are simply
        not yet known to be missing.
        """
        partitions = await asyncio.to_thread(hour_partitions, self.raw_dir)
        queued = 0
        for partition in partitions:
            files = await asyncio.to_thread(partition_batch_files, partition)
            if not files:
                continue
            present = await self._retrying(f"list of {partition}", functools.partial(self._names_in_s3, partition))
            missing = [f for f in files if f.name not in present and f not in self._pending]
            self.submit(missing)
            queued += len(missing)
        log.info(
            "upload catch-up: %d local partition(s) checked, %d file(s) missing in S3 queued", len(partitions), queued
        )
        return queued

    async def _names_in_s3(self, partition: Path) -> set[str]:
        prefix = f"{S3_RAW_PREFIX}{partition.relative_to(self.raw_dir).as_posix()}/"
        names: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = s3_batch_name(item["Key"])
                if name is not None:
                    names.add(name)
        return names

    async def _work(self, index: int) -> None:
        while True:
            path = await self._queue.get()
            try:
                await self._upload(path)
            finally:
                self._queue.task_done()
            # Not reached when cancelled mid-upload: the file stays counted as pending.
            self._pending.discard(path)

    async def _upload(self, path: Path) -> None:
        key = self.key_for(path)
        try:
            body = await self._retrying(f"upload of {key}", functools.partial(self._put, path, key))
        except FileNotFoundError:
            # Only a person or another tool removes a batch file before it is in S3.
            self.stats.uploads_abandoned += 1
            log.error("upload of %s abandoned: the local file is gone", path)
            return
        self.stats.uploads += 1
        self.stats.upload_bytes += len(body.data)

    async def _put(self, path: Path, key: str) -> Body:
        body = await asyncio.to_thread(read_body, path, self.gzipped)  # the event loop also serves SQS
        await self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body.data,
            ContentMD5=body.content_md5,
            ContentType=body.content_type,
        )
        return body

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` until it succeeds (bounded backoff, full jitter); a vanished file is not retried."""
        backoff = self._backoff_factory()
        while True:
            try:
                return await call()
            except FileNotFoundError:
                raise
            except Exception as exc:
                self.stats.upload_failures += 1
                delay = backoff.next_delay()
                log.warning("S3 %s failed (attempt %d, %r); retrying in %.1f s", what, backoff.attempt, exc, delay)
                await self._sleep(delay)
