"""Optuna: recycle an objective's trials as teachers of the later trials, in a few lines.

Decorate the objective with :func:`recycle`; it gets the trial's :class:`Distiller` beside the
trial. Attach the model, call ``kd.loss`` in the loop, return the metric: the rest is automatic
(pool, schedule, sampling, refresh, registering the model as a teacher, accounting in the
trial's user attrs under ``"recycler"``).

Example:
    >>> import optuna
    >>> from recycler.integrations.optuna import recycle
    >>> @recycle(config="recycle.yaml")  # doctest: +SKIP
    ... def objective(trial, kd):
    ...     model = Net(trial.suggest_float("lr", 1e-3, 1, log=True))
    ...     kd.attach(model).plan(epochs=10, steps_per_epoch=len(loader))
    ...     for epoch in range(10):
    ...         for x, y in loader:
    ...             loss = kd.loss(model(x), y, x)
    ...             ...
    ...         trial.report(accuracy(model), epoch)
    ...         if trial.should_prune():
    ...             raise optuna.TrialPruned()
    ...     return accuracy(model)
    >>> optuna.create_study(direction="maximize").optimize(objective, n_trials=20)  # doctest: +SKIP

Users who keep their own loop use :func:`distiller_for` and :func:`register_trial` instead.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from torch import nn

from .._imports import require
from .._storage import Direction, Registry, StorageError, TeacherQuery, TeacherRecord
from ..config import RecycleConfig, check_locations
from ..distiller import Distiller
from ..errors import ConfigError
from ._optuna_finish import ATTR_KEY, Value, finish, reporting

if TYPE_CHECKING:
    import optuna
else:
    optuna = require("optuna", None, minimum="4.0", feature="the Optuna integration")

__all__ = [
    "ATTR_KEY",
    "RecycledObjective",
    "distiller_for",
    "recycle",
    "register_trial",
]

log = logging.getLogger(__name__)

ConfigLike = RecycleConfig | Mapping[str, Any] | str | os.PathLike[str] | None
RecycledFn = Callable[["optuna.Trial", Distiller], Value]


def distiller_for(
    trial: optuna.Trial,
    config: ConfigLike = None,
    *,
    registry: Registry | None = None,
    metric: str | None = None,
    objective_index: int | None = None,
) -> Distiller:
    """The :class:`Distiller` of an Optuna trial, for users who keep their own loop.

    Its identity comes from the trial: study name (unless ``config.study`` names another),
    trial number and id, and the study's direction. ``metric`` names the objective's value
    (default: the study's metric name, else ``"value"``); an accuracy-like name lets the
    quality gate drop teachers at chance. Multi-objective studies need ``objective_index``:
    the objective whose value and direction rank the teachers.

    Example:
        >>> kd = distiller_for(trial, "recycle.yaml", metric="accuracy")  # doctest: +SKIP
        >>> kd.attach(model).plan(epochs=10, steps_per_epoch=len(loader))  # doctest: +SKIP
        >>> acc = train(model, loss=kd.loss)  # your loop, with kd.loss  # doctest: +SKIP
        >>> register_trial(trial, value=acc, kd=kd)  # doctest: +SKIP
    """
    if not isinstance(trial, optuna.Trial):
        raise TypeError(
            f"distiller_for needs the optuna.Trial an objective receives, got "
            f"{type(trial).__name__}; outside a study build a recycler.distiller.Distiller"
        )
    cfg = RecycleConfig.coerce(config)
    study = trial.study
    index = _objective_index(study, objective_index)
    names = study.metric_names
    return Distiller(
        cfg,
        study=study.study_name,
        trial_number=trial.number,
        trial_id=str(trial._trial_id),
        framework="optuna",
        params=trial.params,
        registry=registry if registry is not None else Registry(cfg.registry, cfg.blobs),
        direction=Direction(study.directions[index].name.lower()),
        metric_name=metric or (names[index] if names else "value"),
    )


def register_trial(
    trial: optuna.Trial,
    model: nn.Module | None = None,
    value: Value | None = None,
    *,
    kd: Distiller | None = None,
    config: ConfigLike = None,
    registry: Registry | None = None,
    state: Literal["complete", "pruned"] = "complete",
    objective_index: int | None = None,
) -> TeacherRecord | None:
    """Make a finished trial's model a teacher and record its KD accounting in its user attrs.

    Pass the trial's Distiller as ``kd`` (from :func:`distiller_for`) so its lineage and
    accounting are kept; without one a Distiller is made from ``config``. ``state="pruned"``
    with ``value=None`` takes the last value given to ``trial.report``. The model is only
    registered when ``config.register`` allows that state. A registry failure is recorded in
    the attrs (``registry_errors``) and warned about, never raised. Closes ``kd`` (its
    background refresh). Returns the teacher, or None when nothing was registered.

    Example:
        >>> rec = register_trial(trial, model, value=0.91, kd=kd)  # doctest: +SKIP
        >>> trial.user_attrs["recycler"]["teacher_id"] == rec.id  # doctest: +SKIP
        True
    """
    if kd is None:
        kd = distiller_for(trial, config, registry=registry, objective_index=objective_index)
    if model is not None:
        kd.attach(model)
    index = _objective_index(trial.study, objective_index)
    return finish(trial, kd, state, value, index).record


class RecycledObjective:
    """An Optuna objective ``f(trial) -> value`` made from ``f(trial, kd) -> value``.

    Built by :func:`recycle`. Each call builds the trial's Distiller, runs the objective,
    and when it returns (or raises ``optuna.TrialPruned``) registers the attached model as a
    teacher, writes lineage and stores KD accounting in ``trial.user_attrs["recycler"]``. Any
    other exception leaves no teacher and propagates, so Optuna fails the trial as usual.
    Thread-safe: ``study.optimize(..., n_jobs=4)`` runs one Distiller per trial.

    Example:
        >>> recycled = RecycledObjective(objective, RecycleConfig())  # doctest: +SKIP
        >>> study.optimize(recycled, n_trials=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        objective: RecycledFn,
        config: ConfigLike = None,
        *,
        registry: Registry | None = None,
        metric: str | None = None,
        objective_index: int | None = None,
    ) -> None:
        self.objective = objective
        self.config = RecycleConfig.coerce(config)
        self.metric = metric
        self.objective_index = objective_index
        self._registry = registry
        self._touched = False
        self._lock = threading.Lock()
        functools.update_wrapper(self, objective)

    @property
    def registry(self) -> Registry:
        """The registry every trial of this objective uses (opened on first use)."""
        with self._lock:
            if self._registry is None:
                check_locations(self.config)  # a missing SQLite folder: one clear error
                self._registry = Registry(self.config.registry, self.config.blobs)
            if not self._touched:
                _touch(self._registry)
                self._touched = True
            return self._registry

    def distiller(self, trial: optuna.Trial) -> Distiller:
        """The Distiller this objective gives ``trial``."""
        return distiller_for(
            trial,
            self.config,
            registry=self.registry,
            metric=self.metric,
            objective_index=self.objective_index,
        )

    def __call__(self, trial: optuna.Trial) -> Value:
        kd = self.distiller(trial)
        index = _objective_index(trial.study, self.objective_index)
        # trial.report also feeds the Distiller: intermediate teachers, budget evidence
        trial.report = reporting(trial.report, kd, index)  # type: ignore[method-assign]
        try:
            value = self.objective(trial, kd)
        except optuna.TrialPruned:
            finish(trial, kd, "pruned", None, index)
            raise
        except Exception as exc:
            finish(trial, kd, "fail", None, index, why=f"{type(exc).__name__}: {exc}")
            raise
        except BaseException:  # KeyboardInterrupt: just stop the background refresh
            kd.close()
            raise
        finish(trial, kd, "complete", value, index)
        return value


@overload
def recycle(
    objective: RecycledFn,
    /,
    *,
    config: ConfigLike = None,
    registry: Registry | None = None,
    metric: str | None = None,
    objective_index: int | None = None,
) -> RecycledObjective: ...


@overload
def recycle(
    objective: None = None,
    /,
    *,
    config: ConfigLike = None,
    registry: Registry | None = None,
    metric: str | None = None,
    objective_index: int | None = None,
) -> Callable[[RecycledFn], RecycledObjective]: ...


def recycle(
    objective: RecycledFn | None = None,
    /,
    *,
    config: ConfigLike = None,
    registry: Registry | None = None,
    metric: str | None = None,
    objective_index: int | None = None,
) -> RecycledObjective | Callable[[RecycledFn], RecycledObjective]:
    """Turn ``objective(trial, kd)`` into an Optuna objective that recycles earlier trials.

    ``config``: a :class:`RecycleConfig`, a dict, a YAML path or text, or None (defaults:
    ``sqlite:///recycler.db`` and ``./recycler-teachers``; the registry may share the
    study's database URL). ``registry``: an open Registry instead of ``config``'s URLs.
    ``metric``: the name of the returned value (default: the study's metric name, else
    ``"value"``). ``objective_index``: for multi-objective studies, the objective that ranks
    teachers (they are refused without it). Usable bare (``@recycle``) or called.

    Example:
        >>> @recycle(config={"registry": "sqlite:///sweep.db"}, metric="accuracy")
        ... def objective(trial, kd):
        ...     return 0.5
        >>> type(objective).__name__
        'RecycledObjective'
    """

    cfg = RecycleConfig.coerce(config)  # a bad option fails here, not in the first trial
    if registry is None:
        check_locations(cfg, folders=False)  # and so does a URL that can never work

    def wrap(func: RecycledFn) -> RecycledObjective:
        return RecycledObjective(
            func, cfg, registry=registry, metric=metric, objective_index=objective_index
        )

    return wrap if objective is None else wrap(objective)


def _touch(registry: Registry, attempts: int = 5) -> None:
    """Open the registry once before trials run in parallel.

    Its first connection creates the schema and turns a SQLite file (maybe created by Optuna)
    to WAL; two connections doing that at once (threads or processes) make one fail at once
    with "database is locked", so that is retried briefly. Any other failure is left for each
    trial's Distiller to meet and record.
    """
    for attempt in range(attempts):
        try:
            registry.query(TeacherQuery(top_k=1))
            return
        except StorageError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                log.debug("registry not reachable yet: %s", exc)
                return
            time.sleep(0.1 * (attempt + 1))


def _objective_index(study: optuna.Study, index: int | None) -> int:
    count = len(study.directions)
    if index is None:
        if count > 1:
            raise ConfigError(
                f"study {study.study_name!r} has {count} objectives: pass objective_index=I "
                "(recycle(..., objective_index=0)) to rank teachers by objective I"
            )
        return 0
    if not 0 <= index < count:
        raise ConfigError(f"objective_index: {index} is not in 0..{count - 1}")
    return index
