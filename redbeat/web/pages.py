"""The dashboard's pages: overview, schedule, entry, the forms, and what a form's POST
answers (the page again with what was done or refused). Reads run in Starlette's thread
pool (plain functions); POSTs read their form, check the CSRF token, then act."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..client import get_store
from ..entrydetails import entry_details
from ..entrysearch import Page, PageQuery, SortOrder, StateFilter, schedule_page
from ..specs import TEXT_FIELDS
from ..validation import OPTION_FIELDS, WRITABLE_FIELDS
from . import actions
from .app import (
    Verbatim,
    dashboard_of,
    name_of_form,
    name_param,
    name_query,
    names_field,
    names_of_form,
    posted_form,
    render,
    root_of,
    url_quoted,
)
from .chart import lateness_svg
from .readings import recent_dispatches
from .rows import entry_data, rows_for

__all__ = ["overview", "schedule", "entry", "chart", "new_form", "new", "edit_form", "edit", "action", "bulk",
           "page_query", "BadQueryError"]

SORT_LABELS = (("next", "next run first"), ("-next", "next run last"), ("name", "name A-Z"), ("-name", "name Z-A"))
ACTION_LABELS = (("pause", "Pause"), ("resume", "Resume"), ("run-now", "Run now"), ("remove", "Remove…"))
EDITABLE = [field for field in WRITABLE_FIELDS if field != "name"]
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class BadQueryError(ValueError):
    """A query string the schedule cannot be read with (an unknown state, a page that is no number)."""


def page_query(params: Any) -> PageQuery:
    """The table's query from a request's parameters; ``BadQueryError`` names what is wrong."""
    try:
        state = StateFilter(params.get("state", ""))
        sort = SortOrder(params.get("sort", "next") or "next")
    except ValueError:
        raise BadQueryError(f"state is one of {', '.join(s.value for s in StateFilter if s.value)} (or none), sort one "
                       f"of {', '.join(s.value for s in SortOrder)}") from None
    try:
        page = int(params.get("page", 1) or 1)
        size = int(params.get("size", DEFAULT_PAGE_SIZE) or DEFAULT_PAGE_SIZE)
    except ValueError:
        raise BadQueryError("page and size are whole numbers") from None
    if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise BadQueryError(f"page is 1 or more, size from 1 to {MAX_PAGE_SIZE}")
    return PageQuery(params.get("name", "").strip(), params.get("task", "").strip(), state, sort, page, size)


def overview(request: Request) -> Response:
    data = dashboard_of(request).readings.overview.get()
    return render(request, "overview.html", page="overview", poll="overview", o=data)


def chart(request: Request) -> Response:
    app = dashboard_of(request).app
    svg = lateness_svg(recent_dispatches(app, get_store(app).time()))
    return Response(svg, media_type="image/svg+xml")


def _query_url(request: Request, query: PageQuery, page: int) -> str:
    params = {"name": query.name, "task": query.task, "state": query.state.value, "sort": query.sort.value,
              "page": page, "size": query.size}
    return f"{root_of(request)}/schedule?{urlencode({k: v for k, v in params.items() if v not in ('', None)})}"


def schedule(request: Request, said: str | None = None, refused: str | None = None) -> Response:
    try:
        query = page_query(request.query_params)
    except BadQueryError as exc:
        return render(request, "results.html", 400, heading="Bad query", refused=str(exc), results=[],
                      back_url=root_of(request) + "/schedule")
    app = dashboard_of(request).app
    now = get_store(app).time()
    found: Page = schedule_page(app, query, now)
    pages = -(-found.total // query.size) if found.total else 1
    # Polled only while a page costs O(page): a scan polled by every open tab would hammer Redis.
    cheap = not query.scans and query.sort in (SortOrder.NEXT, SortOrder.NEXT_DESC)
    # The search text goes back into the form as typed (not through printable, whose escapes
    # would be another search): the bulk form and the search box send it again.
    typed = replace(query, name=Verbatim(query.name), task=Verbatim(query.task))
    return render(request, "schedule.html", page="schedule", poll="page" if cheap else None, q=typed,
                  rows=rows_for(app, found.keys, now), found=found, pages=pages, said=said, refused=refused,
                  states=[s.value for s in StateFilter], sorts=SORT_LABELS,
                  prev_url=_query_url(request, query, query.page - 1) if query.page > 1 else None,
                  next_url=_query_url(request, query, query.page + 1) if query.page < pages else None,
                  bulk_allowed=query.scans or query.state == StateFilter.DUE)


def entry(request: Request, said: str | None = None, warning: str | None = None, refused: str | None = None,
          status: int = 200) -> Response:
    app = dashboard_of(request).app
    name = name_param(request)
    details = entry_details(app, name, runs=10)
    if details.missing:
        return render(request, "results.html", 404, heading="No such entry", refused=f"no entry named {name!r}",
                      results=[], back_url=root_of(request) + "/schedule", said=said, warning=warning)
    data = entry_data(details, get_store(app).time())
    data["definition_json"] = Verbatim(data["definition_json"])
    return render(request, "entry.html", status, page="entry", poll="page", e=data, next_run_at=details.view.score,
                  actions=_actions_for(data.get("enabled")), said=said, warning=warning, refused=refused,
                  overlap=details.overlap.lines() if details.overlap is not None else [])


def _actions_for(enabled: bool | None) -> list[tuple[str, str]]:
    """The entry page's buttons: pause or resume, whichever applies (both when the entry cannot
    be read, so that the server says why it refuses), then the others."""
    skipped = {True: "resume", False: "pause"}.get(enabled) if isinstance(enabled, bool) else None
    return [(action, label) for action, label in ACTION_LABELS if action != skipped]


def _as_typed(typed: dict[str, str]) -> dict[str, str]:
    """A form's fields to fill it again exactly as typed: through ``printable``, a backslash would
    come back doubled, and saving again would save another value."""
    return {key: Verbatim(value) for key, value in typed.items()}


def _new_page(request: Request, typed: dict[str, str], refused: str | None = None, status: int = 200) -> Response:
    return render(request, "form.html", status, page="new", heading="New entry", editing=False, typed=_as_typed(typed),
                  kinds=actions.SCHEDULE_KINDS, option_fields=", ".join(OPTION_FIELDS), refused=refused)


def new_form(request: Request) -> Response:
    return _new_page(request, {"kind": "every"})


async def new(request: Request) -> Response:
    form, refusal = await posted_form(request)
    if refusal is not None:
        return refusal
    dashboard = dashboard_of(request)
    done = await run_in_threadpool(actions.create, dashboard.app, form, None, dashboard.require_known)
    if not done.ok:
        return await run_in_threadpool(_new_page, request, form, done.said, done.status)
    dashboard.readings.forget()
    request.scope["query_string"] = urlencode({"name": form.get("name", "").strip()}).encode()
    return await run_in_threadpool(entry, Request(request.scope), done.said, done.warning)


def _edit_page(request: Request, name: str, typed: dict[str, str], refused: str | None = None,
               status: int = 200) -> Response:
    details = entry_details(dashboard_of(request).app, name, runs=0)
    if details.missing:
        return render(request, "results.html", 404, heading="No such entry", refused=f"no entry named {name!r}",
                      results=[], back_url=root_of(request) + "/schedule")
    definition = entry_data(details, 0.0)["definition_json"]
    return render(request, "form.html", status, page="edit", heading=f"Edit {name}", editing=True, name=name,
                  typed=_as_typed(typed), fields=EDITABLE, text_fields=", ".join(TEXT_FIELDS),
                  definition_json=Verbatim(definition), refused=refused)


def edit_form(request: Request) -> Response:
    field = request.query_params.get("field", "schedule")
    return _edit_page(request, name_param(request), {"field": field, "value": ""})


async def edit(request: Request) -> Response:
    form, refusal = await posted_form(request)
    if refusal is not None:
        return refusal
    dashboard, name = dashboard_of(request), name_of_form(form)
    done = await run_in_threadpool(actions.edit, dashboard.app, name, form.get("field", ""), form.get("value", ""),
                                   dashboard.require_known)
    if not done.ok:
        return await run_in_threadpool(_edit_page, request, name, form, done.said, done.status)
    dashboard.readings.forget()
    request.scope["query_string"] = name_query(name).encode()
    return await run_in_threadpool(entry, Request(request.scope), done.said, done.warning)


def _confirm(request: Request, question: str, verb: str, fields: dict[str, str], action_url: str, back_url: str,
             names: list[str] | None = None) -> Response:
    return render(request, "confirm.html", page="confirm", question=question, verb=verb,
                  fields=list(fields.items()), action_url=action_url, back_url=back_url, names=names or [])


async def action(request: Request) -> Response:
    """Pause, resume, run now or remove one entry (remove asks for confirmation first)."""
    form, refusal = await posted_form(request)
    if refusal is not None:
        return refusal
    dashboard, name = dashboard_of(request), name_of_form(form)
    try:
        chosen = actions.Action(form.get("action", ""))
    except ValueError:
        return _refused(request, "unknown action", 400)
    back = f"{root_of(request)}/entry?{name_query(name)}"
    if chosen.destructive and form.get("confirmed") != "yes":
        return _confirm(request, f"Remove the entry {name!r}? This cannot be undone.", chosen.value,
                        {"name": url_quoted(name), "action": chosen.value}, f"{root_of(request)}/action", back)
    done = await run_in_threadpool(actions.act, dashboard.app, chosen, name)
    dashboard.readings.forget()
    if done.ok and chosen is actions.Action.REMOVE:
        request.scope["query_string"] = b""
        return await run_in_threadpool(schedule, Request(request.scope), done.said)
    request.scope["query_string"] = name_query(name).encode()
    return await run_in_threadpool(entry, Request(request.scope), done.said if done.ok else None, done.warning,
                                   None if done.ok else done.said, 200 if done.ok else done.status)


async def bulk(request: Request) -> Response:
    """Pause or resume every entry a search picks: confirmation first, listing them (at most
    ``actions.BULK_LIMIT``); the confirmed form carries those names, and only those are acted on."""
    form, refusal = await posted_form(request)
    if refusal is not None:
        return refusal
    dashboard = dashboard_of(request)
    try:
        chosen = actions.Action(form.get("action", ""))
        query = page_query(form)
        if chosen not in actions.BULK_ACTIONS:
            raise ValueError
    except ValueError as exc:
        return _refused(request, str(exc) or "pause or resume only", 400)
    back = _query_url(request, query, 1)
    if form.get("confirmed") == "yes":
        return await _bulk_confirmed(request, chosen, names_of_form(form), back)
    now = await run_in_threadpool(lambda: get_store(dashboard.app).time())
    targets = await run_in_threadpool(actions.bulk_targets, dashboard.app, query, now)
    if targets.too_many:
        return _refused(request, actions.too_many_words(targets.matches), 422, back)
    fields: dict[str, str] = {key: Verbatim(form.get(key, "")) for key in ("name", "task", "state", "action")}
    fields["names"] = names_field(targets.names)
    return _confirm(request, f"{chosen.value.capitalize()} these {len(targets.names)} entries? (A bulk action acts "
                    f"on at most {actions.BULK_LIMIT:,} entries, the ones listed here.)", chosen.value, fields,
                    f"{root_of(request)}/bulk", back, targets.names)


async def _bulk_confirmed(request: Request, chosen: actions.Action, names: list[str], back: str) -> Response:
    """The bulk action on the names its confirmation listed: no search made again."""
    if len(names) > actions.BULK_LIMIT:
        return _refused(request, actions.too_many_words(len(names)), 422, back)
    dashboard = dashboard_of(request)
    results = await run_in_threadpool(actions.bulk, dashboard.app, chosen, names)
    dashboard.readings.forget()
    return render(request, "results.html", page="results", heading=f"{chosen.value.capitalize()}: "
                  f"{sum(r.ok for r in results)} done, {sum(not r.ok for r in results)} refused",
                  results=results, back_url=back)


def _refused(request: Request, why: str, status: int, back: str | None = None) -> Response:
    return render(request, "results.html", status, heading="Refused", refused=why, results=[],
                  back_url=back or root_of(request) + "/schedule")
