"""Where an hour's batch objects are in S3: a bucket, how to reach it, and the hour's listing.

:func:`list_s3_hour` lists the partition's own batch objects (gzip or plain, a batch file
present in both forms once); :class:`SourceUnreadable` is raised when S3 cannot be listed or
read. Each process makes its own S3 client; botocore is imported only when S3 is used. The
objects themselves are read by DuckDB through :mod:`src.aggregator.s3_files`.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from src.common.layout import s3_batch_name, s3_hour_prefix
from src.common.settings import CommonSettings

if TYPE_CHECKING:
    from src.common.aws import SyncS3Client

log = logging.getLogger(__name__)

RESUMES = 3
"""How often one object's body is resumed after its connection broke, before the object counts as unreadable."""
LIST_PAGE_SIZE = 1000
"""Keys per ListObjectsV2 page (S3's maximum)."""


class SourceUnreadable(RuntimeError):
    """An object that exists but could not be read completely (or the hour could not be listed)."""


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

    def __str__(self) -> str:
        return self.bucket.url(self.key)


@functools.lru_cache(maxsize=8)
def _client(pid: int, settings: CommonSettings) -> SyncS3Client:
    """One client per process and settings: ``pid`` keeps a forked child from using its parent's."""
    del pid
    from src.common.aws import sync_client

    return sync_client("s3", settings)


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
