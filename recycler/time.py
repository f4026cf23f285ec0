"""Time strings, as in MosaicML Composer, and the trial's clock that resolves them.

A time is an integer with a unit, or a fraction of the planned length:

=======  ===========================================================  ==========
unit     meaning                                                      example
=======  ===========================================================  ==========
``ep``   epochs (integer)                                             ``10ep``
``ba``   batches, i.e. optimizer steps (integer)                      ``500ba``
``tr``   finished trials in the registry (integer)                    ``4tr``
``dur``  fraction of this trial's planned length, 0 to 1 (decimal)    ``0.3dur``
=======  ===========================================================  ==========

Example:
    >>> t = Time.parse("0.3dur")
    >>> t.unit is TimeUnit.DURATION, str(t)
    (True, '0.3dur')
    >>> Clock(step=7, epoch=1, steps_per_epoch=5).reached(Time.parse("1ep"))
    True
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from fractions import Fraction

from .errors import ConfigError

__all__ = ["Clock", "Time", "TimeUnit"]

HELP = (
    "use an integer with ep, ba or tr (e.g. 10ep, 500ba, 4tr) or a fraction with dur (e.g. 0.3dur)"
)
_PATTERN = re.compile(r"(?P<num>-?(?:\d+(?:\.\d*)?|\.\d+))(?P<unit>[a-z]+)")


class TimeUnit(str, Enum):
    """The unit of a :class:`Time`."""

    EPOCH = "ep"
    BATCH = "ba"
    TRIAL = "tr"
    DURATION = "dur"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Time:
    """An amount of training time: ``value`` in ``unit``.

    ``ep``, ``ba`` and ``tr`` take a non-negative ``int``; ``dur`` a ``float`` in [0, 1].

    Example:
        >>> Time.parse("10ep") == Time(10, TimeUnit.EPOCH) == Time(10, "ep")
        True
        >>> Time.parse("10 epochs")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        recycler.errors.ConfigError: invalid time '10 epochs': use an integer with ep, ba or tr ...
    """

    value: int | float
    unit: TimeUnit
    # value as an exact fraction (0.3dur is exactly 3/10), so 0.3 * 10 steps is 3, not 3.0000001
    exact: Fraction = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            unit = TimeUnit(self.unit)
        except ValueError:
            raise ConfigError(f"invalid time unit {self.unit!r}: {HELP}") from None
        value = self.value
        problem = _problem(value, unit)
        if problem:
            raise ConfigError(f"invalid time {value!r} {unit}: {problem}{HELP}")
        if unit is TimeUnit.DURATION:
            value = float(value)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "unit", unit)
        object.__setattr__(self, "exact", Fraction(repr(value)))

    @classmethod
    def parse(cls, text: str | Time) -> Time:
        """Parse a time string such as ``"10ep"``; a :class:`Time` is returned unchanged."""
        if isinstance(text, Time):
            return text
        if not isinstance(text, str):
            raise ConfigError(f"invalid time {text!r}: expected a string such as '10ep'; {HELP}")
        match = _PATTERN.fullmatch(text.strip())
        if match is None:
            raise ConfigError(f"invalid time {text!r}: {HELP}")
        num, unit = match["num"], match["unit"]
        if unit not in _UNITS:
            raise ConfigError(f"invalid time {text!r}: unknown unit {unit!r}; {HELP}")
        if len(num) > 24:  # int() of thousands of digits is refused by Python itself
            raise ConfigError(f"invalid time {text[:40]!r}: the value is too large; {HELP}")
        value: int | float = float(num)
        if unit != TimeUnit.DURATION.value and re.fullmatch(r"-?\d+", num):
            value = int(num)
        problem = _problem(value, TimeUnit(unit))
        if problem:
            raise ConfigError(f"invalid time {text!r}: {problem}{HELP}")
        return cls(value, TimeUnit(unit))

    def __repr__(self) -> str:
        return f"Time({self.value!r}, {self.unit.value!r})"

    def __str__(self) -> str:
        if self.unit is TimeUnit.DURATION:
            return f"{Decimal(repr(self.value)):f}dur"  # positional: 1e-05 shows as 0.00001
        return f"{self.value}{self.unit.value}"


_UNITS = frozenset(u.value for u in TimeUnit)


#: The largest count of epochs, steps or trials a time may hold (more is surely a typo).
MAX_COUNT = 10**12


def _problem(value: object, unit: TimeUnit) -> str:
    """What is wrong with ``value`` as an amount of ``unit`` (with a trailing '; '), or ''."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "the value must be a number; "
    if isinstance(value, int) and value > MAX_COUNT:
        return f"the value is too large (at most {MAX_COUNT:.0e}); "
    if not math.isfinite(value):
        return "the value must be finite; "
    if value < 0:
        return "must not be negative; "
    if unit is TimeUnit.DURATION:
        return "" if value <= 1 else "dur is a fraction of the planned length, at most 1; "
    return "" if isinstance(value, int) else f"{unit} needs a whole number; "


@dataclass(frozen=True)
class Clock:
    """Where a trial is: the current optimizer step and epoch, and what it knows of its length.

    ``step`` is the 0-based index of the current optimizer step since the trial began, ``epoch``
    the 0-based index of the current epoch. ``planned_steps`` / ``planned_epochs`` give the
    trial's planned length (needed by ``dur``), ``steps_per_epoch`` converts between ``ep`` and
    ``ba``, ``finished_trials`` counts the registry's finished trials (for ``tr``).

    Example:
        >>> clock = Clock(step=12, epoch=2, steps_per_epoch=5, planned_epochs=10)
        >>> clock.steps(Time.parse("0.3dur")), clock.reached(Time.parse("2ep"))
        (Fraction(15, 1), True)
    """

    step: int = 0
    epoch: int = 0
    steps_per_epoch: int | None = None
    planned_steps: int | None = None
    planned_epochs: int | None = None
    finished_trials: int = 0

    def __post_init__(self) -> None:
        for name in ("step", "epoch", "finished_trials"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"Clock.{name} must be an integer >= 0, got {value!r}")
        for name in ("steps_per_epoch", "planned_steps", "planned_epochs"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"Clock.{name} must be None or an integer >= 1, got {value!r}")

    @property
    def total_steps(self) -> int | None:
        """The planned length in steps: ``planned_steps``, else epochs x steps per epoch."""
        if self.planned_steps is not None:
            return self.planned_steps
        if self.planned_epochs is not None and self.steps_per_epoch is not None:
            return self.planned_epochs * self.steps_per_epoch
        return None

    def steps(self, t: Time) -> Fraction:
        """``t`` in steps (``ep`` needs steps_per_epoch, ``dur`` a planned length)."""
        if t.unit is TimeUnit.BATCH:
            return t.exact
        if t.unit is TimeUnit.EPOCH:
            return t.exact * self._per_epoch(t)
        if t.unit is TimeUnit.DURATION:
            total = self.total_steps
            if total is None:
                raise ConfigError(
                    f"cannot convert {t} to steps: the clock has no planned length in steps; "
                    "pass planned_steps, or planned_epochs with steps_per_epoch"
                )
            return t.exact * total
        raise ConfigError(f"{t} counts finished trials, not steps; use it only in from/until")

    def epochs(self, t: Time) -> Fraction:
        """``t`` in epochs (``ba`` needs steps_per_epoch, ``dur`` planned_epochs)."""
        if t.unit is TimeUnit.EPOCH:
            return t.exact
        if t.unit is TimeUnit.BATCH:
            return t.exact / self._per_epoch(t)
        if t.unit is TimeUnit.DURATION:
            if self.planned_epochs is not None:
                return t.exact * self.planned_epochs
            return self.steps(t) / self._per_epoch(t)
        raise ConfigError(f"{t} counts finished trials, not epochs; use it only in from/until")

    def reached(self, t: Time) -> bool:
        """Whether the current step is at or after ``t`` (``from t`` holds; ``until t`` does not).

        Epochs compare with ``epoch``, steps with ``step``, trials with ``finished_trials``;
        ``dur`` uses the planned length in steps when known, else ``planned_epochs``.
        """
        unit = t.unit
        if unit is TimeUnit.EPOCH:
            return self.epoch >= t.value
        if unit is TimeUnit.BATCH:
            return self.step >= t.value
        if unit is TimeUnit.TRIAL:
            return self.finished_trials >= t.value
        num, den = t.exact.numerator, t.exact.denominator
        total = self.total_steps
        if total is not None:
            return self.step * den >= num * total
        if self.planned_epochs is not None:
            return self.epoch * den >= num * self.planned_epochs
        raise ConfigError(
            f"{t} is a fraction of the planned length, but the clock has none: "
            "pass planned_epochs (or planned_steps) to the clock"
        )

    def first_step(self, t: Time) -> int | None:
        """The first step index at which :meth:`reached` holds if every epoch has
        ``steps_per_epoch`` steps; None when ``t`` counts trials that have not finished."""
        if t.unit is TimeUnit.TRIAL:
            return 0 if self.finished_trials >= t.value else None
        return math.ceil(self.steps(t))

    def _per_epoch(self, t: Time) -> int:
        if self.steps_per_epoch is None:
            raise ConfigError(f"cannot convert {t} between epochs and steps: pass steps_per_epoch")
        return self.steps_per_epoch
