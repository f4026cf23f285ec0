"""Rendering for the ``recycler`` command: aligned tables for people, plain dicts for ``--json``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .._storage import LineageRecord, TeacherRecord

_MAX_CELL = 48
_NONE = "-"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int] = ()
) -> str:
    """Rows under their headers, columns padded to one width (``right``: right-aligned ones)."""
    cells = [[cell(h) for h in headers], *[[cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = zip(row, widths, strict=True)
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(padded)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def cell(value: object) -> str:
    """One table cell: control characters escaped, long text shortened."""
    text = _NONE if value is None else str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def when(value: dt.datetime) -> str:
    """A timestamp for people: UTC, to the second."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def number(value: float | None) -> str:
    """A metric or weight for people: six significant digits, ``-`` when absent."""
    return _NONE if value is None else f"{value:.6g}"


def to_json(record: TeacherRecord | LineageRecord) -> dict[str, Any]:
    """A record as a JSON-ready dict: field order kept, enums as values, datetimes ISO-8601."""
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


TEACHER_HEADERS = (
    "ID",
    "STUDY",
    "TRIAL",
    "STATE",
    "STEP",
    "FINAL",
    "METRIC",
    "VALUE",
    "DIR",
    "STATUS",
    "CREATED",
)
_TEACHER_RIGHT = {0, 2, 4, 7}


def teachers_table(records: Sequence[TeacherRecord]) -> str:
    """The ``teachers list`` table (``FINAL`` ``no``: an intermediate checkpoint)."""
    rows = [
        (
            str(r.id),
            r.study,
            str(r.trial_number),
            r.trial_state,
            str(r.step),
            "yes" if r.final else "no",
            r.metric_name or _NONE,
            number(r.metric_value),
            "max" if r.direction.value == "maximize" else "min",
            r.status.value,
            when(r.created_at),
        )
        for r in records
    ]
    return table(TEACHER_HEADERS, rows, right=_TEACHER_RIGHT)


def teacher_details(rec: TeacherRecord) -> str:
    """Every field of one teacher, one ``name: value`` line each."""
    fields = to_json(rec)
    fields["created_at"] = when(rec.created_at) + " UTC"
    width = max(len(name) for name in fields)
    lines = []
    for name, value in fields.items():
        if isinstance(value, dict):
            text = json.dumps(value, sort_keys=True, ensure_ascii=False)
        elif value is None:
            text = _NONE
        else:
            text = str(value)
        if not text.isprintable():
            text = text.encode("unicode_escape").decode("ascii")
        lines.append(f"{name + ':':<{width + 1}} {text}")
    return "\n".join(lines)


LINEAGE_HEADERS = (
    "STUDENT TRIAL",
    "TRIAL ID",
    "RUN",
    "TEACHER",
    "TEACHER STUDY",
    "TEACHER TRIAL",
    "KIND",
    "STEPS",
    "WEIGHT",
    "OVERHEAD",
    "CREATED",
)
_LINEAGE_RIGHT = {0, 3, 5, 7, 8, 9}
#: How many leading characters of a lineage row's run key tell two runs apart in a table.
RUN_PREFIX = 8


def lineage_table(
    records: Sequence[LineageRecord], teachers: Mapping[int, TeacherRecord | None]
) -> str:
    """The ``lineage`` table: each student trial, the teachers it distilled from (``kd``) and
    the one it started from (``init``).

    ``teachers`` maps a teacher id to its record, or to ``None`` when it cannot be read.
    """
    rows = []
    for r in records:
        t = teachers.get(r.teacher_id)
        rows.append(
            (
                str(r.trial_number),
                r.trial_id or _NONE,
                r.run[:RUN_PREFIX] or _NONE,
                str(r.teacher_id),
                _NONE if t is None else t.study,
                _NONE if t is None else str(t.trial_number),
                r.kind,
                str(r.steps_distilled),
                number(r.weight),
                number(r.overhead),
                when(r.created_at),
            )
        )
    return table(LINEAGE_HEADERS, rows, right=_LINEAGE_RIGHT)


def lineage_json(
    record: LineageRecord, teachers: Mapping[int, TeacherRecord | None]
) -> dict[str, Any]:
    """A lineage row for ``--json``: its fields, then its teacher's study and trial (or null)."""
    t = teachers.get(record.teacher_id)
    return {
        **to_json(record),
        "teacher_study": None if t is None else t.study,
        "teacher_trial": None if t is None else t.trial_number,
    }
