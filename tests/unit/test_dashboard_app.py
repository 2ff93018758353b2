"""The dashboard app with its real lifespan and sources that do not answer: the API never fails because a
source is down, the token keeps every page, API call and static file closed, nothing secret is shown,
and the static files are the package's own (no CDN) and installed with it."""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fnmatch import fnmatch
from typing import Any

import httpx
import pytest

from src.common.settings import DashboardSettings
from src.dashboard import __main__ as runner
from src.dashboard.app import STATIC_DIR, create_app
from src.dashboard.auth import COOKIE, TokenGate
from src.embedded.processes import free_port
from tests.paths import REPO_ROOT

DASHBOARD_VARIABLES = (
    "DASHBOARD_TOKEN",
    "RECEIVER_METRICS_URL",
    "CONSUMER_METRICS_URLS",
    "DASHBOARD_REFRESH_S",
    "DASHBOARD_WINDOW_S",
    "DASHBOARD_SCRAPE_TIMEOUT_S",
)
TOKEN = "s3cret-dashboard-token"
AWS_SECRET = "aws-secret-never-shown"


@pytest.fixture(autouse=True)
def no_dashboard_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DASHBOARD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def unreachable(**overrides: Any) -> DashboardSettings:
    """Settings whose every source is a closed loopback port."""
    dead = f"http://127.0.0.1:{free_port()}"
    values: dict[str, Any] = {
        "aws_endpoint_url": dead,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": AWS_SECRET,
        "receiver_url": dead,
        "consumer_metrics_urls": f"{dead}/metrics, {dead}/other",
        "dashboard_refresh_s": 0.2,
        "dashboard_scrape_timeout_s": 2.0,
    }
    return DashboardSettings(**(values | overrides))


@asynccontextmanager
async def running(app: TokenGate) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (and so its poller) running, behind an in-process HTTP client."""
    api: Any = app.app
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard") as client,
    ):
        yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(unreachable())) as open_client:
        yield open_client


@pytest.fixture
async def guarded() -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(unreachable(dashboard_token=TOKEN))) as guarded_client:
        yield guarded_client


async def first_poll(client: httpx.AsyncClient, **request: Any) -> dict[str, Any]:
    """The API's answer once the poller has been round once (a deadline, not a fixed wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        response = await client.get("/api/pipeline", **request)
        assert response.status_code == 200
        view: dict[str, Any] = response.json()
        if view["polled_at"] is not None:
            return view
        assert loop.time() < deadline, "no poll within 30 s"
        await asyncio.sleep(0.05)


async def test_with_every_source_down_the_api_answers_and_names_each(client: httpx.AsyncClient) -> None:
    view = await first_poll(client)
    sources = {source["key"]: source for source in view["sources"]}
    assert set(sources) == {"receiver", "consumer-0", "consumer-1", "sqs", "disk"}
    for key in ("receiver", "consumer-0", "consumer-1", "sqs"):
        assert sources[key]["ok"] is False, sources[key]
        assert sources[key]["error"], sources[key]
    assert sources["disk"]["ok"] is True  # an empty DATA_DIR: no file yet this hour
    assert view["files"]["files"] == 0
    assert view["throughput"]["in_per_s"] is None
    assert view["queue"] is None


async def test_the_page_and_its_files_are_served_with_strict_headers(client: httpx.AsyncClient) -> None:
    page = await client.get("/pipeline")
    assert page.status_code == 200
    assert '<script src="/static/pipeline.js"' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert (await client.get("/")).headers["location"] == "/pipeline"
    for name in ("common.js", "pipeline.js", "uPlot.iife.min.js", "uPlot.min.css", "dashboard.css", "favicon.svg"):
        assert (await client.get(f"/static/{name}")).status_code == 200, name


async def test_nothing_secret_is_shown(guarded: httpx.AsyncClient) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    shown = str(await first_poll(guarded, headers=bearer)) + (await guarded.get("/pipeline", headers=bearer)).text
    assert TOKEN not in shown
    assert AWS_SECRET not in shown


async def test_every_request_needs_the_token_when_one_is_set(guarded: httpx.AsyncClient) -> None:
    for path in ("/", "/pipeline", "/api/pipeline", "/static/pipeline.js", "/static/uPlot.LICENSE", "/nowhere"):
        refused = await guarded.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in refused.text
    assert (await guarded.get("/pipeline", params={"token": TOKEN + "x"})).status_code == 401
    assert (await guarded.get("/pipeline", params={"token": "ünïcode"})).status_code == 401
    assert (await guarded.get("/api/pipeline", headers={"Authorization": "Bearer nope"})).status_code == 401
    guarded.cookies.set(COOKIE, TOKEN)  # the token itself is not what the cookie holds
    assert (await guarded.get("/pipeline")).status_code == 401


async def test_the_token_in_the_url_is_traded_for_a_cookie_once(guarded: httpx.AsyncClient) -> None:
    redirect = await guarded.get("/pipeline", params={"token": TOKEN, "keep": "1"})
    assert redirect.status_code == 303
    assert redirect.headers["location"] == "/pipeline?keep=1"
    cookie = redirect.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert TOKEN not in cookie
    assert (await guarded.get("/pipeline")).status_code == 200  # the client now sends the cookie
    assert (await guarded.get("/api/pipeline")).status_code == 200
    assert (await guarded.get("/static/pipeline.js")).status_code == 200


async def test_a_bearer_header_works_for_scripts(guarded: httpx.AsyncClient) -> None:
    assert (await guarded.get("/api/pipeline", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200


async def test_before_startup_every_request_is_told_to_retry() -> None:
    transport = httpx.ASGITransport(app=create_app(unreachable()))  # no lifespan: settings not read yet
    async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
        answer = await client.get("/pipeline")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"


async def test_settings_are_read_at_startup_and_bad_ones_stop_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_REFRESH_S", "0")
    monkeypatch.setenv("DASHBOARD_TOKEN", TOKEN)
    with pytest.raises(RuntimeError, match="invalid dashboard settings: dashboard_refresh_s") as failed:
        async with running(create_app()):
            pass
    assert TOKEN not in str(failed.value)


def test_settings_name_the_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_URL", "http://receiver:8000/")
    monkeypatch.setenv("CONSUMER_METRICS_URLS", " http://a:9102/metrics ,, http://b:9102/metrics ")
    monkeypatch.setenv("DASHBOARD_TOKEN", "  ")
    settings = DashboardSettings()
    assert settings.receiver_metrics == "http://receiver:8000/metrics"
    assert settings.consumer_metrics == ("http://a:9102/metrics", "http://b:9102/metrics")
    assert settings.dashboard_token is None  # blank means unset
    monkeypatch.setenv("RECEIVER_METRICS_URL", "http://elsewhere/m")
    assert DashboardSettings().receiver_metrics == "http://elsewhere/m"


def test_the_runner_listens_on_loopback_unless_told_and_then_wants_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(runner.uvicorn, "run", lambda app, **kwargs: runs.append({"app": app, **kwargs}))
    assert runner.main([]) == 0
    assert runs[-1] == {"app": "src.dashboard.app:app", "host": "127.0.0.1", "port": 8050, "log_level": "info"}
    assert runner.main(["--host", "0.0.0.0"]) == 2
    assert runner.main(["--host", "::1", "--port", "9000"]) == 0
    monkeypatch.setenv("DASHBOARD_TOKEN", TOKEN)
    assert runner.main(["--host", "0.0.0.0"]) == 0
    assert runs[-1]["host"] == "0.0.0.0"
    assert len(runs) == 3
    assert runner.is_loopback("localhost") and not runner.is_loopback("dashboard.example.com")


def test_the_static_files_are_package_data_and_the_pages_load_nothing_from_elsewhere() -> None:
    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    files = sorted(path.relative_to(STATIC_DIR.parent).as_posix() for path in STATIC_DIR.iterdir())
    assert files, "no static files"
    for name in files:
        assert any(fnmatch(name, pattern) for pattern in patterns["src.dashboard"]), f"{name} is not package data"
    assert (STATIC_DIR / "uPlot.LICENSE").read_text().startswith("The MIT License")
    own = [
        path for path in STATIC_DIR.iterdir() if path.suffix in (".html", ".js", ".css") and "uPlot" not in path.name
    ]
    assert len(own) == 8, own
    for path in own:
        assert not re.search(r"(?:https?:)?//[\w.-]+\.\w", path.read_text()), path.name


def test_each_page_loads_the_shared_script_first_and_links_the_others() -> None:
    for name, links in (("pipeline", ["/fleet"]), ("fleet", ["/pipeline"]), ("vehicle", ["/fleet", "/pipeline"])):
        html = (STATIC_DIR / f"{name}.html").read_text()
        assert '<script src="/static/common.js" defer>' in html, name
        assert html.index("/static/common.js") < html.index(f"/static/{name}.js"), name
        nav = re.search(r'<nav class="pages".*?</nav>', html)
        assert nav is not None, name
        assert all(f'href="{link}"' in nav[0] for link in links), name


async def test_lifespan_events_pass_through_the_gate_as_uvicorn_sends_them() -> None:
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return next(events)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await create_app(unreachable())({"type": "lifespan", "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
