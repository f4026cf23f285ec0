"""Budgets: how long a trial with a pool trains, from the config and the study's evidence.

The evidence is what earlier recycled trials recorded when they finished: the fraction of
their plan at which their metric first reached their pool's best teacher (tag ``reached``).

Example:
    >>> from recycler.config import BudgetConfig
    >>> decide(BudgetConfig(scale=0.5), has_pool=True, evidence=[]).fraction
    0.5
    >>> decide(BudgetConfig(scale="auto"), has_pool=True, evidence=[0.3, 0.4, 0.5]).fraction
    0.5
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._storage import Direction, TeacherRecord
from ..config import BudgetConfig

#: The tag under which a finished recycled trial records when it reached its best teacher.
REACHED_TAG = "reached"
#: The tag of a teacher whose trial started from another teacher's weights (``init``).
PARENT_TAG = "init_parent"
NEVER = "never"


@dataclass(frozen=True)
class BudgetDecision:
    """The fraction of its plan a trial trains, and why (reported in the accounting)."""

    fraction: float
    why: str
    evidence: list[float] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "why": self.why, "evidence": list(self.evidence)}


def decide(
    config: BudgetConfig,
    *,
    has_pool: bool,
    evidence: Sequence[float],
    parent: bool | None = None,
) -> BudgetDecision:
    """The budget of a trial: ``scale``, or ``auto`` from the evidence, within the bounds.

    ``parent``: whether ``init`` started the trial from a teacher's weights (None: no
    ``init``); a trial that ``init`` could not start from one trains ``budget.fresh``.
    """
    if not has_pool:
        return BudgetDecision(1.0, "no pool: the whole plan")
    if parent is False:
        return BudgetDecision(config.fresh, f"init found no parent: budget.fresh {config.fresh}")
    if config.scale != "auto":
        return BudgetDecision(float(config.scale), f"budget.scale {config.scale}")
    if not evidence:
        return BudgetDecision(config.max, f"auto: no evidence yet, budget.max {config.max}")
    median = statistics.median(evidence)
    fraction = min(config.max, max(config.min, median + config.margin))
    why = (
        f"auto: earlier recycled trials reached their best teacher at {median:.3g} of their "
        f"plan (median of {len(evidence)}) + margin {config.margin}, within "
        f"[{config.min}, {config.max}]"
    )
    return BudgetDecision(round(fraction, 6), why, list(evidence))


def effective(planned: int | None, fraction: float) -> int | None:
    """``planned`` scaled by ``fraction``, rounded up, at least 1."""
    if planned is None:
        return None
    return planned if fraction >= 1.0 else max(1, math.ceil(planned * fraction))


def evidence_of(
    records: Iterable[TeacherRecord], config: BudgetConfig, *, parented: bool = False
) -> list[float]:
    """The ``reached`` fractions of the latest final teachers that recorded one (newest first).

    A trial that never reached its best teacher counts as ``budget.max``. ``parented``: only
    trials that started from a parent count (a trial with a head start is compared with its
    like, not with fresh starts).
    """
    found: list[float] = []
    for rec in sorted(records, key=lambda r: r.id, reverse=True):
        raw = rec.tags.get(REACHED_TAG) if rec.final else None
        if raw is None or (parented and PARENT_TAG not in rec.tags):
            continue
        if raw == NEVER:
            found.append(config.max)
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isfinite(value) and value > 0:
            found.append(value)
        if len(found) >= config.evidence:
            break
    return found[: config.evidence]


def reached_tag(
    history: Sequence[tuple[int, float]],
    target: float | None,
    direction: Direction,
    planned_steps: int | None,
) -> str | None:
    """When (as a fraction of the plan) the reported metric first reached ``target``.

    ``"never"`` if it did not; None without a target, a plan or any report.

    Example:
        >>> reached_tag([(10, 0.5), (20, 0.8)], 0.7, Direction.MAXIMIZE, 40)
        '0.5'
    """
    if target is None or not planned_steps or not history:
        return None
    for step, value in history:
        better = value >= target if direction is Direction.MAXIMIZE else value <= target
        if better:
            return f"{step / planned_steps:.4g}"
    return NEVER


def best_metric(records: Iterable[TeacherRecord], direction: Direction) -> float | None:
    """The best metric among ``records`` in ``direction`` (None if none has one)."""
    values = [r.metric_value for r in records if r.metric_value is not None]
    if not values:
        return None
    return max(values) if direction is Direction.MAXIMIZE else min(values)
