"""The schedule as a file: ``export`` writes it, ``import`` reads it back, a
chunk at a time, so that 100,000 entries cost about what 1,000 do.

Two export formats, both read back exactly (definitions, meta, status,
parked marks, scores), and told apart by their ``format`` member, which
comes first as RedBeat writes it (an export whose members were reordered is
read whole instead of streamed; see ``ScheduleFile.rows``):

- ``redbeat-export`` (``export``'s default, and what every RedBeat export
  before was): each entry's hash fields as the text stored, one entry a line;
- ``redbeat-specs`` (``export --format specs``): for people and diffs. One
  member per entry, sorted by name, each field that holds a JSON object shown
  decoded (``"definition": {"task": ...}``) with stable indentation; a field
  whose text would not come back byte for byte from its decoded value is
  kept as text under ``"text"``. No export time, so two exports of one
  schedule are the same file.

A JSON object of ``{name: spec}`` (``beat_schedule``'s shape) imports too:
each spec is checked as the command line checks an ``add`` (``validation``)
and written like a ``beat_schedule`` entry, keeping the run history of the
entry it replaces.

An import reads the file twice: once to plan (nothing is written while any
entry is invalid), once to write, in transactions of ``CHUNK`` entries.
Memory holds one chunk of entries, and the names seen (for duplicates and
``--prune``).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, Any

from celery import Celery

from .admin import key_bytes, key_text
from .client import get_store
from .decoder import dumps
from .entry import RedBeatSchedulerEntry, write_over
from .entrywrites import ImportedWrite, StoredFields
from .jsonstream import JsonReader
from .queries import chunks
from .records import same_json
from .store import NEVER, ScheduleStore
from .validation import check_written

__all__ = ["ExportFormat", "write_export", "ScheduleFile", "FileRow", "ImportPlan", "ImportOptions",
           "import_schedule", "plan_import", "apply_import", "CHUNK"]

CHUNK = 1000
# Told after each chunk: what stage an export or import is at, and how many entries it has done.
Progress = Callable[[str, int], None]


class ExportFormat(str, Enum):
    """The ``format`` member of an export: what ``import`` recognises it by."""

    EXPORT = "redbeat-export"
    SPECS = "redbeat-specs"


EXPORT_FORMAT = ExportFormat.EXPORT.value
# The members of an export, of either format: ``import`` reads one whole when its first member is
# another of them than 'format' (its members were reordered), and streams it otherwise.
EXPORT_MEMBERS = frozenset({"format", "version", "prefix", "exported_at", "statics", "entries"})


def _no_progress(stage: str, count: int) -> None:
    """Progress goes nowhere unless the caller shows it."""


# -- export ------------------------------------------------------------------------------

def write_export(app: Celery, out: IO[str], fmt: ExportFormat = ExportFormat.EXPORT,
                 progress: Progress = _no_progress) -> int:
    """Write the whole schedule to ``out`` in ``fmt``, sorted by key; returns how many entries.

    Each entry is there once, with the score and fields it had at one moment,
    even while beat moves scores (``ScheduleStore.schedule_members``); keys
    and field values are kept as the text stored (bytes that are not UTF-8
    escaped), so parked and malformed entries round-trip too. Members
    outside the prefix are no RedBeat entries and are left out. Only the
    keys are held all at once (to sort them); entries are read a chunk at a time.
    """
    store = get_store(app)
    prefix = store.conf.key_prefix
    keys = sorted(key for chunk in store.schedule_members(CHUNK) for key in chunk if key.startswith(prefix.encode()))
    header: dict[str, Any] = {"format": fmt.value, "version": 1, "prefix": prefix}
    if fmt is ExportFormat.EXPORT:
        header["exported_at"] = time.time()
    header["statics"] = sorted(store.static_names())
    head = json.dumps(header, indent=2)
    out.write(head[:-2] + (',\n  "entries": [' if fmt is ExportFormat.EXPORT else ',\n  "entries": {'))
    written = 0
    for start in range(0, len(keys), CHUNK):
        for key, (score, raw) in zip(keys[start:start + CHUNK], store.read_entries(keys[start:start + CHUNK])):
            if score is None:
                continue  # it left the schedule while the keys were read
            fields = {key_text(name): key_text(value) for name, value in raw.items()} if isinstance(raw, dict) else {}
            out.write(("\n" if not written else ",\n") + _entry_text(fmt, key_text(key), prefix, score, fields))
            written += 1
        progress("exported", written)
    out.write(("\n  " if written else "") + ("]" if fmt is ExportFormat.EXPORT else "}") + "\n}\n")
    return written


def _entry_text(fmt: ExportFormat, key: str, prefix: str, score: float, fields: dict[str, str]) -> str:
    if fmt is ExportFormat.EXPORT:
        return "    " + json.dumps({"key": key, "score": _score_to_json(score), "fields": fields}, allow_nan=False)
    shown: dict[str, Any] = {"score": _score_to_json(score)}
    as_text = {}
    for name, value in fields.items():
        decoded = _decoded_exactly(value) if name not in ("score", "text") else None
        if decoded is None:
            as_text[name] = value
        else:
            shown[name] = decoded
    if as_text:
        shown["text"] = as_text
    member = json.dumps(key[len(prefix):]) + ": " + json.dumps(dict(sorted(shown.items())), indent=2, allow_nan=False)
    return "\n".join("    " + line for line in member.splitlines())


def _decoded_exactly(value: str) -> dict | None:
    """The JSON object ``value`` holds, if ``json.dumps`` of it gives back ``value`` exactly
    (and it holds no Infinity or NaN, which are no JSON: such a field stays text)."""
    try:
        decoded = json.loads(value)
        return decoded if isinstance(decoded, dict) and json.dumps(decoded, allow_nan=False) == value else None
    except (ValueError, RecursionError):
        return None


def _score_to_json(score: float) -> float | str:
    # JSON has no infinity: "inf" and "-inf" (never due) are written as text.
    return score if math.isfinite(score) else str(score)


def _score_from_json(value: Any) -> float | None:
    if value is None:
        return None
    if value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"'score' must be a number, \"inf\" or \"-inf\", not {value!r}")
    return float(value)


# -- reading a file -------------------------------------------------------------------------

@dataclass(frozen=True)
class FileRow:
    """One entry of an import file: an export's (``fields``, copied exactly), a spec
    (written like a ``beat_schedule`` entry), or why the row is no entry (``problem``)."""

    name: str
    score: float | None = None
    fields: dict[str, str] | None = None
    spec: Any = None
    problem: str | None = None

    @property
    def exact(self) -> bool:
        return self.fields is not None


class ScheduleFile:
    """An import's source, read again for each pass: a seekable text stream, or ``{name: spec}`` data."""

    def __init__(self, stream: IO[str] | None = None, data: dict | None = None) -> None:
        self.stream = stream
        self.data = data
        self.statics: list[str] = []

    @classmethod
    def from_stream(cls, stream: IO[str]) -> ScheduleFile:
        """Read from ``stream``; one that cannot be read twice (a pipe) is copied to a temporary file first."""
        if not stream.seekable():
            copy = tempfile.TemporaryFile("w+", encoding="utf-8", errors="surrogateescape")
            for chunk in iter(lambda: stream.read(1 << 16), ""):
                copy.write(chunk)
            stream = copy
        return cls(stream=stream)

    def rows(self) -> Iterator[FileRow]:
        """Every row, in the file's order; ValueError when the file is neither an export nor ``{name: spec}``."""
        if self.data is not None:
            if not isinstance(self.data, dict):
                raise ValueError("an import is a RedBeat export or a JSON object of {name: spec}")
            yield from (FileRow(str(name), spec=spec) for name, spec in self.data.items())
            return
        assert self.stream is not None
        self.stream.seek(0)
        reader = JsonReader(self.stream)
        if reader.peek() != "{":
            raise ValueError("an import is a RedBeat export or a JSON object of {name: spec}")
        members = reader.members()
        first = next(members, None)
        if first in EXPORT_MEMBERS and first != "format":
            # An export whose members were reordered (sorted by jq -S or json.dumps(sort_keys=True)):
            # read whole, not streamed, and read on with 'format' first and 'entries' last.
            reader = JsonReader(io.StringIO(self._format_first()))
            members = reader.members()
            first = next(members, None)
        if first is not None:
            yield from self._document_rows(reader, itertools.chain([first], members))
        reader.end()

    def _format_first(self) -> str:
        """The whole document, its members reordered as RedBeat writes an export."""
        assert self.stream is not None
        self.stream.seek(0)
        try:
            document = json.loads(self.stream.read().removeprefix("\ufeff"))
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if "format" in document and "entries" in document:
            fmt, entries = document.pop("format"), document.pop("entries")
            document = {"format": fmt, **document, "entries": entries}
        return json.dumps(document)

    def _document_rows(self, reader: JsonReader, members: Iterator[str]) -> Iterator[FileRow]:
        for number, name in enumerate(members):
            value = reader.value()
            if number == 0 and name == "format" and value in {f.value for f in ExportFormat}:
                yield from self._export_rows(reader, members, ExportFormat(value))
                return
            if name == "format" and value in {f.value for f in ExportFormat}:
                raise ValueError(f"'format' is given among specs: an export's members are only "
                                 f"{', '.join(sorted(EXPORT_MEMBERS))}")
            yield FileRow(name, spec=value)

    def _export_rows(self, reader: JsonReader, members: Iterator[str], fmt: ExportFormat) -> Iterator[FileRow]:
        """The rows of an export, whose header members come before its entries."""
        source_prefix: Any = None
        for name in members:
            if name != "entries":
                value = reader.value()
                source_prefix = value if name == "prefix" else source_prefix
                if name == "statics":
                    self.statics = _statics(value)
                continue
            if not isinstance(source_prefix, str):
                raise ValueError("an export needs 'prefix' as text before its 'entries'")
            if fmt is ExportFormat.EXPORT:
                yield from (_export_row(number, reader.value(), source_prefix)
                            for number, _ in enumerate(reader.items(), 1))
            else:
                yield from (_specs_row(entry_name, reader.value()) for entry_name in reader.members())


def _statics(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError("an export's 'statics' must be a list of names")
    return value


def _export_row(number: int, row: Any, prefix: str) -> FileRow:
    """One row of a ``redbeat-export``'s ``entries``."""
    label = f"row {number}"
    if not isinstance(row, dict):
        return FileRow(label, problem="an entry of an export must be an object")
    key, fields = row.get("key"), row.get("fields") or {}
    if not isinstance(key, str) or not key.startswith(prefix) or key == prefix:
        return FileRow(label, problem=f"'key' must be text that starts with the prefix {prefix!r}")
    if not isinstance(fields, dict) or not all(isinstance(value, str) for value in fields.values()):
        return FileRow(label, problem=f"{key!r}: 'fields' must map field names to text")
    try:
        return FileRow(key[len(prefix):], _score_from_json(row.get("score")), fields)
    except ValueError as exc:
        return FileRow(label, problem=f"{key!r}: {exc}")


def _specs_row(name: str, entry: Any) -> FileRow:
    """One entry of a ``redbeat-specs`` export: decoded fields encoded back as stored."""
    if not isinstance(entry, dict):
        return FileRow(name, problem="an entry of a specs export must be an object")
    fields: dict[str, str] = {}
    as_text = entry.get("text") or {}
    if not isinstance(as_text, dict) or not all(isinstance(value, str) for value in as_text.values()):
        return FileRow(name, problem="'text' must map field names to text")
    for field_name, value in entry.items():
        if field_name in ("score", "text"):
            continue
        if not isinstance(value, dict):
            return FileRow(name, problem=f"field {field_name!r} must be a JSON object (or text, under 'text')")
        fields[field_name] = json.dumps(value)
    try:
        return FileRow(name, _score_from_json(entry.get("score")), {**fields, **as_text})
    except ValueError as exc:
        return FileRow(name, problem=str(exc))


# -- planning and writing ------------------------------------------------------------------

@dataclass(frozen=True)
class ImportOptions:
    """How an import checks and writes: ``require_known``: the app's tasks are all loaded
    (``celery -A``), so an unknown task is refused; ``force``: copy entries the write
    checks refuse; ``prune``: remove the entries the file does not hold."""

    require_known: bool = False
    force: bool = False
    prune: bool = False


@dataclass
class ImportPlan:
    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # Entries not in the file, removed with --prune (static entries never are).
    remove: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)
    # Exported entries beat cannot run: imported as they are (a backup is
    # exact), and parked by beat when they come due.
    unrunnable: dict[str, str] = field(default_factory=dict)
    # Schedule members that are RedBeat's own keys (``doctor`` reports them): --prune never removes those.
    left_alone: list[str] = field(default_factory=list)
    # Names given more than once, with how many times: the last one given is written.
    duplicates: dict[str, int] = field(default_factory=dict)
    statics: list[str] = field(default_factory=list)
    source: ScheduleFile | None = None
    options: ImportOptions = ImportOptions()

    def as_dict(self) -> dict:
        return {"create": self.create, "update": self.update, "unchanged": self.unchanged, "remove": self.remove,
                "invalid": self.invalid, "unrunnable": self.unrunnable, "duplicates": self.duplicates,
                "left_alone": self.left_alone}


def import_schedule(app: Celery, source: ScheduleFile, apply: bool = False, options: ImportOptions = ImportOptions(),
                    progress: Progress = _no_progress) -> tuple[ImportPlan, int]:
    """Plan importing ``source``, and write it when ``apply`` and no entry is invalid;
    returns the plan and how many entries were written or removed.

    ValueError when the file is neither an export nor ``{name: spec}``."""
    plan = ImportPlan(source=source, options=options)
    seen: set[str] = set()
    for chunk in chunks(source.rows(), CHUNK):
        _plan_chunk(app, chunk, plan, seen)
        progress("checked", len(seen))
    plan.statics = source.statics
    if options.prune:
        plan.remove = list(_not_in_file(get_store(app), seen, set(source.statics), plan.left_alone))
    written = _write(app, plan, progress) if apply and not plan.invalid else 0
    return plan, written


def _write(app: Celery, plan: ImportPlan, progress: Progress) -> int:
    """The second pass: each chunk planned again against what is stored now, and written in one transaction."""
    assert plan.source is not None
    store = get_store(app)
    if plan.statics:
        store.write_imported([], plan.statics)
    written = 0
    for chunk in chunks(plan.source.rows(), CHUNK):
        writes = _plan_chunk(app, chunk, ImportPlan(options=plan.options), set(), writing=True)
        written += store.write_imported(writes)
        progress("written", written)
    for names in chunks(plan.remove, CHUNK):
        store.write_entries([], [], names)
        written += len(names)
        progress("written", written)
    return written


def _plan_chunk(app: Celery, rows: list[FileRow], plan: ImportPlan, seen: set[str],
                writing: bool = False) -> list[ImportedWrite]:
    """Add what ``rows`` would change to ``plan``; return the writes that do it when ``writing``."""
    store = get_store(app)
    prefix = store.conf.key_prefix
    entries_of: dict[str, RedBeatSchedulerEntry] = {}
    checked: list[tuple[FileRow, str]] = []
    for row in _last_of_each(rows, plan, seen):
        key = prefix + row.name
        own_key = None if row.problem or store.is_entry_key(key_bytes(key)) else store.keys.no_entry_name(key)
        problem = row.problem or own_key or _row_problem(app, row, plan, entries_of)
        if problem is not None:
            plan.invalid[row.name] = problem
            continue
        checked.append((row, key))
    # Read as stored, not decoded: only the fields and the score are compared.
    current = store.read_entries([key_bytes(key) for _, key in checked])
    writes = []
    for (row, key), (stored_score, raw) in zip(checked, current):
        if isinstance(raw, str):
            # Someone else's data under the prefix: beat never writes it, nor does an import.
            plan.invalid[row.name] = f"its key is a {raw}, not a hash: left alone"
            continue
        raw_fields = raw or {}
        stored = {key_text(name): key_text(value) for name, value in raw_fields.items()}
        if row.fields is not None:
            same, score, fields = stored == row.fields and stored_score == row.score, row.score, row.fields
        else:
            entry = entries_of[row.name]
            same = bool(stored) and same_json(stored.get("definition"), entry.definition_json())
            # The score is worked out only to write (it costs a schedule's next run).
            score, fields = _spec_write(entry, stored) if writing and not same else (None, {})
        if row.name not in seen:
            (plan.unchanged if same else plan.update if stored else plan.create).append(row.name)
            seen.add(row.name)
        if writing and not same:
            writes.append(ImportedWrite(key_bytes(key), NEVER if score is None else score,
                                        {key_bytes(name): key_bytes(value) for name, value in fields.items()},
                                        row.exact))
    return writes


def _last_of_each(rows: list[FileRow], plan: ImportPlan, seen: set[str]) -> Iterator[FileRow]:
    """The rows of a chunk, each name once: the last one given counts (a name given again in a
    later chunk is written again over the first, as the second pass writes chunk after chunk).
    Names given more than once are counted in ``plan.duplicates``."""
    last: dict[str, FileRow] = {}
    for row in rows:
        if row.problem is None and (row.name in last or row.name in seen):
            plan.duplicates[row.name] = plan.duplicates.get(row.name, 1) + 1
        last[row.name] = row
    return iter(last.values())


def _row_problem(app: Celery, row: FileRow, plan: ImportPlan,
                 entries_of: dict[str, RedBeatSchedulerEntry]) -> str | None:
    """Why ``row`` cannot be imported, or None. An export's entry that beat cannot run is
    copied as it is (a backup is exact) and only noted in ``plan.unrunnable``; one the write
    checks refuse needs ``force``. A spec must be an entry that passes them."""
    options = plan.options
    if row.fields is None:
        try:
            spec = _spec_from_json(row.spec)
            entries_of[row.name] = RedBeatSchedulerEntry(name=row.name, app=app, **spec)
            if not options.force:
                check_written(row.spec, app, options.require_known)
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None
    if not row.fields or "parked" in row.fields:
        return None
    try:
        RedBeatSchedulerEntry.decode_definition(row.fields.get("definition") or "")
    except Exception as exc:
        plan.unrunnable[row.name] = str(exc)
        return None
    if not options.force:
        try:
            check_written(json.loads(row.fields["definition"]), app, options.require_known)
        except Exception as exc:
            return f"{exc} (--force copies it as it is)"
    return None


def _spec_from_json(spec: Any) -> dict:
    """A ``beat_schedule``-style spec given as JSON: its schedule decoded like a definition."""
    if not isinstance(spec, dict):
        raise ValueError("a spec must be a JSON object")
    fields = RedBeatSchedulerEntry.decode_definition(json.dumps({"task": spec.get("task"), **spec}))
    fields.pop("name", None)
    return fields


def _spec_write(entry: RedBeatSchedulerEntry, existing: dict[str, str]) -> tuple[float, dict[str, str]]:
    """The score and fields (definition and meta) an import writes for a spec's ``entry``
    over the fields ``existing`` holds, by the score rule of every save; a new entry whose
    score cannot be computed gets 0 (beat looks at it at once, and parks it if it
    cannot schedule it either)."""
    raw = {name: key_bytes(value) for name, value in existing.items() if name in ("definition", "meta", "status")}
    stored = StoredFields(raw.get("definition"), raw.get("meta"), raw.get("status")) if existing else None
    try:
        write = write_over(entry, stored)
    except Exception:
        return 0.0, {"definition": entry.definition_json(), "meta": entry.meta_json()}
    return write.score, {"definition": key_text(write.definition), "meta": key_text(write.meta)}


def _not_in_file(store: ScheduleStore, names: set[str], statics: set[str], left_alone: list[str]) -> Iterator[str]:
    """Names of the schedule's entries that are neither in ``names`` nor static (from
    ``beat_schedule``: beat writes those again as it starts, so an import leaves them alone).
    Members that are RedBeat's own keys are no entries: never removed, added to ``left_alone``."""
    prefix = store.conf.key_prefix.encode()
    statics = statics | store.static_names()
    for chunk in store.schedule_members(CHUNK):
        for key in chunk:
            name = key_text(key[len(prefix):])
            if not key.startswith(prefix) or name in names or name in statics:
                continue
            if store.is_entry_key(key):
                yield name
            else:
                left_alone.append(key_text(key))


# -- the Python API of before: a plan of in-memory data, then its writes -------------------

def plan_import(app: Celery, data: Any) -> ImportPlan:
    """What importing ``data`` (an export, or ``{name: beat_schedule spec}``) would change."""
    if isinstance(data, dict) and data.get("format") in {f.value for f in ExportFormat}:
        return import_schedule(app, ScheduleFile(stream=io.StringIO(json.dumps(data))))[0]
    return import_schedule(app, ScheduleFile(data=data))[0]


def apply_import(app: Celery, plan: ImportPlan) -> int:
    """Write what ``plan`` says; returns how many entries were written."""
    return _write(app, plan, _no_progress) if not plan.invalid else 0


def spec_data(specs: dict) -> dict:
    """A ``beat_schedule`` dict of Python objects as JSON data, as ``import --beat-schedule`` reads it."""
    return {name: json.loads(dumps(spec)) for name, spec in specs.items()}
