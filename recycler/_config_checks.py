"""The checks every config option goes through, and the frozen section they build.

Each check takes ``(value, key path)`` and returns the value normalised, or raises
:class:`ConfigError` naming the key path and what is allowed.

Example:
    >>> a_float(minimum=0.0)(0.5, "distill.weight")
    0.5
"""

from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._names import did_you_mean
from .errors import ConfigError
from .schedule import Schedule
from .time import Time, TimeUnit

S = TypeVar("S", bound="_Section")
Check = Callable[[Any, str], Any]  # (value, key path) -> the value, normalised; or ConfigError


#: The longest integer an option may hold: a 64-bit count (torch seeds, SQLite integers).
MAX_INT = 2**63 - 1
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxdict, _SHOWN.maxlist, _SHOWN.maxtuple = 3, 6, 6, 6
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 80, 80, 40


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, bounded (a value from YAML may be huge)."""
    return _SHOWN.repr(value)


def a_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {shown(value)}")
    return value


def a_float(*, minimum: float | None = None, above: float | None = None) -> Check:
    def check(value: Any, path: str) -> float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and isinstance(value, int) and abs(value) > 2**1000:
            raise ConfigError(f"{path}: {shown(value)} is too large for a number")
        if not number or not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {shown(value)}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{path}: {shown(value)} must be >= {minimum}")
        if above is not None and value <= above:
            raise ConfigError(f"{path}: {shown(value)} must be > {above}")
        return float(value)

    return check


def an_int(*, minimum: int, maximum: int = MAX_INT) -> Check:
    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer >= {minimum}, got {shown(value)}")
        if value < minimum:
            raise ConfigError(f"{path}: {shown(value)} must be >= {minimum}")
        if value > maximum:
            raise ConfigError(f"{path}: {shown(value)} is too large (at most {maximum})")
        return value

    return check


def choice(options: Collection[str], *, or_else: Check | None = None, also: str = "") -> Check:
    """One of ``options``: a tuple, or a registry (read when checking: names added since count)."""

    def check(value: Any, path: str) -> Any:
        if isinstance(value, str) and value in options:
            return value
        if or_else is not None and not isinstance(value, str):
            return or_else(value, path)
        allowed = f"{', '.join(options)} or {also}" if also else f"one of {', '.join(options)}"
        raise ConfigError(f"{path}: {shown(value)} is not {allowed}")

    return check


class Options(Mapping[str, Any]):
    """A read-only, hashable mapping of option names to plain values (``distill.loss_options``).

    Example:
        >>> opts = Options({"beta": 0.5})
        >>> opts["beta"], opts == {"beta": 0.5}, hash(opts) == hash(Options(beta=0.5))
        (0.5, True, True)
    """

    def __init__(self, data: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        self._data: dict[str, Any] = {**(data or {}), **more}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(_frozen(self._data))

    def __repr__(self) -> str:
        return repr(self._data)


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a plain (YAML) value: mappings and lists made immutable."""
    if isinstance(value, Mapping):
        return frozenset((key, _frozen(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def keyword_options(value: Any, path: str) -> Options:
    """A mapping of option names (strings) to values, for a named implementation."""
    if isinstance(value, Options):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of option names to values, got {shown(value)}"
        )
    for key in value:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{path}: option names must be identifiers, got {shown(key)}")
    return Options(value)


def optional(check: Check) -> Check:
    return lambda value, path: None if value is None else check(value, path)


def text(value: Any, path: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: expected a non-empty string, got {shown(value)}")
    return value


def strings(options: tuple[str, ...] = ()) -> Check:
    """A list of strings (a single string is a list of one), each from ``options`` if given."""

    def check(value: Any, path: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{path}: expected a list of strings, got {shown(value)}")
        for item in items:
            if options and item not in options:
                raise ConfigError(f"{path}: {shown(item)} is not one of {', '.join(options)}")
            text(item, path)
        unique = dict.fromkeys(items)
        return tuple(o for o in options if o in unique) if options else tuple(unique)

    return check


def time_span(*, allow_zero: bool = False) -> Check:
    """A :class:`Time` within one trial (ep, ba or dur), more than zero unless allowed."""

    def check(value: Any, path: str) -> Time:
        try:
            t = Time.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if t.unit is TimeUnit.TRIAL:
            raise ConfigError(f"{path}: {t} counts trials; use ep, ba or dur (e.g. 1ep)")
        if t.exact == 0 and not allow_zero:
            raise ConfigError(f"{path}: {t} must be more than zero (or null for never)")
        return t

    return check


def a_schedule(value: Any, path: str) -> Schedule:
    try:
        return Schedule.parse(value)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _reject_unknown(data: Mapping[Any, Any], known: list[str], section: str) -> None:
    for key in data:
        if key in known:
            continue
        path = f"{section}.{key}" if section else str(key)
        hint = did_you_mean(key, known)
        where = f"{section} options" if section else "top-level options"
        raise ConfigError(f"{path}: unknown option{hint}; {where} are {', '.join(known)}")


def _plain(value: Any) -> Any:
    if isinstance(value, _Section):
        return value.to_dict()
    if isinstance(value, (Time, Schedule)):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Options):
        return dict(value)
    return value


def _section_coercer(section: type[_Section]) -> Callable[[Any, str], Any]:
    def coerce(value: Any, path: str) -> Any:
        if isinstance(value, section):
            return value
        if isinstance(value, Mapping):
            return section.from_dict(value)
        raise ConfigError(f"{path}: expected a mapping of {path} options, got {shown(value)}")

    return coerce


class _Section:
    """A validated, frozen group of options; subclasses are frozen dataclasses."""

    _name: ClassVar[str]
    _checks: ClassVar[dict[str, Check]]

    def __post_init__(self) -> None:
        for name, check in self._checks.items():
            object.__setattr__(self, name, check(getattr(self, name), self._path(name)))
        self._check_together()

    def _check_together(self) -> None:
        """Checks that involve several options."""

    @classmethod
    def _path(cls, name: str) -> str:
        return f"{cls._name}.{name}" if cls._name else name

    if TYPE_CHECKING:

        def __init__(self, **options: Any) -> None: ...

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """Build from a mapping; unknown keys raise :class:`ConfigError` naming them."""
        where = cls._name or "the config"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of options, got {shown(data)}")
        _reject_unknown(data, list(cls._checks), cls._name)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (times and schedules as strings) that :meth:`from_dict` reads back."""
        return {name: _plain(getattr(self, name)) for name in self._checks}
