"""The dashboard: ``uvicorn src.dashboard.app:app --port 8050`` (binds 127.0.0.1 unless ``--host`` says otherwise).

Read-only. Its lifespan reads :class:`~src.common.settings.DashboardSettings` once, opens
one aiohttp session and one SQS client, and starts the poller (:class:`Pipeline`); pages
and the JSON API only read what the poller keeps. How to run it and what each figure
means: docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from src.common.aws import sqs_client
from src.common.logs import LOG_FORMAT, configure_logging
from src.common.settings import DashboardSettings
from src.dashboard.auth import TokenGate
from src.dashboard.fleet import Fleet
from src.dashboard.fleet_routes import router as fleet_router
from src.dashboard.pages import STATIC_DIR, page
from src.dashboard.pipeline import Pipeline
from src.dashboard.sources import QueueProbe, hour_files, redact, scrape
from src.dashboard.vehicle import router as vehicle_router

log = logging.getLogger("src.dashboard")


def _load_settings() -> DashboardSettings:
    try:
        return DashboardSettings()
    except ValidationError as exc:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())  # no inputs: secrets
        log.error("invalid dashboard settings: %s", problems)
        raise RuntimeError(f"invalid dashboard settings: {problems}") from None


def build_pipeline(settings: DashboardSettings, session: aiohttp.ClientSession, probe: QueueProbe) -> Pipeline:
    """The poller wired to the real sources named by ``settings``."""
    timeout_s = settings.dashboard_scrape_timeout_s
    return Pipeline(
        receiver_url=settings.receiver_metrics,
        consumer_urls=settings.consumer_metrics,
        fetch=lambda url: scrape(session, url, timeout_s),
        queue=probe.status,
        queue_where=f"{probe.name} at {settings.aws_endpoint_url or 'AWS ' + settings.aws_default_region}",
        files=lambda: hour_files(settings.raw_dir, datetime.now(UTC)),
        files_where=str(settings.raw_dir),
        refresh_s=settings.dashboard_refresh_s,
        window_s=settings.dashboard_window_s,
        timeout_s=timeout_s,
    )


def _lifespan(given: DashboardSettings | None) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = given or _load_settings()
        configure_logging(settings.log_level, settings.log_format)
        timeout_s = settings.dashboard_scrape_timeout_s
        async with (
            aiohttp.ClientSession() as session,
            sqs_client(settings, connect_timeout_s=timeout_s, read_timeout_s=timeout_s, max_attempts=1) as client,
        ):
            pipeline = build_pipeline(settings, session, QueueProbe(client, settings))
            app.state.pipeline = pipeline
            poller = asyncio.create_task(pipeline.run(), name="dashboard-poller")
            fleet = Fleet(
                settings.raw_dir,
                settings.curated_dir,
                settings.aggregated_dir,
                settings.dashboard_refresh_s,
                idle_s=settings.dashboard_fleet_idle_s,
            )
            app.state.fleet = fleet
            fleet_task = asyncio.create_task(fleet.run(), name="dashboard-fleet")
            app.state.settings = settings  # from here on the token gate lets requests through
            log.info(
                "dashboard ready: receiver %s, %d consumer(s), queue %s, every %g s%s",
                redact(settings.receiver_metrics),
                len(settings.consumer_metrics),
                pipeline.health["sqs"].where,
                settings.dashboard_refresh_s,
                ", token required" if settings.dashboard_token else "",
            )
            try:
                yield
            finally:
                app.state.settings = None
                poller.cancel()
                fleet_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
                with contextlib.suppress(asyncio.CancelledError):
                    await fleet_task

    return lifespan


def create_app(settings: DashboardSettings | None = None) -> TokenGate:
    """A dashboard; settings are read at startup when not given, so importing never fails.

    The pages, the JSON API and the static files, behind the token gate (which lets
    everything through when no token is set).
    """
    api = FastAPI(
        title="EV fleet telemetry dashboard",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=_lifespan(settings),
    )
    api.state.settings = None
    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    api.include_router(fleet_router)
    api.include_router(vehicle_router)
    pipeline_html = page("pipeline.html")

    @api.get("/", include_in_schema=False)
    async def index() -> Response:
        return RedirectResponse("/pipeline", status_code=307)

    @api.get("/pipeline", response_class=HTMLResponse)
    async def pipeline_page() -> Response:
        return HTMLResponse(pipeline_html)

    @api.get("/api/pipeline")
    async def pipeline_api(request: Request) -> Response:
        pipeline: Pipeline = request.app.state.pipeline
        return JSONResponse(pipeline.view())

    return TokenGate(api, api.state)


app = create_app()
