"""Accuracy against trial and against wall-clock, and plain against recycled: pure functions.

The wall-clock of a sweep is its **trial-seconds**: its finished trials back to back in the
order of their numbers, each as long as Optuna recorded (start to completion), so time spent
between trials (or in another sweep run alternately, as the demo does) is not counted. A
trial's intermediate values are spread evenly over its duration (Optuna records when a trial
starts and ends, not when each value was reported). *Best so far* counts every reported value
of every trial up to that moment, final values included.

Example:
    >>> trials = [TrialData(0, "complete", 0.5, started=0.0, completed=2.0,
    ...                     intermediate=((0, 0.3), (1, 0.5)))]
    >>> curve(trials, "maximize").best_by_time
    [(1.0, 0.3), (2.0, 0.5)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._optuna import TrialData

_FINISHED = ("complete", "pruned")


@dataclass(frozen=True)
class TrialSpan:
    """One trial on its sweep's clock.

    Example:
        >>> TrialSpan(0, "complete", 0.9, 0.0, 6.5).end_s
        6.5
    """

    number: int
    state: str
    value: float | None
    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True)
class Curve:
    """What the page plots for one study.

    Example:
        >>> Curve().wall_clock
        False
    """

    trials: list[TrialSpan] = field(default_factory=list)
    best_by_trial: list[tuple[int, float]] = field(default_factory=list)
    best_by_time: list[tuple[float, float]] = field(default_factory=list)

    @property
    def wall_clock(self) -> bool:
        return bool(self.best_by_time)

    @property
    def total_s(self) -> float | None:
        ends = [t.end_s for t in self.trials if t.end_s is not None]
        return max(ends) if ends else None


def better(a: float, b: float, direction: str) -> bool:
    """Whether ``a`` is better than ``b`` for ``direction`` (maximize or minimize)."""
    return a < b if direction == "minimize" else a > b


def final_value(trial: TrialData) -> float | None:
    """The trial's value; for a pruned trial without one, its last reported value."""
    if trial.value is not None:
        return trial.value
    if trial.state == "pruned":
        reported = [v for _, v in trial.intermediate if v is not None]
        return reported[-1] if reported else None
    return None


def curve(trials: Sequence[TrialData], direction: str) -> Curve:
    """The per-trial and wall-clock curves of one study's trials."""
    spans: list[TrialSpan] = []
    by_trial: list[tuple[int, float]] = []
    events: list[tuple[float, float]] = []
    clock = 0.0
    best: float | None = None
    for t in sorted(trials, key=lambda t: t.number):
        value = final_value(t)
        if value is not None and (best is None or better(value, best, direction)):
            best = value
        if best is not None and t.state in _FINISHED:
            by_trial.append((t.number, best))
        seconds = t.seconds if t.state in _FINISHED else None
        if seconds is None:
            spans.append(TrialSpan(t.number, t.state, value))
            continue
        start = clock
        clock += seconds
        spans.append(TrialSpan(t.number, t.state, value, round(start, 6), round(clock, 6)))
        reported = [v for _, v in t.intermediate]
        for i, v in enumerate(reported):
            if v is not None:
                events.append((start + seconds * (i + 1) / len(reported), v))
        if value is not None:
            events.append((clock, value))
    return Curve(spans, by_trial, _best_so_far(events, direction))


def registry_curve(values: Sequence[tuple[int, float | None]], direction: str) -> Curve:
    """The per-trial curve from the registry's final teachers (no wall-clock there)."""
    trials = [TrialData(number, "complete", value) for number, value in values]
    plain = curve(trials, direction)
    return Curve([TrialSpan(t.number, t.state, t.value) for t in trials], plain.best_by_trial)


def _best_so_far(events: list[tuple[float, float]], direction: str) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for at, value in sorted(events, key=lambda e: e[0]):
        if not out or better(value, out[-1][1], direction):
            out.append((round(at, 6), value))
    return out


def time_to(
    best_by_time: Sequence[tuple[float, float]], target: float, direction: str
) -> float | None:
    """The first moment the best so far reaches ``target``; None if it never does."""
    for at, value in best_by_time:
        if value == target or better(value, target, direction):
            return at
    return None


def best_at(best_by_time: Sequence[tuple[float, float]], seconds: float) -> float | None:
    """The best so far at ``seconds`` on the sweep's clock."""
    found = None
    for at, value in best_by_time:
        if at > seconds + 1e-9:
            break
        found = value
    return found


@dataclass(frozen=True)
class Comparison:
    """A plain sweep against a recycled one, on their own clocks.

    Example:
        >>> Comparison(0.9, 30.0, 20.0, 40.0, 0.9, 0.92).speedup
        1.5
    """

    target: float | None  # the plain sweep's best final value
    plain_s: float | None  # when each sweep's best so far first reached it
    recycled_s: float | None
    equal_time_s: float | None  # the shorter sweep's length
    plain_at_equal: float | None  # the best of each at that moment
    recycled_at_equal: float | None

    @property
    def time_saved_s(self) -> float | None:
        if self.plain_s is None or self.recycled_s is None:
            return None
        return round(self.plain_s - self.recycled_s, 6)

    @property
    def speedup(self) -> float | None:
        if self.plain_s is None or self.recycled_s is None or self.recycled_s <= 0:
            return None
        return round(self.plain_s / self.recycled_s, 6)


def compare(plain: Curve, recycled: Curve, direction: str) -> Comparison:
    """How much sooner the recycled sweep reached the plain sweep's best final value."""
    finals = [t.value for t in plain.trials if t.value is not None and t.state in _FINISHED]
    target: float | None = None
    for value in finals:
        if target is None or better(value, target, direction):
            target = value
    ends = [c.total_s for c in (plain, recycled)]
    equal = min(e for e in ends if e is not None) if all(e is not None for e in ends) else None
    return Comparison(
        target=target,
        plain_s=None if target is None else time_to(plain.best_by_time, target, direction),
        recycled_s=None if target is None else time_to(recycled.best_by_time, target, direction),
        equal_time_s=equal,
        plain_at_equal=None if equal is None else best_at(plain.best_by_time, equal),
        recycled_at_equal=None if equal is None else best_at(recycled.best_by_time, equal),
    )
