"""Teacher rows read defensively: one foreign or hostile row is refused alone, never the query.

A row written by another tool (or by hand) may hold anything SQLite lets a column hold: a
direction ``'max'``, params that are a JSON list, JSON nested ten thousand deep, a
``created_at`` that is no date, a metric stored as text, a sha256 that is no digest. The
columns are therefore fetched raw (JSON as text, no type conversion on the way out) and
checked here, one row at a time: a bad row raises :class:`BadRow`, which readers turn into a
skip with one warning and ``verify`` into a report.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Column, Table, Text, cast, type_coerce
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType

from ._rdb.models import TeacherRow
from ._records import Direction, Status, TeacherRecord

_TABLE: Table = TeacherRow.__table__  # type: ignore[assignment]
_JSON_COLUMNS = ("params", "tags")
#: The most JSON text a row's params or tags may hold (the library writes far less).
MAX_JSON_CHARS = 1 << 20
_SHA = re.compile(r"[0-9a-f]{64}")
_DIRECTIONS = {d.value: d for d in Direction}
_STATUSES = {s.value: s for s in Status}


class BadRow(Exception):
    """A teacher row this library cannot use; ``str()`` says which field and why."""

    def __init__(self, row_id: object, why: str) -> None:
        super().__init__(why)
        self.row_id = row_id
        self.why = why


class StorageWarning(RuntimeWarning):
    """A registry row was skipped (malformed); the registry goes on without it."""


@functools.cache
def teacher_columns() -> tuple[ColumnElement[Any], ...]:
    """The teacher table's columns as raw values: JSON as text, nothing converted."""
    out: list[ColumnElement[Any]] = []
    for column in _TABLE.columns:
        assert isinstance(column, Column)
        if column.name in _JSON_COLUMNS:
            out.append(cast(column, Text).label(column.name))
        else:
            out.append(type_coerce(column, NullType()).label(column.name))
    return tuple(out)


def record_of(row: Any) -> TeacherRecord:
    """The record of a raw row (from :func:`teacher_columns`); ``BadRow`` if it is malformed."""
    m = row._mapping
    row_id = m["id"]
    if not _is_int(row_id):
        raise BadRow(row_id, f"id {_short(row_id)} is not an integer")
    check = _Checker(row_id)
    return TeacherRecord(
        id=int(row_id),
        study=check.text("study", m["study"]),
        trial_number=check.integer("trial_number", m["trial_number"]),
        trial_id=check.text("trial_id", m["trial_id"], optional=True),
        framework=check.text("framework", m["framework"]),
        params=check.json_object("params", m["params"]),
        metric_name=check.text("metric_name", m["metric_name"], optional=True),
        metric_value=check.number("metric_value", m["metric_value"]),
        direction=check.choice("direction", m["direction"], _DIRECTIONS),
        step=check.integer("step", m["step"]),
        epoch=check.integer("epoch", m["epoch"], optional=True),
        final=check.flag("final", m["final"]),
        trial_state=check.text("trial_state", m["trial_state"]),
        output_signature=check.text("output_signature", m["output_signature"]),
        blob_key=check.text("blob_key", m["blob_key"]),
        blob_uri=check.text("blob_uri", m["blob_uri"]),
        sha256=check.sha256(m["sha256"]),
        size_bytes=check.integer("size_bytes", m["size_bytes"], minimum=0),
        format=check.text("format", m["format"]),
        status=check.choice("status", m["status"], _STATUSES),
        reason=check.text("reason", m["reason"], optional=True),
        tags=check.tags(m["tags"]),
        created_at=check.when("created_at", m["created_at"]),
    )


class _Checker:
    def __init__(self, row_id: Any) -> None:
        self.row_id = row_id

    def bad(self, what: str, value: Any, expected: str) -> BadRow:
        return BadRow(self.row_id, f"{what} is {_short(value)}, not {expected}")

    def text(self, what: str, value: Any, *, optional: bool = False) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.bad(what, value, "text")
        return value

    def integer(
        self, what: str, value: Any, *, optional: bool = False, minimum: int = -(2**63)
    ) -> Any:
        if value is None and optional:
            return None
        if not _is_int(value) or not minimum <= value < 2**63:
            raise self.bad(what, value, f"an integer >= {minimum}" if minimum else "an integer")
        return int(value)

    def number(self, what: str, value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(what, value, "a number")
        number = float(value)
        return number if math.isfinite(number) else None

    def flag(self, what: str, value: Any) -> bool:
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise self.bad(what, value, "true or false")

    def choice(self, what: str, value: Any, options: Mapping[str, Any]) -> Any:
        if not isinstance(value, str) or value not in options:
            raise self.bad(what, value, "one of " + ", ".join(options))
        return options[value]

    def sha256(self, value: Any) -> str:
        if not isinstance(value, str) or not _SHA.fullmatch(value):
            raise self.bad("sha256", value, "a sha256 hex digest")
        return value

    def json_object(self, what: str, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", "replace")
        if not isinstance(value, str):
            raise self.bad(what, value, "JSON text")
        if len(value) > MAX_JSON_CHARS:
            raise BadRow(
                self.row_id, f"{what} holds {len(value)} characters of JSON, over {MAX_JSON_CHARS}"
            )
        try:
            parsed = json.loads(value)
        except RecursionError:
            raise BadRow(self.row_id, f"{what} is JSON nested too deeply to read") from None
        except ValueError as exc:
            raise BadRow(self.row_id, f"{what} is not JSON ({exc})") from None
        if isinstance(parsed, str):  # some writers store JSON text as a JSON string
            return self.json_object(what, parsed) if parsed != value else {}
        if not isinstance(parsed, dict):
            raise self.bad(what, parsed, "a JSON object")
        return parsed

    def tags(self, value: Any) -> dict[str, str]:
        tags = self.json_object("tags", value)
        for key, item in tags.items():
            if not isinstance(item, str):
                raise BadRow(self.row_id, f"tag {_short(key)} is {_short(item)}, not text")
        return tags

    def when(self, what: str, value: Any) -> dt.datetime:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                raise self.bad(what, value, "a timestamp") from None
        if not isinstance(value, dt.datetime):
            raise self.bad(what, value, "a timestamp")
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any, limit: int = 60) -> str:
    """A value for a message: its repr, cut (a hostile value may be huge)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = (
        repr(value)
        if not isinstance(value, str) or len(value) < 4 * limit
        else repr(value[: 4 * limit])
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SkipLog:
    """Warn once per malformed row (per registry object), however often it is read."""

    def __init__(self) -> None:
        self._seen: set[object] = set()

    def skip(self, where: str, bad: BadRow) -> None:
        key = (bad.row_id, bad.why)
        if key in self._seen:
            return
        self._seen.add(key)
        warnings.warn(
            f"recycler registry {where}: teacher row {_short(bad.row_id)} skipped, it is "
            f"malformed: {bad.why} (`recycler teachers verify` lists such rows)",
            StorageWarning,
            stacklevel=3,
        )
