"""The trial's plan: its length as given and as trained (budget), and its init parent."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from .._storage import Registry, StorageError, TeacherRecord
from ..config import RecycleConfig
from ..sampling import select_pool
from ._accounting import Accounting
from ._budget import (
    PARENT_TAG,
    REACHED_TAG,
    BudgetDecision,
    best_metric,
    decide,
    effective,
    evidence_of,
    reached_tag,
)
from ._clock import TrialClock
from ._identity import TrialIdentity
from ._init import blend, mismatch
from ._refresh import PoolRefresher

log = logging.getLogger(__name__)


class TrialPlan:
    """Applies ``budget`` and ``init`` when the loop calls ``plan()``; reports both.

    Example:
        >>> kd.plan(epochs=60, steps_per_epoch=10)  # doctest: +SKIP
        >>> kd.epochs, kd.stats()["budget"]["fraction"]  # doctest: +SKIP
        (30, 0.5)
    """

    def __init__(
        self,
        config: RecycleConfig,
        identity: TrialIdentity,
        registry: Registry,
        clock: TrialClock,
        refresher: PoolRefresher,
        accounting: Accounting,
    ) -> None:
        self.config = config
        self.identity = identity
        self.registry = registry
        self.clock = clock
        self.refresher = refresher
        self.accounting = accounting
        self.planned_epochs: int | None = None
        self.planned_steps: int | None = None
        self.budget: BudgetDecision | None = None
        self.init_parent: int | None = None
        self.init_note: str | None = None
        self.history: list[tuple[int, float]] = []

    @property
    def active(self) -> bool:
        """Whether budget or init can change anything."""
        return self.config.budget.scale != 1.0 or self.config.init.source != "none"

    def apply(
        self,
        epochs: int | None,
        steps_per_epoch: int | None,
        steps: int | None,
        model: nn.Module | None,
    ) -> None:
        """Set the clock's plan: the effective one when the trial has a pool and a budget."""
        self.clock.plan(epochs, steps_per_epoch, steps)
        self.planned_epochs, self.planned_steps = (
            self.clock.planned_epochs,
            self.clock.planned_steps,
        )
        if not self.active:
            return
        pool, candidates = self.refresher.plan_pool()
        has_pool = len(pool) >= self.config.teachers.min_pool
        parent: bool | None = None  # the budget follows init: a head start, or none
        if self.config.init.source == "best" and model is not None:
            self._init_from(pool, model)
            parent = self.init_parent is not None
        budget = self.config.budget
        if budget.scale != 1.0:
            evidence = evidence_of(candidates, budget, parented=bool(parent))
            self.budget = decide(budget, has_pool=has_pool, evidence=evidence, parent=parent)
            fraction = self.budget.fraction
            self.clock.plan(
                effective(epochs, fraction),
                steps_per_epoch,
                effective(steps, fraction) if steps is not None else None,
            )

    def _init_from(self, pool: list[TeacherRecord], model: nn.Module) -> None:
        cfg = self.config.init
        why = "no teacher in the pool yet" if not pool else ""
        for rec in select_pool(pool, policy="best", k=None):
            try:
                tensors = dict(self.registry.load(rec).tensors)
            except StorageError as exc:
                why = f"teacher {rec.id} did not load ({exc})"
                continue
            problem = mismatch(model, tensors)
            if problem is not None:
                why = f"teacher {rec.id} is not compatible: {problem}"
                continue
            blend(model, tensors, shrink=cfg.shrink, perturb=cfg.perturb)
            self.init_parent = rec.id
            self.init_note = f"from teacher {rec.id} (shrink {cfg.shrink}, perturb {cfg.perturb})"
            return
        self.init_note = f"fresh start: {why}"
        log.warning(
            "trial %s of %r starts from fresh weights (init.from: best): %s",
            self.identity.number,
            self.identity.study,
            why,
        )

    def observe(self, metric: float | None) -> None:
        """A metric reported at the current step (evidence for later trials' ``auto``)."""
        if metric is not None:
            self.history.append((self.clock.step, metric))

    def tags(self, pool: list[TeacherRecord], distilled: bool) -> dict[str, str]:
        """Tags of the trial's final teacher: when it reached its best teacher, its parent."""
        out: dict[str, str] = {}
        if distilled:
            target = best_metric(pool, self.identity.direction)
            reached = reached_tag(self.history, target, self.identity.direction, self.planned_steps)
            if reached is not None:
                out[REACHED_TAG] = reached
        if self.init_parent is not None:
            out[PARENT_TAG] = str(self.init_parent)
        return out

    def info(self) -> dict[str, Any]:
        """The plan as the adapters report it."""
        out: dict[str, Any] = {
            "planned_epochs": self.planned_epochs,
            "planned_steps": self.planned_steps,
            "effective_epochs": self.clock.planned_epochs,
            "effective_steps": self.clock.planned_steps,
        }
        if self.budget is not None:
            out["budget"] = self.budget.info()
        if self.init_note is not None:
            out["init"] = self.init_note
            out["init_parent"] = self.init_parent
        return out

    def state_dict(self) -> dict[str, Any]:
        """The plan as given, the budget decision, the parent and the metric history."""
        return {
            "planned_epochs": self.planned_epochs,
            "planned_steps": self.planned_steps,
            "budget": self.budget.info() if self.budget is not None else None,
            "init_parent": self.init_parent,
            "init_note": self.init_note,
            "history": [list(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Back to :meth:`state_dict` (the clock's effective plan is restored with the clock)."""
        self.planned_epochs = state.get("planned_epochs")
        self.planned_steps = state.get("planned_steps")
        budget = state.get("budget")
        self.budget = (
            BudgetDecision(float(budget["fraction"]), str(budget["why"]), list(budget["evidence"]))
            if isinstance(budget, dict)
            else None
        )
        self.init_parent = state.get("init_parent")
        self.init_note = state.get("init_note")
        self.history = [(int(step), float(value)) for step, value in state.get("history", [])]
