"""The text and dict syntax of schedules (grammar in :mod:`recycler.schedule`).

Parsing here is syntax only: each part becomes ``"always"``, ``"never"`` or its clauses as a
dict ``{"from" | "until" | "every" | "for": Time}``; :mod:`recycler.schedule` builds the objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..time import Time, TimeUnit

EXAMPLES = (
    "always, never, 'until 20ep', 'from 40ep until 60ep', 'every 20ep for 2ep', "
    "'every 20ep for 2ep from 10ep', 'until 10ep, from 50ep', 'until 0.3dur', "
    "{every: 20ep, for: 2ep}, or a list of these"
)
KEYS = ("from", "until", "every", "for")
_KEYS = ", ".join(KEYS)
_UNITS = [[u.value] for u in TimeUnit]

Fields = dict[str, Time]


def invalid(spec: object, why: str) -> ConfigError:
    """The error for a bad schedule: what was given, what is wrong, and valid examples."""
    shown = f"'{spec}'" if isinstance(spec, str) else repr(spec)
    return ConfigError(f"invalid schedule {shown}: {why}; valid schedules: {EXAMPLES}")


def parse_text(text: str) -> list[str | Fields]:
    """The parts of a schedule string, split at commas."""
    return [_parse_part(part.strip(), text) for part in text.split(",")]


def parse_dict(spec: Mapping[str, Any]) -> Fields:
    """The clauses of a schedule dict such as ``{"every": "20ep", "for": "2ep"}``."""
    fields: Fields = {}
    for key, value in spec.items():
        if key not in KEYS:
            raise invalid(dict(spec), f"unknown key {key!r}; use {_KEYS}")
        try:
            fields[key] = Time.parse(value)
        except ConfigError as exc:
            raise invalid(dict(spec), f"{key}: {exc}") from None
    if not fields:
        raise invalid(dict(spec), "give from, until, or every with for")
    return fields


def _parse_part(part: str, whole: str) -> str | Fields:
    if part in ("always", "never"):
        return part
    if not part:
        raise invalid(whole, "a part between commas is empty")
    tokens = part.split()
    fields: Fields = {}
    for i in range(0, len(tokens), 2):
        key = tokens[i]
        if key not in KEYS:
            raise invalid(whole, f"in '{part}': {key!r} is not always, never or {_KEYS}")
        if key in fields:
            raise invalid(whole, f"in '{part}': {key} is given twice")
        if i + 1 >= len(tokens):
            raise invalid(whole, f"in '{part}': {key} needs a time, e.g. '{key} 10ep'")
        try:
            fields[key] = Time.parse(tokens[i + 1])
        except ConfigError as exc:
            why = str(exc)
            if tokens[i + 2 : i + 3] in _UNITS:
                why = f"write the number and its unit together, e.g. '{key} 20ep'"
            raise invalid(whole, f"in '{part}': {key}: {why}") from None
    return fields
