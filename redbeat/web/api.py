"""The JSON API under ``/api/`` (docs/web.rst, *API*), which the pages' script and other
programs use: the overview, a page of entries, one entry, and the actions (POST, each
with the ``X-CSRF-Token`` header equal to the ``redbeat_csrf`` cookie: ``GET /api/csrf``
gives both to a script)."""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..client import get_store
from ..entrydetails import entry_details
from ..entrysearch import schedule_page
from . import actions
from .app import ApiResponse, csrf_of_json, dashboard_of, name_param, refused_without_csrf, with_links
from .pages import BadQueryError, page_query
from .rows import entry_data, rows_for
from .security import csrf_token, remember_csrf

__all__ = ["overview", "entries", "entry", "csrf", "create", "edit", "bulk", "action_route"]


def _error(message: str, status: int) -> ApiResponse:
    return ApiResponse({"ok": False, "error": message}, status)


def overview(request: Request) -> Response:
    data = dashboard_of(request).readings.overview.get()  # shared between requests: copied, not changed
    return ApiResponse({**data, "most_overdue": with_links(request, data["most_overdue"])})


def entries(request: Request) -> Response:
    try:
        query = page_query(request.query_params)
    except BadQueryError as exc:
        return _error(str(exc), 400)
    app = dashboard_of(request).app
    now = get_store(app).time()
    found = schedule_page(app, query, now)
    return ApiResponse({"total": found.total, "capped": found.capped, "page": query.page, "size": query.size,
                         "entries": with_links(request, rows_for(app, found.keys, now))})


def entry(request: Request) -> Response:
    app = dashboard_of(request).app
    name = name_param(request)
    details = entry_details(app, name, runs=10)
    if details.missing:
        return _error(f"no entry named {name!r}", 404)
    data = entry_data(details, get_store(app).time())
    return ApiResponse(data)


def csrf(request: Request) -> Response:
    """The CSRF token (and its cookie, when the client has none yet) for a script's POSTs."""
    return remember_csrf(request, ApiResponse({"token": csrf_token(request), "header": "X-CSRF-Token"}))


async def _body(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
    """The POST's JSON object, or the answer refusing it (403 without the CSRF token first)."""
    refusal = refused_without_csrf(request, csrf_of_json(request), as_json=True)
    if refusal is not None:
        return None, refusal
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):
        return None, _error("the body must be a JSON object", 400)
    if not isinstance(body, dict):
        return None, _error("the body must be a JSON object", 400)
    return body, None


def _answer(request: Request, done: actions.Outcome) -> Response:
    if done.ok:
        dashboard_of(request).readings.forget()
    return ApiResponse(done.as_dict(), done.status)


def action_route(name: str) -> Any:
    """The endpoint of ``POST /api/<action>`` with ``{"name": ...}``."""
    chosen = actions.Action(name)

    async def endpoint(request: Request) -> Response:
        body, refusal = await _body(request)
        if body is None:
            assert refusal is not None
            return refusal
        if not isinstance(body.get("name"), str):
            return _error("give the entry's name: {\"name\": ...}", 400)
        done = await run_in_threadpool(actions.act, dashboard_of(request).app, chosen, body["name"])
        return _answer(request, done)
    return endpoint


async def create(request: Request) -> Response:
    """Add an entry: ``{"definition": {...}}`` as ``redbeat add --file`` reads it, or the
    create form's text fields (name, task, kind, schedule, timezone, args, kwargs...)."""
    body, refusal = await _body(request)
    if body is None:
        assert refusal is not None
        return refusal
    dashboard = dashboard_of(request)
    definition = body.get("definition")
    if definition is not None and not isinstance(definition, dict):
        return _error("definition must be a JSON object", 400)
    typed = {key: str(value) for key, value in body.items() if key != "definition" and value is not None}
    done = await run_in_threadpool(actions.create, dashboard.app, typed, definition, dashboard.require_known)
    return _answer(request, done)


async def edit(request: Request) -> Response:
    """Set one field: ``{"name", "field", "value"}``, the value as JSON (or ``"text": "..."``
    instead, read as ``redbeat edit`` reads its VALUE)."""
    body, refusal = await _body(request)
    if body is None:
        assert refusal is not None
        return refusal
    dashboard = dashboard_of(request)
    name, field = body.get("name"), body.get("field")
    as_text = "text" in body
    if (not isinstance(name, str) or not isinstance(field, str) or ("value" not in body and not as_text)
            or (as_text and not isinstance(body["text"], str))):
        return _error("give name, field and value (JSON) or text (a string)", 400)
    done = await run_in_threadpool(actions.edit, dashboard.app, name, field, body["text"] if as_text else body["value"],
                                   dashboard.require_known, as_text)
    return _answer(request, done)


async def bulk(request: Request) -> Response:
    """Pause or resume every entry a search picks: ``{"action", "name", "task", "state"}`` only
    says which entries it would change (``would_change``, at most ``actions.BULK_LIMIT``);
    ``{"action", "names": [...], "confirmed": true}`` acts on those names, not on a search made again."""
    body, refusal = await _body(request)
    if body is None:
        assert refusal is not None
        return refusal
    dashboard = dashboard_of(request)
    try:
        chosen = actions.Action(str(body.get("action", "")))
        query = page_query({key: str(body.get(key) or "") for key in ("name", "task", "state")})
        if chosen not in actions.BULK_ACTIONS:
            raise BadQueryError("action is pause or resume")
    except (ValueError, BadQueryError) as exc:
        return _error(str(exc), 400)
    if body.get("confirmed") is True:
        return await _bulk_confirmed(request, chosen, body.get("names"))
    now = await run_in_threadpool(lambda: get_store(dashboard.app).time())
    targets = await run_in_threadpool(actions.bulk_targets, dashboard.app, query, now)
    if targets.too_many:
        return _error(actions.too_many_words(targets.matches), 422)
    return ApiResponse({"ok": True, "would_change": targets.names})


async def _bulk_confirmed(request: Request, chosen: actions.Action, names: Any) -> Response:
    """The bulk action on the ``names`` given (those ``would_change`` listed)."""
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return _error("give the names to act on, as would_change listed them: {\"names\": [...], "
                      "\"confirmed\": true}", 400)
    if len(names) > actions.BULK_LIMIT:
        return _error(actions.too_many_words(len(names)), 422)
    dashboard = dashboard_of(request)
    results = await run_in_threadpool(actions.bulk, dashboard.app, chosen, names)
    dashboard.readings.forget()
    answers = [{"name": name, **result.as_dict()} for name, result in zip(names, results)]
    return ApiResponse({"ok": all(r.ok for r in results), "results": answers})
