"""Checks on caller-supplied values before they reach the database."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def check_name(what: str, value: object) -> str:
    """A non-empty string without NUL (any other character, quotes included, is fine)."""
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > 512:
        raise ValueError(
            f"{what} must be a non-empty string of at most 512 characters without NUL, "
            f"got {value!r}"
        )
    return value


def check_text(what: str, value: object, limit: int) -> None:
    """None, or a string without NUL of at most ``limit`` characters (its column's size).

    Checked here so that every backend refuses the same values: PostgreSQL would reject an
    over-long value while SQLite would silently store it.
    """
    if value is None:
        return
    if not isinstance(value, str) or "\x00" in value or len(value) > limit:
        shown = f"{len(value)} characters" if isinstance(value, str) else repr(value)
        raise ValueError(
            f"{what} must be a string of at most {limit} characters without NUL, got {shown}"
        )


def check_tags(tags: Mapping[str, str]) -> Mapping[str, str]:
    """Tags are a flat mapping of strings to strings."""
    if not isinstance(tags, Mapping):
        raise ValueError(f"tags must be a mapping of str to str, got {type(tags).__name__}")
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str) or "\x00" in key + value:
            raise ValueError(f"tag {key!r}={value!r}: tags must map str to str, without NUL")
    return tags


def check_json(what: str, value: Mapping[str, Any]) -> Mapping[str, Any]:
    """A mapping that survives a JSON round trip unchanged (finite numbers, str keys)."""
    try:
        text = json.dumps(dict(value), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable with finite numbers: {exc}") from exc
    out = json.loads(text)
    if not isinstance(out, dict):  # pragma: no cover - dumps(dict) is always an object
        raise ValueError(f"{what} must be a mapping")
    return out


def check_finite(what: str, value: float | None) -> float | None:
    """None or a finite float."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number
