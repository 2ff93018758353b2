"""Test doubles shared by several test modules."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import orjson
from aiohttp import web

API_KEY = "test-key"
"""The key the fake receiver accepts."""


class FakeReceiver:
    """A tiny receiver on a free loopback port, in its own thread and event loop.

    Its own loop lets both async tests and the simulator's ``main`` (which runs
    ``asyncio.run``) talk to it. Behaviour by ``vehicle_id`` of the (first) reading:
    ``veh-00002`` gets 503 on its first attempt, ``veh-00003`` always 422, ``busy`` 429
    first, ``down`` always 503, ``slow`` an answer later than any client timeout;
    everything else 202. A wrong key gets 401.
    """

    def __init__(self) -> None:
        self.attempts: Counter[bytes] = Counter()
        self.accepted: list[dict[str, object]] = []
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("X-API-Key") != API_KEY:
            return web.json_response({"detail": "missing or wrong API key"}, status=401)
        body = await request.read()
        self.attempts[body] += 1
        document = orjson.loads(body)
        batch = document if isinstance(document, list) else [document]
        vehicle = batch[0]["vehicle_id"]
        first = self.attempts[body] == 1
        if (vehicle == "veh-00002" and first) or vehicle == "down":
            return web.json_response({"detail": "queue unreachable"}, status=503)
        if vehicle == "busy" and first:
            return web.Response(status=429)
        if vehicle == "veh-00003":
            return web.json_response({"detail": [{"loc": ["body", "payload"], "msg": "bad"}]}, status=422)
        if vehicle == "slow":
            await asyncio.sleep(0.3)
        self.accepted.extend(batch)
        return web.Response(status=202)

    def start(self) -> str:
        ready = threading.Event()

        async def setup() -> None:
            app = web.Application()
            app.router.add_post("/ingest", self._handle)
            app.router.add_post("/ingest/batch", self._handle)
            self._runner = web.AppRunner(app, access_log=None)  # no late log lines from this thread
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            host, port = self._runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            ready.set()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(setup())
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.url

    def stop(self) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
