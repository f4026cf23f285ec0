"""When knowledge distillation is on: windows, periodic blocks and their unions.

A schedule is ``always``, ``never``, or one or more *parts* joined by commas (their union).
A part is a list of clauses, each a keyword and a :mod:`time <recycler.time>` string, in any
order, each keyword at most once::

    schedule := "always" | "never" | part ("," part)*
    part     := "always" | "never" | clause+
    clause   := "from" TIME | "until" TIME | "every" TIME | "for" TIME
    TIME     := 10ep | 500ba | 4tr | 0.3dur      (see recycler.time)

- ``from A until B`` is the half-open window [A, B); either end may be left out.
- ``every P for L`` is on for the first L of every P, counted from ``from`` (or from the start
  of training), and may be bounded by ``from``/``until``. ``for`` comes only with ``every``.
  P and L take ep, ba or dur; ``tr`` (finished trials in the registry) only bounds a window.
- A step is on when its start lies in the schedule: step ``s`` of epoch ``e`` is inside
  ``until 0.3dur`` of 10 planned steps when ``s < 3``. Units mix freely; epochs compare with the
  clock's epoch, steps with its step, ``dur`` with the planned steps (else planned epochs).

The same schedules as dicts (YAML) use the keys ``from``, ``until``, ``every`` and ``for``, and a
list of dicts or strings is their union. The schedules of the papers, for a 200-epoch run
(Liu et al. 2022, Table 7: 20 KD epochs; Blakeney et al. 2022, section 5.2):

======================  =====================================  ================================
every epoch             ``always``
first 20 epochs         ``until 20ep``                         epochs 0-19
middle 20 epochs        ``from 90ep until 110ep``              epochs 90-109, centred
last 20 epochs          ``from 180ep`` (or ``from 0.9dur``)    epochs 180-199
first and last 10       ``until 10ep, from 190ep``             epochs 0-9 and 190-199
1 epoch of every 10     ``every 10ep for 1ep``                 epochs 0, 10, ..., 190
2 epochs of every 20    ``every 20ep for 2ep``                 epochs 0, 1, 20, 21, ..., 180, 181
first 30% of training   ``until 0.3dur``                       steps < 0.3 x planned steps
======================  =====================================  ================================

Liu et al. do not say which epoch of each block is distilled; blocks here start where training
(or ``from``) starts, so KD covers the first epoch, the early phase that Blakeney et al. find
matters most. ``every 10ep for 1ep from 9ep`` moves the block to the last epoch of each ten.

Example:
    >>> s = Schedule.parse("every 20ep for 2ep")
    >>> [e for e in range(60) if s.active(Clock(epoch=e))]
    [0, 1, 20, 21, 40, 41]
    >>> s.fraction(planned_epochs=200)
    0.1
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import chain, pairwise
from math import gcd, lcm
from typing import Any, ClassVar

from ..errors import ConfigError
from ..time import Clock, Time, TimeUnit
from ._intervals import Grid, Span, gaps, union
from ._syntax import Fields, invalid, parse_dict, parse_text

__all__ = ["ALWAYS", "NEVER", "Always", "AnyOf", "Clock", "Never", "Periodic", "Schedule", "Window"]

_EP, _BA, _TR, _DUR = TimeUnit.EPOCH, TimeUnit.BATCH, TimeUnit.TRIAL, TimeUnit.DURATION


class Schedule(ABC):
    """When distillation is on; build one with :meth:`parse`.

    Example:
        >>> s = Schedule.parse({"until": "20ep"})
        >>> s.active(Clock(epoch=19)), s.active(Clock(epoch=20)), str(s)
        (True, False, 'until 20ep')
    """

    @abstractmethod
    def active(self, clock: Clock) -> bool:
        """Whether the step at ``clock`` distils (O(1))."""

    @abstractmethod
    def _spans(self, plan: Clock) -> Iterator[Span]:
        """Ranges of step indices [a, b) this schedule covers under ``plan`` (may overlap)."""

    @abstractmethod
    def _units(self) -> set[TimeUnit]:
        """The units this schedule mentions."""

    @property
    def units(self) -> frozenset[TimeUnit]:
        """The units this schedule mentions (e.g. whether it needs the finished-trial count)."""
        return frozenset(self._units())

    def active_steps(
        self,
        *,
        planned_epochs: int | None = None,
        steps_per_epoch: int | None = None,
        planned_steps: int | None = None,
        finished_trials: int = 0,
    ) -> int:
        """How many steps of the planned length distil, exactly.

        The length is ``planned_steps``, else ``planned_epochs`` x ``steps_per_epoch`` (every
        epoch that long); with only ``planned_epochs`` each epoch counts as one step. ``tr``
        bounds compare with ``finished_trials``. Arithmetic, never a loop over the steps:
        O(log) per part, and a union of several periodic parts merges their blocks over one
        common period only.

        Example:
            >>> Schedule.parse("every 10ep for 1ep").active_steps(planned_epochs=60,
            ...                                                   steps_per_epoch=100)
            600
        """
        plan = _plan(self, planned_epochs, steps_per_epoch, planned_steps, finished_trials)
        return self._count(plan)

    def fraction(
        self,
        *,
        planned_epochs: int | None = None,
        steps_per_epoch: int | None = None,
        planned_steps: int | None = None,
        finished_trials: int = 0,
    ) -> float:
        """The fraction of the planned steps that distil (see :meth:`active_steps`).

        Example:
            >>> Schedule.parse("until 10ep, from 190ep").fraction(planned_epochs=200)
            0.1
        """
        plan = _plan(self, planned_epochs, steps_per_epoch, planned_steps, finished_trials)
        return self._count(plan) / _total(plan)

    def _count(self, plan: Clock) -> int:
        return sum(b - a for a, b in union(self._spans(plan), 0, _total(plan)))

    def __or__(self, other: Schedule) -> Schedule:
        return AnyOf((self, other))

    @staticmethod
    def parse(spec: Schedule | str | Mapping[str, Any] | list[Any] | tuple[Any, ...]) -> Schedule:
        """A schedule from a string (see the module docs), a dict, a list of those, or a
        schedule (returned unchanged); raises :class:`ConfigError` naming the bad part."""
        if isinstance(spec, Schedule):
            return spec
        if isinstance(spec, str):
            parts = [_build(fields, spec) for fields in parse_text(spec)]
        elif isinstance(spec, Mapping):
            parts = [_build(parse_dict(spec), spec)]
        elif isinstance(spec, (list, tuple)):
            if not spec:
                raise invalid(spec, "the list is empty (write never to turn KD off)")
            parts = [Schedule.parse(item) for item in spec]
        else:
            raise invalid(spec, f"expected a string, a dict or a list, not {type(spec).__name__}")
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))


class _Constant(Schedule):
    _on: ClassVar[bool]

    def active(self, clock: Clock) -> bool:
        return self._on

    def _spans(self, plan: Clock) -> Iterator[Span]:
        return iter([(0, _total(plan))] if self._on else [])

    def _units(self) -> set[TimeUnit]:
        return set()

    def __str__(self) -> str:
        return "always" if self._on else "never"


@dataclass(frozen=True)
class Always(_Constant):
    """Distil on every step: ``always`` (also the constant ``ALWAYS``).

    Example:
        >>> ALWAYS.active(Clock(step=123)), ALWAYS == Schedule.parse("always")
        (True, True)
    """

    _on = True


@dataclass(frozen=True)
class Never(_Constant):
    """Never distil: ``never`` (also the constant ``NEVER``).

    Example:
        >>> NEVER.fraction(planned_epochs=10)
        0.0
    """

    _on = False


ALWAYS, NEVER = Always(), Never()


@dataclass(frozen=True)
class Window(Schedule):
    """The half-open window [``start``, ``end``) (``from start until end``); either may be None.

    Example:
        >>> w = Window(start=Time.parse("40ep"), end=Time.parse("60ep"))
        >>> str(w), w.active(Clock(epoch=40)), w.active(Clock(epoch=60))
        ('from 40ep until 60ep', True, False)
    """

    start: Time | None = None
    end: Time | None = None

    def __post_init__(self) -> None:
        _coerce_times(self, "start", "end")
        _check_bounds(self, self.start, self.end)
        if self.start is None and self.end is None:
            raise invalid(str(self), "a window needs from, until or both")

    def active(self, clock: Clock) -> bool:
        if self.start is not None and not clock.reached(self.start):
            return False
        return self.end is None or not clock.reached(self.end)

    def _spans(self, plan: Clock) -> Iterator[Span]:
        yield _first_step(plan, self.start, 0), _first_step(plan, self.end, _total(plan))

    def _units(self) -> set[TimeUnit]:
        return {t.unit for t in (self.start, self.end) if t is not None}

    def __str__(self) -> str:
        return _clauses(("from", self.start), ("until", self.end))


@dataclass(frozen=True)
class Periodic(Schedule):
    """On for the first ``length`` of every ``every``, counted from ``start`` (or 0), inside the
    optional window [``start``, ``end``): ``every 20ep for 2ep from 10ep until 100ep``.

    Example:
        >>> p = Schedule.parse("every 20ep for 2ep from 10ep")
        >>> isinstance(p, Periodic), [e for e in range(60) if p.active(Clock(epoch=e))]
        (True, [10, 11, 30, 31, 50, 51])
    """

    every: Time
    length: Time
    start: Time | None = None
    end: Time | None = None

    def __post_init__(self) -> None:
        _coerce_times(self, "every", "length", "start", "end")
        _check_bounds(self, self.start, self.end)
        for key, t in (("every", self.every), ("for", self.length)):
            if t.unit is _TR:
                raise invalid(str(self), f"{key} {t}: every/for take ep, ba or dur, not tr")
            if t.exact <= 0:
                raise invalid(str(self), f"{key} {t} must be more than zero")
        if self.every.unit is self.length.unit and self.length.exact > self.every.exact:
            raise invalid(str(self), f"for {self.length} is longer than every {self.every}")

    def active(self, clock: Clock) -> bool:
        if self.start is not None and not clock.reached(self.start):
            return False
        if self.end is not None and clock.reached(self.end):
            return False
        every, length, anchor = self.every, self.length, self._anchor()
        unit = every.unit
        if length.unit is unit and unit is not _DUR and (anchor is None or anchor.unit is unit):
            pos = clock.epoch if unit is _EP else clock.step  # the common case: integers only
            return (pos - (0 if anchor is None else anchor.value)) % every.value < length.value
        in_epochs, grid = self._grid(clock)
        return grid.on(clock.epoch if in_epochs else clock.step)

    def _anchor(self) -> Time | None:
        return self.start if self.start is not None and self.start.unit is not _TR else None

    def _grid(self, clock: Clock) -> tuple[bool, Grid]:
        """(whether blocks count epochs rather than steps, the blocks as an integer grid)."""
        return _grid(self, clock.steps_per_epoch, clock.planned_steps, clock.planned_epochs)

    def _coordinate(self, clock: Clock) -> TimeUnit:
        """Count blocks in epochs or in steps: steps if any of every/for/from is in ba, or is in
        dur and the clock knows its planned steps (and steps per epoch, if epochs are involved)."""
        units = {self.every.unit, self.length.unit}
        if self.start is not None and self.start.unit is not _TR:
            units.add(self.start.unit)
        if _BA in units:
            return _BA
        if _DUR in units and clock.total_steps is not None:
            return _BA if _EP not in units or clock.steps_per_epoch is not None else _EP
        return _EP

    def _window(self, plan: Clock) -> Span:
        return _first_step(plan, self.start, 0), _first_step(plan, self.end, _total(plan))

    def _spans(self, plan: Clock, lo: int = 0, hi: int | None = None) -> Iterator[Span]:
        """The blocks inside [lo, hi) and the window, one span each."""
        start, end = self._window(plan)
        lo, hi = max(lo, start), end if hi is None else min(hi, end)
        in_epochs, grid = self._grid(plan)
        scale = _steps_per_epoch(plan, self) if in_epochs else 1
        for a, b in grid.blocks(lo // scale, -(-hi // scale)):
            yield max(a * scale, lo), min(b * scale, hi)

    def _period(self, plan: Clock) -> int:
        """The blocks repeat every this many steps."""
        in_epochs, grid = self._grid(plan)
        period = grid.every // gcd(grid.every, grid.scale)
        return period * _steps_per_epoch(plan, self) if in_epochs else period

    def _count(self, plan: Clock) -> int:
        lo, hi = self._window(plan)
        return self._count_range(plan, max(lo, 0), min(hi, _total(plan)))

    def _count_range(self, plan: Clock, lo: int, hi: int) -> int:
        """How many steps of [lo, hi) are on, in O(log) (lo, hi inside the window)."""
        in_epochs, grid = self._grid(plan)
        if hi <= lo or not in_epochs:
            return grid.count(lo, hi) if hi > lo else 0
        spe = _steps_per_epoch(plan, self)
        first, end = -(-lo // spe), hi // spe  # the whole epochs inside [lo, hi)
        if first > end:  # lo and hi fall inside one epoch
            return hi - lo if grid.on(lo // spe) else 0
        n = grid.count(first, end) * spe
        if lo < first * spe and grid.on(first - 1):
            n += first * spe - lo
        if hi > end * spe and grid.on(end):
            n += hi - end * spe
        return n

    def _units(self) -> set[TimeUnit]:
        bounds = {t.unit for t in (self.start, self.end) if t is not None}
        return bounds | {self.every.unit, self.length.unit}

    def __str__(self) -> str:
        return _clauses(
            ("every", self.every), ("for", self.length), ("from", self.start), ("until", self.end)
        )


@dataclass(frozen=True)
class AnyOf(Schedule):
    """The union of several schedules (a comma in a string, a list in a config).

    Example:
        >>> s = Schedule.parse("until 10ep, from 50ep")
        >>> isinstance(s, AnyOf), [e for e in range(60) if s.active(Clock(epoch=e))][8:12]
        (True, [8, 9, 50, 51])
    """

    parts: tuple[Schedule, ...]

    def __post_init__(self) -> None:
        flat: list[Schedule] = []
        for part in self.parts:
            if not isinstance(part, Schedule):
                raise invalid(part, "a union's parts must be schedules")
            flat.extend(part.parts if isinstance(part, AnyOf) else (part,))
        if not flat:
            raise invalid(self.parts, "a union needs at least one part")
        object.__setattr__(self, "parts", tuple(flat))

    def active(self, clock: Clock) -> bool:
        return any(part.active(clock) for part in self.parts)

    def _spans(self, plan: Clock) -> Iterator[Span]:
        for part in self.parts:
            yield from part._spans(plan)

    def _count(self, plan: Clock) -> int:
        """Cut the plan where any window starts or ends; on each piece that no window covers,
        count the periodic parts alive there: one in O(log), several by merging their blocks
        over one common period (lcm) and multiplying."""
        total, periodic = _total(plan), [p for p in self.parts if isinstance(p, Periodic)]
        others = (p._spans(plan) for p in self.parts if not isinstance(p, Periodic))
        covered = union(chain.from_iterable(others), 0, total)
        windows = [(p, p._window(plan)) for p in periodic]
        cuts = {0, total}.union(*covered, *(w for _, w in windows))
        points = sorted(c for c in cuts if 0 <= c <= total)
        n = sum(b - a for a, b in covered)
        for a, b in gaps(covered, 0, total):
            for lo, hi in pairwise(p for p in points if a <= p <= b):
                live = [p for p, (start, end) in windows if start <= lo and hi <= end]
                if len(live) == 1:
                    n += live[0]._count_range(plan, lo, hi)
                elif live:
                    period = lcm(*(p._period(plan) for p in live))
                    whole = (hi - lo) // period if hi - lo > 2 * period else 0
                    n += whole * _merged(plan, live, lo, lo + period)
                    n += _merged(plan, live, lo + whole * period, hi)
        return n

    def _units(self) -> set[TimeUnit]:
        return set().union(*(part._units() for part in self.parts))

    def __str__(self) -> str:
        return ", ".join(str(part) for part in self.parts)


def _clauses(*pairs: tuple[str, Time | None]) -> str:
    return " ".join(f"{key} {t}" for key, t in pairs if t is not None)


def _coerce_times(owner: Schedule, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, str):
            object.__setattr__(owner, name, Time.parse(value))
        elif not isinstance(value, Time) and (value is not None or name in ("every", "length")):
            raise ConfigError(f"{type(owner).__name__}.{name}: expected a Time, got {value!r}")


def _total(plan: Clock) -> int:
    total = plan.total_steps
    assert total is not None, "a plan always knows its length"
    return total


def _check_bounds(owner: Schedule, start: Time | None, end: Time | None) -> None:
    if start is None or end is None:
        return
    if start.unit is end.unit and start.exact >= end.exact:
        raise invalid(str(owner), f"from {start} is not before until {end}: the window is empty")


@lru_cache(maxsize=256)
def _grid(
    p: Periodic, steps_per_epoch: int | None, planned_steps: int | None, planned_epochs: int | None
) -> tuple[bool, Grid]:
    clock = Clock(
        steps_per_epoch=steps_per_epoch, planned_steps=planned_steps, planned_epochs=planned_epochs
    )
    unit, anchor = p._coordinate(clock), p._anchor()
    convert = clock.epochs if unit is _EP else clock.steps
    origin = Fraction(0) if anchor is None else convert(anchor)
    return unit is _EP, Grid.of(convert(p.every), convert(p.length), origin)


def _merged(plan: Clock, parts: list[Periodic], lo: int, hi: int) -> int:
    spans = chain.from_iterable(p._spans(plan, lo, hi) for p in parts)
    return sum(b - a for a, b in union(spans, lo, hi))


def _steps_per_epoch(plan: Clock, schedule: Schedule) -> int:
    if plan.steps_per_epoch is None:
        raise ConfigError(f"schedule '{schedule}' counts epochs: pass steps_per_epoch")
    return plan.steps_per_epoch


def _first_step(plan: Clock, t: Time | None, default: int) -> int:
    """The first step at which ``plan.reached(t)`` holds (``default`` when t is None)."""
    first = default if t is None else plan.first_step(t)
    return _total(plan) if first is None else first


def _plan(
    schedule: Schedule,
    planned_epochs: int | None,
    steps_per_epoch: int | None,
    planned_steps: int | None,
    finished_trials: int,
) -> Clock:
    """A clock that describes the planned length, in steps; with only ``planned_epochs``,
    one step stands for one epoch (then ``ba`` cannot be resolved)."""
    plan = Clock(
        steps_per_epoch=steps_per_epoch,
        planned_steps=planned_steps,
        planned_epochs=planned_epochs,
        finished_trials=finished_trials,
    )
    if plan.total_steps is not None:
        return plan
    if planned_epochs is None:
        raise ConfigError(
            f"schedule '{schedule}': cannot count its steps without a planned length; "
            "pass planned_epochs (and steps_per_epoch) or planned_steps"
        )
    if _BA in schedule._units():
        raise ConfigError(
            f"schedule '{schedule}' counts batches (ba): pass steps_per_epoch with planned_epochs"
        )
    return Clock(steps_per_epoch=1, planned_epochs=planned_epochs, finished_trials=finished_trials)


def _build(fields: str | Fields, spec: object) -> Schedule:
    if isinstance(fields, str):
        return ALWAYS if fields == "always" else NEVER
    start, end = fields.get("from"), fields.get("until")
    every, length = fields.get("every"), fields.get("for")
    if every is None and length is None:
        if start is None and end is None:
            raise invalid(spec, "give from, until, or every with for")
        return Window(start, end)
    if every is None or length is None:
        raise invalid(spec, "every and for go together, e.g. 'every 20ep for 2ep'")
    return Periodic(every, length, start, end)
