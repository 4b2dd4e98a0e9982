"""What keeps the dashboard safe to leave running: HTTP basic authentication (the check
``redbeat metrics`` makes), a Host header check against DNS rebinding, a CSRF token on
every state change, and headers that keep the browser strict (a Content-Security-Policy
without inline scripts, no framing, no sniffing).

The CSRF token is a random value in a cookie of the dashboard's (SameSite=Strict,
HttpOnly), which every page also writes into a ``<meta name="csrf-token">`` and into
its forms: a POST must send it back, in the ``csrf_token`` form field or the
``X-CSRF-Token`` header, equal to the cookie's. Another site can make the browser send
the cookie, but cannot read it nor the page to learn the value. A page on another port of
this host could set the cookie itself (cookies do not keep ports apart): a change a browser
says comes from anywhere but the dashboard's own pages (``Sec-Fetch-Site``) is refused too.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..metricsserver import basic_auth_matches

__all__ = ["WebSecurity", "Guard", "csrf_token", "csrf_refusal", "CSRF_COOKIE", "CSRF_HEADER", "CSRF_FIELD",
           "LOOPBACK_HOSTS", "SECURITY_HEADERS", "FETCH_SITES_ALLOWED"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "redbeat_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
# The names a browser uses for this host when the dashboard listens on loopback.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Where a browser says a request comes from (Fetch Metadata): a change is taken from the
# dashboard's own pages, or from no page (a script; a browser too old to say). Not from another
# site, nor another port of this host: cookies do not keep ports apart, so a page served on
# 127.0.0.1:8000 can set a redbeat_csrf cookie of its choosing and post its value, and its
# requests are same-site, so SameSite=Strict does not stop them.
FETCH_SITES_ALLOWED = ("same-origin", "none")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")

SECURITY_HEADERS = {
    # Our own script and style files only: no inline script, no eval, nothing from elsewhere.
    "content-security-policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class WebSecurity:
    """How the dashboard guards itself: ``auth`` is the ``user:password`` every request
    must send (None: none); ``allowed_hosts`` the host names the Host header may carry
    (None: any, for a dashboard mounted in a site that checks hosts itself)."""

    auth: str | None = None
    allowed_hosts: tuple[str, ...] | None = None

    def __repr__(self) -> str:  # never the credentials
        return f"WebSecurity(auth={'set' if self.auth else None}, allowed_hosts={self.allowed_hosts!r})"


def host_name(header: str) -> str:
    """The host of a Host header, without its port (``[::1]:8080`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: refuses a Host it does not know (400) and a request without the
    credentials (401), and adds ``SECURITY_HEADERS`` to every response."""

    def __init__(self, app: ASGIApp, security: WebSecurity) -> None:
        self.app = app
        self.security = security
        self.expected = None if security.auth is None else security.auth.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}
        refusal = self._refusal(headers)
        if refusal is not None:
            await refusal(scope, receive, _with_headers(send))
            return
        await self.app(scope, receive, _with_headers(send))

    def _refusal(self, headers: dict[str, str]) -> Response | None:
        allowed = self.security.allowed_hosts
        if allowed is not None and host_name(headers.get("host", "")) not in allowed:
            # DNS rebinding: a page of another site whose name now points at 127.0.0.1.
            return PlainTextResponse("unknown host: open the dashboard by the address it listens on\n", 400)
        if self.expected is not None and not basic_auth_matches(headers.get("authorization", ""), self.expected):
            return PlainTextResponse("authentication required\n", 401,
                                     headers={"WWW-Authenticate": 'Basic realm="redbeat"'})
        return None


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {key.lower() for key, _ in message.get("headers", [])}
            extra = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()
                     if name.encode() not in names]
            message["headers"] = list(message.get("headers", [])) + extra
        await send(message)
    return sending


def csrf_token(request: Request) -> str:
    """The request's CSRF token: its cookie's, or a new one (``remember_csrf`` sets it)."""
    given = request.cookies.get(CSRF_COOKIE, "")
    if _TOKEN.fullmatch(given):
        return given
    token = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(32)
    request.state.new_csrf = token
    return token


def remember_csrf(request: Request, response: Response) -> Response:
    """Set the CSRF cookie on ``response`` when the request had none."""
    token = getattr(request.state, "new_csrf", None)
    if token:
        response.set_cookie(CSRF_COOKIE, token, path=request.scope.get("root_path") or "/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
    return response


def csrf_refusal(request: Request, given: str | None) -> str | None:
    """Why a state change must be refused (403), or None: the token sent (form field or
    header) must be the cookie's."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in FETCH_SITES_ALLOWED:
        return "refused: the request comes from another page than the dashboard's own (Sec-Fetch-Site)"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not _TOKEN.fullmatch(cookie):
        return "no CSRF cookie: load a page of the dashboard (or GET /api/csrf) first"
    if not given or not hmac.compare_digest(given.encode(), cookie.encode()):
        return "the CSRF token is missing or wrong: reload the page"
    return None
