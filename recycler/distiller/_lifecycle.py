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

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._storage import Registry, StorageError, TeacherRecord
from ..config import RecycleConfig
from ..time import Clock, Time
from ._accounting import Accounting
from ._identity import RUN_TAG, TrialIdentity

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

    Entries of the state dict that are not tensors (a module's ``_extra_state``) are left
    out. Raises :class:`~storage.StorageError` (or ``OSError``) when the registry fails, and
    also when the weights or the trial's params cannot be stored: the caller records it, and
    the trial's own result is never lost.
    """
    try:
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
            tags={**(tags or {}), RUN_TAG: identity.run},
            skip_non_tensors=True,
        )
    except (TypeError, ValueError) as exc:
        raise StorageError(f"the model could not be stored: {type(exc).__name__}: {exc}") from exc


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


class Registrations:
    """What one trial registered: its final teacher, its intermediate ones, its lineage.

    Every write goes through here; a registry failure is recorded in the accounting and
    warned about once, never raised.

    Example:
        >>> regs = Registrations(registry, identity, accounting)  # doctest: +SKIP
        >>> regs.register(net.state_dict(), metric=0.9, state="complete", final=True,
        ...               step=600, epoch=60, signature="logits/2d/10")  # doctest: +SKIP
    """

    def __init__(self, registry: Registry, identity: TrialIdentity, accounting: Accounting):
        self.registry = registry
        self.identity = identity
        self.accounting = accounting
        self.final: TeacherRecord | None = None
        self.intermediate: list[int] = []  # teacher ids of intermediate checkpoints
        self.last_checkpoint = 0

    def register(
        self,
        state_dict: Mapping[str, Any],
        *,
        metric: float | None,
        state: str,
        final: bool,
        step: int,
        epoch: int | None,
        signature: str | None,
        tags: Mapping[str, str] | None = None,
    ) -> TeacherRecord | None:
        """Store the weights as a teacher; None (recorded) if the registry failed."""
        try:
            rec = register_teacher(
                self.registry,
                self.identity,
                state_dict,
                metric=metric,
                state=state,
                final=final,
                step=step,
                epoch=epoch,
                signature=signature,
                tags=tags,
            )
        except (StorageError, OSError) as exc:
            detail = str(exc) if isinstance(exc, StorageError) else f"{type(exc).__name__}: {exc}"
            self.accounting.note_error(f"registering the model failed: {detail}")
            return None
        if final:
            self.final = rec
        else:
            self.intermediate.append(rec.id)
            self.last_checkpoint = step
        return rec

    def discard_intermediate(self) -> None:
        """A failed trial keeps no teacher: delete its intermediate ones."""
        for teacher_id in self.intermediate:
            try:
                self.registry.delete(teacher_id)
            except StorageError as exc:
                self.accounting.note_error(f"deleting intermediate teacher failed: {exc}")
        self.intermediate.clear()

    def write_lineage(self, weight: float, init_parent: int | None = None) -> None:
        """Record which teachers the trial learned from, and how much (idempotent).

        ``init_parent``: the teacher whose weights the trial started from (``init.from``),
        written as a ``'init'`` row with no steps distilled.
        """
        me = self.identity
        try:
            if init_parent is not None:
                self.registry.add_lineage(
                    me.study,
                    me.number,
                    init_parent,
                    steps_distilled=0,
                    run=me.run,
                    trial_id=me.id,
                    kind="init",
                )
            for tid, steps in self.accounting.used.items():
                self.registry.add_lineage(
                    me.study,
                    me.number,
                    tid,
                    steps_distilled=steps,
                    weight=weight,
                    overhead=self.accounting.overhead,
                    run=me.run,
                    trial_id=me.id,
                )
        except StorageError as exc:
            self.accounting.note_error(f"writing lineage failed: {exc}")

    def stats(self) -> dict[str, Any]:
        """The teacher ids for the accounting."""
        out: dict[str, Any] = {}
        if self.final is not None:
            out["teacher_id"] = self.final.id
        if self.intermediate:
            out["intermediate_teachers"] = list(self.intermediate)
        return out

    def provenance(self) -> dict[str, Any]:
        """The run's key and the registry's id: what makes the trial's teacher ids unambiguous."""
        out: dict[str, Any] = {"run": self.identity.run}
        with contextlib.suppress(StorageError):  # an outage: the ids stay, without it
            out["registry_id"] = self.registry.registry_id()
        return out

    def state_dict(self) -> dict[str, Any]:
        """The intermediate teachers, the last checkpoint's step and the run's key."""
        return {
            "intermediate": list(self.intermediate),
            "last_checkpoint": self.last_checkpoint,
            "run": self.identity.run,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Back to :meth:`state_dict`."""
        self.intermediate = [int(t) for t in state.get("intermediate", [])]
        self.last_checkpoint = int(state.get("last_checkpoint", 0))
        self.identity.run = str(state.get("run", self.identity.run))
