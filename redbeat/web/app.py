"""The dashboard as an ASGI application (Starlette): its routes, and what every page
and answer shares (``Dashboard``). ``create_app`` is the public way to build it."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from celery import Celery
from jinja2 import Environment, PackageLoader
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..client import display_url
from ..config import ensure_conf, without_urls
from ..printable import printable
from .readings import Readings
from .security import CSRF_FIELD, CSRF_HEADER, Guard, WebSecurity, csrf_refusal, csrf_token, remember_csrf

__all__ = ["create_app", "ApiResponse", "Dashboard", "dashboard_of", "render", "form_of", "posted_form", "name_param",
           "name_of_form", "names_field", "names_of_form", "name_query", "url_quoted", "with_links",
           "refused_without_csrf", "MAX_BODY"]

# A form or JSON body larger than this is refused: no entry needs more.
MAX_BODY = 256 * 1024


class Verbatim(str):
    """Text a page shows exactly as it is (JSON already escaped for people), not through ``printable``."""


def _shown(value: Any) -> Any:
    """Every text a template writes goes through ``printable`` (control and bidi characters
    escaped, as the command line shows them), then Jinja escapes it for HTML."""
    if isinstance(value, Verbatim) or not isinstance(value, str):
        return value
    return printable(value)


def url_quoted(value: Any) -> str:
    """A name for a URL's query, or a page's form: its exact bytes (not UTF-8 ones too, from
    ``admin.key_text``), percent-encoded, so ASCII that HTML and a form's POST keep as it is."""
    return quote(str(value).encode("utf-8", "surrogateescape"), safe="")


def name_of_form(form: dict[str, str]) -> str:
    """The entry name a page's form posts, percent-encoded by the page (``url_quoted``): shown
    through ``printable`` it would post another name (a backslash doubled, a control escaped),
    and HTML cannot hold every name (bytes that are not UTF-8, a carriage return)."""
    return unquote(form.get("name", ""), errors="surrogateescape")


def names_field(names: list[str]) -> str:
    """Many names in one form field: each ``url_quoted`` (which leaves no comma), joined by commas."""
    return ",".join(url_quoted(name) for name in names)


def names_of_form(form: dict[str, str]) -> list[str]:
    """The names a form's ``names`` field carries (``names_field``), exact as ``name_of_form``'s."""
    given = form.get("names", "")
    return [unquote(quoted, errors="surrogateescape") for quoted in given.split(",")] if given else []


def name_query(name: str) -> str:
    """The query string naming the entry ``name``, whatever its bytes."""
    return urlencode({"name": name}, encoding="utf-8", errors="surrogateescape")


def with_links(request: Request, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``entries`` (each with its ``name``) with ``link``, the path of its page, percent-encoded
    here from the name's exact bytes, and ``shown``, its name as the pages show it (``printable``):
    the page's script uses both as they are. It cannot encode a name itself: a name that is not
    UTF-8 reaches it as a lone surrogate, on which ``encodeURIComponent`` throws."""
    root = root_of(request)
    return [{**entry, "link": f"{root}/entry?name={url_quoted(entry['name'])}", "shown": printable(entry["name"])}
            for entry in entries]


class ApiResponse(JSONResponse):
    """JSON in ASCII: a name whose bytes are not UTF-8 (``admin.key_text``) is sent escaped, not refused."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:  # an infinity or NaN another program wrote (JSON has none): sent as null
            return json.dumps(_finite(content), ensure_ascii=True, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


@dataclass
class Dashboard:
    """What the routes share: the app whose schedule is shown, its cached readings, how it may act."""

    app: Celery
    readings: Readings
    templates: Environment
    read_only: bool = False
    require_known: bool = False

    @property
    def redis(self) -> str:
        """The schedule's Redis URL, its password masked."""
        try:
            return display_url(ensure_conf(self.app).redis_url)
        except ValueError:
            return "(unreadable Redis URL)"


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def root_of(request: Request) -> str:
    """Where the dashboard is mounted ('' at the site's root): every link starts with it."""
    return str(request.scope.get("root_path") or "").rstrip("/")


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    dashboard = dashboard_of(request)
    html = dashboard.templates.get_template(template).render(
        csrf=csrf_token(request), root=root_of(request), read_only=dashboard.read_only, redis=dashboard.redis,
        **context)
    response = HTMLResponse(html, status)
    remember_csrf(request, response)
    return response


def name_param(request: Request) -> str:
    """The query's ``name`` with its exact bytes: a name that is not UTF-8 (``admin.key_text``)
    is linked byte for byte (``%FF``), which Starlette's own parsing turns into U+FFFD."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    found = dict(parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"))
    return found.get("name", "")


async def form_of(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each): no multipart, so no extra package."""
    body = await request.body()
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def posted_form(request: Request) -> tuple[dict[str, str], Response | None]:
    """A form POST's fields, and the 403 answer refusing it when its CSRF token is not the
    cookie's (None: it may go on): what every page that changes the schedule starts with."""
    form = await form_of(request)
    return form, refused_without_csrf(request, csrf_of_form(form), as_json=False)


def refused_without_csrf(request: Request, given: str | None, as_json: bool) -> Response | None:
    """A 403 answer when the CSRF token sent is not the cookie's, else None."""
    why = csrf_refusal(request, given)
    if why is None:
        return None
    if as_json:
        return ApiResponse({"ok": False, "error": why}, 403)
    return render(request, "results.html", 403, heading="Refused", refused=why, results=[],
                  back_url=root_of(request) + "/")


def csrf_of_json(request: Request) -> str | None:
    return request.headers.get(CSRF_HEADER)


def csrf_of_form(form: dict[str, str]) -> str | None:
    return form.get(CSRF_FIELD)


Endpoint = Callable[[Request], Awaitable[Response]]


def _routes(read_only: bool) -> list[BaseRoute]:
    from . import api, pages

    routes: list[BaseRoute] = [
        Route("/", pages.overview, name="overview"),
        Route("/schedule", pages.schedule, name="schedule"),
        Route("/entry", pages.entry, name="entry"),
        Route("/chart.svg", pages.chart, name="chart"),
        Route("/api/overview", api.overview),
        Route("/api/entries", api.entries),
        Route("/api/entry", api.entry),
        Route("/api/csrf", api.csrf),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"),
    ]
    if read_only:  # no route that changes anything exists at all
        return routes
    return routes + [
        Route("/new", pages.new_form, methods=["GET"]),
        Route("/new", pages.new, methods=["POST"], max_body_size=MAX_BODY),
        Route("/edit", pages.edit_form, methods=["GET"]),
        Route("/edit", pages.edit, methods=["POST"], max_body_size=MAX_BODY),
        Route("/action", pages.action, methods=["POST"], max_body_size=MAX_BODY),
        Route("/bulk", pages.bulk, methods=["POST"], max_body_size=MAX_BODY),
        Route("/api/entries", api.create, methods=["POST"], max_body_size=MAX_BODY),
        Route("/api/edit", api.edit, methods=["POST"], max_body_size=MAX_BODY),
        Route("/api/bulk", api.bulk, methods=["POST"], max_body_size=MAX_BODY),
        *[Route(f"/api/{action}", api.action_route(action), methods=["POST"], max_body_size=MAX_BODY)
          for action in ("pause", "resume", "run-now", "remove")],
    ]


async def redis_out_of_reach(request: Request, exc: Exception) -> Response:
    """What every route answers while the schedule's Redis cannot be reached: 503 and why, in
    words (JSON under /api/, a page elsewhere), never a server error and its traceback."""
    said = printable(f"cannot reach the schedule's Redis at {dashboard_of(request).redis}: "
                     f"{without_urls(str(exc)) or type(exc).__name__}")
    if request.url.path.startswith(root_of(request) + "/api/"):
        return ApiResponse({"ok": False, "error": said}, 503)
    return render(request, "results.html", 503, heading="Redis cannot be reached",
                  results=[{"ok": False, "said": said}], back_url=root_of(request) + "/")


def create_app(celery_app: Celery, read_only: bool = False, auth: str | None = None,
               allowed_hosts: tuple[str, ...] | None = None, require_known_tasks: bool = False) -> Starlette:
    """The dashboard of ``celery_app``'s schedule, as an ASGI application to serve or mount.

    ``auth`` is the ``user:password`` every request must send (HTTP basic); ``allowed_hosts``
    the names the Host header may carry (None: any: the site it is mounted in checks);
    ``read_only`` leaves out every route that changes the schedule; ``require_known_tasks``
    refuses a task name the app does not know (set where the app's task modules are imported).
    """
    if auth is not None and ":" not in auth:
        raise ValueError("the dashboard's credentials must read 'user:password'")
    templates = Environment(loader=PackageLoader("redbeat.web", "templates"), autoescape=True, finalize=_shown)
    templates.filters["urlencode"] = url_quoted
    app = Starlette(routes=_routes(read_only),
                    middleware=[Middleware(Guard, security=WebSecurity(auth, allowed_hosts))],
                    exception_handlers={RedisConnectionError: redis_out_of_reach,
                                        RedisTimeoutError: redis_out_of_reach})
    app.state.dashboard = Dashboard(celery_app, Readings(celery_app), templates, read_only, require_known_tasks)
    return app
