"""The fleet page's routes: ``/fleet`` (the page) and ``/api/fleet`` (its JSON), behind the app's token gate.

``?hour=YYYY-MM-DDTHH`` picks a past hour; anything else there is a ``400`` that says what
is expected (an HTML page for ``/fleet``, ``{"error": ...}`` for the API). The page's own
script reads the hour from its URL, so the page itself carries no data and no inline script.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from src.dashboard.fleet import BadHour, Fleet, parse_hour
from src.dashboard.pages import page

FLEET_PAGE = page("fleet.html")
BAD_HOUR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bad hour · Fleet</title>
<link rel="stylesheet" href="/static/dashboard.css"></head>
<body><header><h1>Fleet</h1>
<nav class="pages"><a href="/pipeline">Pipeline</a> · <a href="/fleet">Fleet</a></nav></header>
<p class="problem">400 Bad Request: {message}</p><p><a href="/fleet">The live fleet</a></p></body></html>
"""

router = APIRouter()


@router.get("/fleet", response_class=HTMLResponse)
async def fleet_page(request: Request, hour: str | None = None) -> Response:
    if hour is None:
        fleet: Fleet = request.app.state.fleet
        fleet.ask()  # start the refresh now: the page's first /api/fleet then waits less
    else:
        try:
            parse_hour(hour)
        except BadHour as exc:
            return HTMLResponse(BAD_HOUR_PAGE.format(message=html.escape(str(exc))), status_code=400)
    return HTMLResponse(FLEET_PAGE)


@router.get("/api/fleet")
async def fleet_api(request: Request, hour: str | None = None) -> Response:
    fleet: Fleet = request.app.state.fleet
    if hour is None:
        return Response(await fleet.live_view(), media_type="application/json")
    try:
        moment = parse_hour(hour)
    except BadHour as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return Response(await fleet.hour_view(moment), media_type="application/json")
