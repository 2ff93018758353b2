"""Waiting in async tests: for a condition to hold, or for a fake to have been called n times.

Tests never sleep a fixed time and then assert that something did *not* happen: on a
loaded machine the time may not be enough, and on an idle one it is wasted. They wait
for a signal that the code under test got past the point where the unwanted thing
would have happened (a fake counts its calls in a :class:`Tally`), then assert.
Deadlines are generous because the machine is shared and noisy; a passing test never
waits for them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

DEADLINE_S = 30.0
"""How long a wait may take before the test fails."""
POLL_S = 0.01
"""Between checks run on the event loop (cheap reads of a fake's state)."""
THREAD_POLL_S = 0.05
"""Between checks run in a worker thread (they call SQS or S3, or read the disk)."""


async def eventually(
    check: Callable[[], bool], what: str, *, within_s: float = DEADLINE_S, in_thread: bool = False
) -> None:
    """Wait until ``check()`` is true, or fail naming ``what``.

    With ``in_thread`` the check runs off the event loop: use it for checks that block
    (an SQS or S3 call, a walk of the data directory), so they never stall the code
    under test running on the same loop.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not (await asyncio.to_thread(check) if in_thread else check()):
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within_s:.0f} s waiting for {what}")
        await asyncio.sleep(THREAD_POLL_S if in_thread else POLL_S)


class Tally:
    """How many times something happened, which a test can await: a fake calls :meth:`tick` on each call.

    ``tick`` may come from the event loop or from a worker thread (a patched
    ``BatchWriter.write`` runs in one); ``await tally.reaches(n, what)`` returns as soon
    as the count is at least ``n``.
    """

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def tick(self) -> None:
        with self._lock:
            self.count += 1
            due = [waiter for waiter in self._waiters if self.count >= waiter[0]]
            self._waiters = [waiter for waiter in self._waiters if self.count < waiter[0]]
        for _, loop, future in due:
            loop.call_soon_threadsafe(_resolve, future)

    async def reaches(self, n: int, what: str, *, within_s: float = DEADLINE_S) -> int:
        """Wait until :meth:`tick` has been called ``n`` times in all (or fail naming ``what``); the count then."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (n, loop, future)
        with self._lock:
            if self.count >= n:
                return self.count
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, within_s)
        except TimeoutError:
            pytest.fail(f"timed out after {within_s:.0f} s waiting for {what} ({self.count} of {n})")
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self.count


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
