"""The end of an Optuna trial: register its model, write lineage, store the accounting.

Shared by :class:`~recycler.integrations.optuna.RecycledObjective` and
:func:`~recycler.integrations.optuna.register_trial`; imports no optuna at run time.

Example:
    >>> _as_number([0.9, 3.0], 1), _as_number(float("nan"), 0)
    (3.0, None)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.exc import SQLAlchemyError

from .._storage import TeacherRecord, redact
from ..config import RecycleConfig
from ..distiller import Distiller

if TYPE_CHECKING:
    import optuna

#: The user-attr key under which each trial's KD accounting is stored.
ATTR_KEY = "recycler"

Value = float | Sequence[float]
State = Literal["complete", "pruned", "fail"]


def finish(
    trial: optuna.Trial,
    kd: Distiller,
    state: State,
    value: Value | None,
    index: int,
    *,
    why: str | None = None,
) -> TeacherRecord | None:
    """Register (when allowed), write lineage, and store the accounting in the user attrs.

    Never raises for the registry's sake: the trial's own result must reach Optuna.
    """
    kd.close()  # the trial is over: stop its background pool refresh
    kd.params = dict(trial.params)  # suggested while the objective ran
    metric = _last_reported(trial) if state == "pruned" and value is None else value
    number = _as_number(metric, index)
    reason = why if state == "fail" else _not_registered(kd.config, state, metric, number)
    record: TeacherRecord | None = None
    errors: list[str] = []
    try:
        if reason is None:
            record = kd.register(metric=number, state=state)  # writes lineage too
            reason = None if record is not None else "the registry failed (see registry_errors)"
        else:
            kd.write_lineage()
    except ValueError as exc:  # no model attached
        reason = str(exc)
        _warn(f"trial {trial.number} not registered: {reason}")
    except (OSError, SQLAlchemyError) as exc:  # failures storage did not wrap as StorageError
        reason = "the registry failed (see registry_errors)"
        errors.append(f"registering the model failed: {type(exc).__name__}: {redact(str(exc))}")
        _warn(f"{errors[-1]}; the trial's result is kept")
    info: dict[str, Any] = {"study": kd.study, "state": state, **kd.stats()}
    if errors:
        info["registry_errors"] = [*info.get("registry_errors", []), *errors]
    info["kd"] = info["steps_distilled"] > 0
    info["registered"] = record is not None
    if reason is not None:
        info["not_registered"] = reason
    try:
        trial.set_user_attr(ATTR_KEY, info)
    except Exception as exc:  # Optuna's own storage: never hide the objective's exception
        if state != "fail":
            raise
        _warn(f"could not store the accounting of trial {trial.number}: {exc}")
    return record


def _warn(message: str) -> None:
    warnings.warn(f"recycler: {message}", RuntimeWarning, stacklevel=4)


def _not_registered(
    config: RecycleConfig, state: State, metric: Value | None, number: float | None
) -> str | None:
    """Why this trial's model does not become a teacher (None: it does)."""
    if not config.register.enabled:
        return "register.enabled is false"
    if state not in config.register.on:
        return f"register.on does not include {state}"
    if state == "complete" and number is None:
        return f"the objective's value {metric!r} is not a finite number (Optuna fails the trial)"
    return None


def _as_number(value: Value | None, index: int) -> float | None:
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


def _last_reported(trial: optuna.Trial) -> float | None:
    """The last value given to ``trial.report`` (what Optuna records for a pruned trial)."""
    reported = trial.storage.get_trial(trial._trial_id).intermediate_values
    return reported[max(reported)] if reported else None
