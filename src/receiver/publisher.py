"""Getting accepted readings into SQS: a group-commit publisher and the queue it talks to.

Records of concurrent requests are sent together as v2 envelopes; envelopes above
``COMPRESS_ABOVE_BYTES`` are deflated and may carry up to ``MAX_DEFLATED_ENVELOPE_BYTES``.
A request is answered only once every envelope carrying its readings was accepted.
Why: docs/architecture.md, "Design notes: receiver"; measurements in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from src.common.aws import SQSClient, resolve_queue_url
from src.common.envelope import SQS_MAX_MESSAGE_BYTES, encode_envelope
from src.common.settings import CommonSettings

log = logging.getLogger(__name__)

EMPTY_ENVELOPE_BYTES = len(encode_envelope([]))
"""What an envelope costs before its first record (the same rule as ``envelope.pack``)."""
COMPRESS_ABOVE_BYTES = 64 * 1024
"""Envelopes larger than this (uncompressed) are sent deflated."""
MAX_DEFLATED_ENVELOPE_BYTES = 1024 * 1024
"""How many bytes of records a deflated envelope may carry: four times SQS's limit, which
readings' JSON nearly always deflates under; an envelope that does not is split in two."""


class PublishError(RuntimeError):
    """Some of a request's readings are not known to be in SQS: the request must be retried."""


class SendObserver(Protocol):
    """Told about every envelope SQS accepted; the app turns this into metrics."""

    def __call__(self, readings: int, body_bytes: int, seconds: float) -> None: ...


@dataclass(eq=False)
class _Envelope:
    """Records bound for one SQS message, and whether SQS took them."""

    records: list[bytes] = field(default_factory=list)
    size: int = EMPTY_ENVELOPE_BYTES
    sent: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def fits(self, record: bytes, max_bytes: int) -> bool:
        # An empty envelope takes any record: a record alone is as small as it gets.
        return not self.records or self.size + len(record) + 1 <= max_bytes

    def add(self, record: bytes) -> None:
        self.records.append(record)
        self.size += len(record) + 1


class GroupCommitPublisher:
    """Collects records from concurrent callers and sends them to SQS in few, large messages.

    A send starts when the open envelope has lingered ``linger_s`` or the next record would
    not fit; at most ``max_in_flight`` sends run at once, and meanwhile the open envelope
    keeps filling. ``publish`` returns only when every envelope holding the caller's
    records was accepted, and raises :class:`PublishError` otherwise or after ``timeout_s``;
    a retry after a partial failure may queue readings twice (deduplicated downstream).
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        timeout_s: float,
        linger_s: float = 0.002,
        max_in_flight: int = 4,
        max_message_bytes: int = SQS_MAX_MESSAGE_BYTES,
        compress_above_bytes: int | None = COMPRESS_ABOVE_BYTES,
        observer: SendObserver | None = None,
        queue_name: str = "",
    ) -> None:
        self._send = send
        self._timeout_s = timeout_s
        self._linger_s = linger_s
        self._max_in_flight = max_in_flight
        self._max_bytes = max_message_bytes
        self._compress_above = compress_above_bytes
        deflating = compress_above_bytes is not None and compress_above_bytes < max_message_bytes
        self._max_open_bytes = MAX_DEFLATED_ENVELOPE_BYTES if deflating else max_message_bytes
        self._observer = observer
        self._queue_name = queue_name
        self._open: _Envelope | None = None
        self._open_due = False
        self._timer: asyncio.TimerHandle | None = None
        self._full: deque[_Envelope] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closing = False

    async def publish(self, records: Sequence[bytes]) -> None:
        """Queue ``records`` (from :func:`~src.common.envelope.serialize`) and wait until SQS has them all."""
        if self._closing:
            raise PublishError("the receiver is shutting down")
        if not records:
            return
        envelopes = self._enqueue(records)
        self._pump()
        try:
            async with asyncio.timeout(self._timeout_s):
                for envelope in envelopes:
                    await envelope.done.wait()
        except TimeoutError:
            log.warning(
                "publish of %d readings to queue %s not confirmed within %.1f s",
                len(records),
                self._queue_name,
                self._timeout_s,
            )
            raise PublishError(f"SQS did not confirm within {self._timeout_s} s") from None
        unsent = sum(1 for envelope in envelopes if not envelope.sent)
        if unsent:
            raise PublishError(f"{unsent} of {len(envelopes)} envelopes were not accepted by SQS")

    async def close(self) -> None:
        """Send what is pending and wait for every send in flight (graceful shutdown)."""
        self._closing = True
        self._open_due = True
        self._pump()
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _enqueue(self, records: Sequence[bytes]) -> list[_Envelope]:
        touched: list[_Envelope] = []
        for record in records:
            if self._open is not None and not self._open.fits(record, self._max_open_bytes):
                self._full.append(self._take_open())
            if self._open is None:
                self._open = _Envelope()
                self._open_due = False
                self._timer = asyncio.get_running_loop().call_later(self._linger_s, self._linger_expired)
            self._open.add(record)
            if not touched or touched[-1] is not self._open:
                touched.append(self._open)
        return touched

    def _take_open(self) -> _Envelope:
        envelope, self._open = self._open, None
        assert envelope is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return envelope

    def _linger_expired(self) -> None:
        self._timer = None
        self._open_due = True
        self._pump()

    def _pump(self) -> None:
        """Start sends while slots are free: full envelopes first (they are older), then a due open one."""
        while len(self._in_flight) < self._max_in_flight:
            if self._full:
                envelope = self._full.popleft()
            elif self._open is not None and self._open_due:
                envelope = self._take_open()
            else:
                return
            task = asyncio.create_task(self._send_one(envelope))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._pump()

    async def _encode(self, records: list[bytes], size: int) -> list[tuple[int, str]]:
        """The message bodies carrying ``records`` (``size`` bytes as a plain envelope), each
        with its number of readings: one body, unless deflating did not get it under the limit."""
        if self._compress_above is None or size <= self._compress_above:
            return [(len(records), encode_envelope(records))]
        # zlib releases the GIL: a worker thread deflates without stalling the event loop.
        body = await asyncio.to_thread(encode_envelope, records, compress=True)
        if len(body) <= self._max_bytes or len(records) == 1:
            return [(len(records), body)]
        half = len(records) // 2
        parts = (records[:half], records[half:])
        return [encoded for part in parts for encoded in await self._encode(part, _envelope_size(part))]

    async def _send_one(self, envelope: _Envelope) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        bodies: list[tuple[int, str]] = []
        try:
            bodies = await self._encode(envelope.records, envelope.size)
            async with asyncio.timeout(self._timeout_s):
                await asyncio.gather(*(self._send(body) for _, body in bodies))
        except Exception as exc:
            reason = f"no answer within {self._timeout_s} s" if isinstance(exc, TimeoutError) else repr(exc)
            log.warning(
                "SQS send failed: %d readings (%d bytes in %d message(s)) to queue %s: %s",
                len(envelope.records),
                sum(len(body) for _, body in bodies),
                len(bodies),
                self._queue_name,
                reason,
            )
        else:
            envelope.sent = True
            if self._observer is not None:
                elapsed = loop.time() - started
                for readings, body in bodies:
                    self._observer(readings, len(body), elapsed)
        finally:
            envelope.done.set()


def _envelope_size(records: list[bytes]) -> int:
    return EMPTY_ENVELOPE_BYTES + sum(len(record) + 1 for record in records)


class SqsQueue:
    """The receiver's queue, its URL resolved lazily so the receiver can start while SQS is down."""

    def __init__(self, client: SQSClient, settings: CommonSettings) -> None:
        self._client = client
        self._settings = settings
        self._url: str | None = settings.sqs_queue_url
        self._resolving = asyncio.Lock()

    @property
    def name(self) -> str:
        """How logs name the queue (the URL carries no secret, the name is shorter)."""
        return self._settings.sqs_queue_url or self._settings.sqs_queue_name

    async def url(self) -> str:
        """The queue URL; looked up once, and again after a failed lookup."""
        if self._url is None:
            async with self._resolving:
                if self._url is None:
                    self._url = await resolve_queue_url(self._client, self._settings)
        return self._url

    async def send(self, body: str) -> None:
        await self._client.send_message(QueueUrl=await self.url(), MessageBody=body)

    async def approximate_messages(self) -> int:
        """One cheap round trip that proves the queue exists and answers."""
        response = await self._client.get_queue_attributes(
            QueueUrl=await self.url(), AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(response.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))
