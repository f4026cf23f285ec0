"""What a Distiller's state looks like on disk: versioned JSON, RNG states as lists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The version of :meth:`Distiller.state_dict`'s layout.
STATE_VERSION = 1


def check_state(state: Any) -> None:
    """Refuse anything but a Distiller state of this version, naming what to pass.

    Example:
        >>> check_state({"version": 0})
        Traceback (most recent call last):
        ...
        ValueError: not a Distiller state of version 1: pass what state_dict() gave
    """
    if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
        raise ValueError(
            f"not a Distiller state of version {STATE_VERSION}: pass what state_dict() gave"
        )


def rng_json(state: tuple[Any, ...]) -> list[Any]:
    """A ``random.Random`` state as JSON lists."""
    return [list(s) if isinstance(s, tuple) else s for s in state]


def rng_tuple(state: list[Any]) -> tuple[Any, ...]:
    """The ``random.Random`` state that :func:`rng_json` wrote."""
    return tuple(tuple(s) if isinstance(s, list) else s for s in state)
