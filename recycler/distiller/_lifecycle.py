"""The trial lifecycle every adapter maps its hooks onto.

A trial, whatever runs it::

    kd = Distiller(config, study=..., trial_number=..., framework=...)   # trial starts
    kd.attach(model).plan(epochs=E, steps_per_epoch=S)   # budget, init; then kd.epochs
    for each step:     loss = kd.loss(logits, y, x)                     # KD when scheduled
    for each report:   kd.report(metric)                                # register.every
    at the end:        outcome = kd.finish(state, metric)               # complete/pruned/fail

``finish`` registers the model as a teacher when the register policy allows the state
(:func:`not_registered`), writes the lineage, and returns the accounting an adapter reports
(:class:`TrialOutcome`). A failed trial keeps no teacher: its intermediate ones are deleted.
Registry failures are recorded, never raised: the trial's own result is never lost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._storage import Registry, TeacherRecord
from ..config import RecycleConfig
from ..time import Clock, Time
from ._identity import TrialIdentity

#: How a trial ended.
TrialState = Literal["complete", "pruned", "fail"]
#: The trial state of an intermediate checkpoint.
RUNNING = "running"


def not_registered(config: RecycleConfig, state: str) -> str | None:
    """Why a trial that ended in ``state`` does not become a teacher (None: it does).

    Example:
        >>> not_registered(RecycleConfig(register={"on": ["complete"]}), "pruned")
        'register.on does not include pruned'
    """
    if not config.register.enabled:
        return "register.enabled is false"
    if state == "fail":
        return "the trial failed"
    if state != RUNNING and state not in config.register.on:
        return f"register.on does not include {state}"
    return None


def register_teacher(
    registry: Registry,
    identity: TrialIdentity,
    state_dict: Mapping[str, Any],
    *,
    metric: float | None,
    state: str,
    final: bool,
    step: int,
    epoch: int | None,
    signature: str | None,
    tags: Mapping[str, str] | None = None,
) -> TeacherRecord:
    """Store a trial's weights as a teacher (the one place a trial becomes a teacher).

    Raises :class:`~storage.StorageError` (or ``OSError``) when the registry fails.
    """
    return registry.register(
        state_dict,
        study=identity.study,
        trial_number=identity.number,
        trial_id=identity.id,
        framework=identity.framework,
        params=identity.params,
        metric_name=identity.metric_name,
        metric_value=metric,
        direction=identity.direction,
        step=step,
        epoch=epoch,
        final=final,
        trial_state=state,
        output_signature=signature or "",
        tags=tags,
    )


def checkpoint_due(every: Time | None, clock: Clock | None, last_step: int) -> bool:
    """Whether an intermediate checkpoint at ``clock`` is due (``register.every``).

    Without a clock (or a span the clock cannot convert) every checkpoint counts. None is due
    at the end of the plan: that checkpoint is the final one.

    Example:
        >>> every = Time.parse("2ep")
        >>> clock = Clock(step=20, epoch=2, steps_per_epoch=10)
        >>> checkpoint_due(every, clock, 0), checkpoint_due(every, clock, 10)
        (True, False)
    """
    if every is None or clock is None:
        return every is not None
    total = clock.total_steps
    if total is not None and clock.step >= total:
        return False
    try:
        span = float(clock.steps(every))
    except ValueError:
        return True
    return clock.step - last_step >= span


def metric_of(value: float | Sequence[float] | None, index: int = 0) -> float | None:
    """A finite number from an objective's value (item ``index`` of a sequence), else None.

    Example:
        >>> metric_of([0.9, 3.0], 1), metric_of(float("nan")), metric_of("x")
        (3.0, None, None)
    """
    if value is not None and not isinstance(value, (int, float)):
        try:
            value = list(value)[index]
        except (TypeError, IndexError):
            return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class TrialOutcome:
    """How a trial ended for recycler: the teacher it became (or why not) and its accounting.

    ``info`` is what adapters report (Optuna's user attrs, the summary line): the
    Distiller's stats plus ``study``, ``state``, ``kd``, ``registered`` and
    ``not_registered``.

    Example:
        >>> outcome = kd.finish("complete", 0.91)  # doctest: +SKIP
        >>> outcome.info["registered"], outcome.teacher_id  # doctest: +SKIP
        (True, 12)
    """

    state: str
    info: dict[str, Any] = field(default_factory=dict)
    record: TeacherRecord | None = None
    reason: str | None = None

    @property
    def teacher_id(self) -> int | None:
        """The id of the teacher the trial became, or None."""
        return self.record.id if self.record is not None else None
