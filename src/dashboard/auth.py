"""The optional token (``DASHBOARD_TOKEN``) and the headers every answer carries.

With a token set, every request (pages, API, static files) must show it, one of three ways:
``?token=<token>`` once (answered with a cookie and a redirect to the same URL without it,
so it leaves the address bar and history), the cookie afterwards, or an
``Authorization: Bearer <token>`` header for scripts. The cookie holds an HMAC of the
token, not the token. Comparisons are constant-time. Without a token set, anyone who can
reach the port may read (which is why the default bind is 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from starlette.datastructures import MutableHeaders, State
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "dashboard_session"
QUERY = "token"
SECURITY_HEADERS = {
    # Everything the pages load is served from here; no inline script, no frames, no plugins.
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def same(supplied: str, expected: str) -> bool:
    """Constant-time equality of two strings (as UTF-8 bytes: non-ASCII input is no error)."""
    return hmac.compare_digest(supplied.encode(), expected.encode())


class TokenGate:
    """ASGI middleware: lets a request through when it shows the token, else answers 401.

    The token is read from the settings the app's lifespan puts in ``state`` (read once, at
    start); until then every request is answered 503.
    """

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state
        self._cookie: tuple[str, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answer = self.check(Request(scope))
        if answer is None:
            await self.app(scope, receive, with_headers(send))
        else:
            await answer(scope, receive, with_headers(send))

    def token(self) -> str | None:
        settings = self.state.settings
        return settings.dashboard_token.get_secret_value() if settings.dashboard_token is not None else None

    def cookie_for(self, token: str) -> str:
        """What the cookie holds: an HMAC of the token (computed once), never the token itself."""
        if self._cookie is None or self._cookie[0] != token:
            digest = hmac.new(token.encode(), b"dashboard-session-v1", hashlib.sha256).hexdigest()
            self._cookie = (token, digest)
        return self._cookie[1]

    def check(self, request: Request) -> Response | None:
        """None to let ``request`` through; otherwise the answer (a redirect that sets the cookie, a 401, a 503)."""
        if getattr(self.state, "settings", None) is None:
            return PlainTextResponse(
                "503 Service Unavailable: starting\n", status_code=503, headers={"Retry-After": "1"}
            )
        token = self.token()
        if token is None:
            return None
        cookie = self.cookie_for(token)
        supplied = request.query_params.get(QUERY)
        if supplied is not None:
            if not same(supplied, token):
                return refuse("wrong token")
            rest = [(key, value) for key, value in request.query_params.multi_items() if key != QUERY]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            redirect = RedirectResponse(target, status_code=303)
            redirect.set_cookie(
                COOKIE, cookie, httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/"
            )
            return redirect
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return None if same(credentials.strip(), token) else refuse("wrong token")
        supplied_cookie = request.cookies.get(COOKIE)
        if supplied_cookie is not None and same(supplied_cookie, cookie):
            return None
        return refuse("this dashboard needs its token: open it once as /pipeline?token=<DASHBOARD_TOKEN>")


def refuse(reason: str) -> Response:
    return PlainTextResponse(f"401 Unauthorized: {reason}\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})


def with_headers(send: Send) -> Send:
    """``send`` adding the security headers (and no-store) to every answer."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                headers.setdefault(name, value)
            headers.setdefault("Cache-Control", "no-store")
        await send(message)

    return sending
