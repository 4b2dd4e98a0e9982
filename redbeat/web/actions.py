"""The dashboard's actions, for its forms and its JSON API alike: each goes through
``redbeat.changes``, as the command line's do, so it checks and refuses with the
command line's words."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from celery import Celery

from .. import changes
from ..admin import key_text
from ..config import ensure_conf
from ..entrysearch import PageQuery, StateFilter, schedule_page
from ..specs import (
    FieldSpecError,
    ScheduleSpec,
    SpecError,
    TypedFields,
    app_zone,
    fields_from_text,
    schedule_from_spec,
    value_from_text,
)

__all__ = ["Action", "Outcome", "BulkTargets", "act", "create", "edit", "bulk_targets", "bulk", "too_many_words",
           "SCHEDULE_KINDS", "BULK_ACTIONS", "BULK_LIMIT"]

SCHEDULE_KINDS = ("every", "cron", "rrule", "at")
# Bulk actions act on what a search picks; they never remove (one entry at a time, confirmed).
# A bulk action acts on the names its confirmation listed, all of them shown and sent back:
# at most this many, so that the page and the form stay of a size people and browsers read.
BULK_LIMIT = 1000


class Action(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    RUN_NOW = "run-now"
    REMOVE = "remove"

    @property
    def destructive(self) -> bool:
        """Whether it asks for confirmation first."""
        return self is Action.REMOVE


BULK_ACTIONS = (Action.PAUSE, Action.RESUME)


@dataclass(frozen=True)
class Outcome:
    """What an action did or why it was refused: ``status`` is the HTTP status the API answers."""

    ok: bool
    said: str
    warning: str | None = None
    status: int = 200

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "said" if self.ok else "error": self.said, "warning": self.warning}


def _outcome(change: Callable[[], changes.Change]) -> Outcome:
    try:
        done = change()
    except changes.ChangeRefusedError as exc:
        return Outcome(False, str(exc), status=422)
    except FieldSpecError as exc:
        return Outcome(False, f"{exc.field}: {exc}", status=400)
    except SpecError as exc:
        return Outcome(False, str(exc), status=400)
    return Outcome(True, done.said, done.warning)


def act(app: Celery, action: Action, name: str) -> Outcome:
    """Pause, resume, run now or remove the entry ``name``."""
    steps: dict[Action, Callable[[], changes.Change]] = {
        Action.PAUSE: lambda: changes.set_enabled(app, name, False),
        Action.RESUME: lambda: changes.set_enabled(app, name, True),
        Action.RUN_NOW: lambda: changes.run_now(app, name),
        Action.REMOVE: lambda: changes.remove(app, name),
    }
    return _outcome(steps[action])


def _schedule(app: Celery, typed: Mapping[str, str]) -> Any:
    kind, text = typed.get("kind", ""), typed.get("schedule", "").strip()
    if kind not in SCHEDULE_KINDS:
        raise FieldSpecError("schedule", f"the kind of schedule is one of {', '.join(SCHEDULE_KINDS)}")
    try:
        given: Any = float(text) if kind == "every" else text
    except ValueError:
        raise FieldSpecError("schedule", f"every takes a number of seconds, not {text!r}") from None
    try:
        return schedule_from_spec(ScheduleSpec(**{kind: given}, timezone=typed.get("timezone") or None), app_zone(app))
    except FieldSpecError:
        raise
    except SpecError as exc:
        raise FieldSpecError("schedule", str(exc)) from None


def definition_from_typed(app: Celery, typed: Mapping[str, str]) -> dict[str, Any]:
    """A definition from the create form's text fields (those of ``redbeat add``'s options)."""
    options = tuple(line.strip() for line in typed.get("options", "").splitlines() if line.strip())
    disabled = str(typed.get("disabled", "")).lower() in ("on", "true", "yes", "1")  # a checkbox, or JSON's true
    fields = fields_from_text(TypedFields(args=typed.get("args") or None, kwargs=typed.get("kwargs") or None,
                                          queue=typed.get("queue") or None,
                                          description=typed.get("description") or None,
                                          disabled=disabled, options=options))
    return {"name": typed.get("name", "").strip(), "task": typed.get("task", "").strip() or None,
            "schedule": _schedule(app, typed), **fields}


def create(app: Celery, typed: Mapping[str, str] | None, definition: dict | None, require_known: bool) -> Outcome:
    """Add an entry from the form's text fields, or from a whole ``definition`` (as ``redbeat add --file``)."""
    def adding() -> changes.Change:
        given = definition if definition is not None else definition_from_typed(app, typed or {})
        return changes.add_entry(app, given, require_known)
    return _outcome(adding)


def edit(app: Celery, name: str, field_name: str, value: Any, require_known: bool, as_text: bool = True) -> Outcome:
    """Set one field of the entry, ``value`` typed as ``redbeat edit`` reads it (``as_text``), or as JSON already."""
    def editing() -> changes.Change:
        changes.refuse_field(field_name)
        parsed = value_from_text(field_name, value) if as_text else value
        return changes.edit_field(app, name, field_name, parsed, str(value), require_known)
    return _outcome(editing)


@dataclass(frozen=True)
class BulkTargets:
    """The entries a bulk action would touch: their names (the first ``BULK_LIMIT``), and how
    many match in all (a floor when the search stopped: ``capped``)."""

    names: list[str]
    matches: int = 0
    capped: bool = False

    @property
    def too_many(self) -> bool:
        """Whether more match than one confirmation may list: the search must be narrowed."""
        return self.capped or self.matches > BULK_LIMIT


def too_many_words(count: int) -> str:
    """Why a bulk action is refused for ``count`` entries."""
    return (f"{count:,} entries match, and a bulk action acts on at most {BULK_LIMIT:,}, each listed first: "
            f"narrow the search")


def bulk_targets(app: Celery, query: PageQuery, now: float) -> BulkTargets:
    """What ``query``'s search picks, up to ``BULK_LIMIT``. A bulk action needs a search or a
    state filter: the whole schedule is never picked by accident."""
    if not query.scans and query.state != StateFilter.DUE:
        return BulkTargets([])
    page = schedule_page(app, PageQuery(query.name, query.task, query.state, query.sort, 1, BULK_LIMIT), now)
    prefix = ensure_conf(app).key_prefix
    names = [key_text(key)[len(prefix):] for key in page.keys if key_text(key).startswith(prefix)]
    return BulkTargets(names, page.total, page.capped)


def bulk(app: Celery, action: Action, names: list[str]) -> list[Outcome]:
    """``action`` (pause or resume) on each entry its confirmation listed (not a search made
    again, which may pick others by then); what it did or refused for each."""
    return [act(app, action, name) for name in names]
