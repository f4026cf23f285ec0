"""The end of an Optuna trial mapped onto the Distiller's lifecycle; imports no optuna.

Shared by :class:`~recycler.integrations.optuna.RecycledObjective` and
:func:`~recycler.integrations.optuna.register_trial`.

Example:
    >>> ATTR_KEY
    'recycler'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..distiller import Distiller, TrialOutcome, TrialState, metric_of

if TYPE_CHECKING:
    import optuna

#: The user-attr key under which each trial's KD accounting is stored.
ATTR_KEY = "recycler"

Value = float | Sequence[float]


def finish(
    trial: optuna.Trial,
    kd: Distiller,
    state: TrialState,
    value: Value | None,
    index: int,
    *,
    why: str | None = None,
) -> TrialOutcome:
    """The trial's end: ``kd.finish`` with Optuna's view of the value, accounting in the attrs.

    Never raises for the registry's sake: the trial's own result must reach Optuna.
    """
    kd.params = dict(trial.params)  # suggested while the objective ran
    raw = _last_reported(trial) if state == "pruned" and value is None else value
    metric = metric_of(raw, index)
    if why is None and state == "complete" and metric is None:
        why = f"the objective's value {raw!r} is not a finite number (Optuna fails the trial)"
    outcome = kd.finish(state, metric, why=why)
    try:
        trial.set_user_attr(ATTR_KEY, outcome.info)
    except Exception as exc:  # Optuna's own storage: never hide the objective's exception
        if state != "fail":
            raise
        _warn(f"could not store the accounting of trial {trial.number}: {exc}")
    return outcome


def reporting(report: Callable[..., None], kd: Distiller, index: int) -> Callable[..., None]:
    """``trial.report`` that also registers an intermediate checkpoint (``register.every``)."""

    def report_and_checkpoint(value: Any, step: int, *args: Any, **kwargs: Any) -> None:
        report(value, step, *args, **kwargs)
        kd.report(metric_of(value, index))

    return report_and_checkpoint


def _warn(message: str) -> None:
    warnings.warn(f"recycler: {message}", RuntimeWarning, stacklevel=4)


def _last_reported(trial: optuna.Trial) -> float | None:
    """The last value given to ``trial.report`` (what Optuna records for a pruned trial)."""
    reported = trial.storage.get_trial(trial._trial_id).intermediate_values
    return reported[max(reported)] if reported else None
