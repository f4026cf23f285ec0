"""Who a Trainer run is: its study, trial number, framework id, run, params and metric."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._imports import require
from .._storage import Direction, Registry
from ..config import RecycleConfig
from ._hf_loop import args_params, next_trial_number
from ._ray_common import trial_number_of

#: The metric name of a search's trials: the Trainer's objective.
OBJECTIVE = "objective"


@dataclasses.dataclass(frozen=True)
class Who:
    """A Trainer run as a trial (``run``: the Distiller's run key, None for a random one)."""

    study: str
    number: int
    id: str | None
    params: dict[str, Any]
    direction: Direction
    metric: str
    run: str | None = None


def who(
    trial: Any,
    *,
    backend: str | None,
    search_direction: Direction | None,
    args: Any,
    has_eval: bool,
    config: RecycleConfig,
    registry: Registry,
) -> Who:
    """The identity of one ``train()``: a search's trial (optuna, ray), else a run of its own."""
    if backend == "optuna" and trial is not None:
        study = trial.study
        direction = Direction(study.direction.name.lower())
        number, tid = trial.number, str(trial._trial_id)
        return Who(study.study_name, number, tid, dict(trial.params), direction, OBJECTIVE)
    if backend == "ray" and trial is not None:
        tune = require("ray.tune", "ray", feature="hyperparameter_search(backend='ray')")
        context = tune.get_context()
        tid = str(context.get_trial_id())
        direction = search_direction or Direction.MINIMIZE
        study = context.get_experiment_name()
        # Ray's trial id is unique per experiment and kept by a restored one: the run's key
        return Who(study, trial_number_of(tid), tid, dict(trial), direction, OBJECTIVE, run=tid)
    study = config.study or args.run_name or Path(args.output_dir).resolve().name
    params = dict(trial) if isinstance(trial, Mapping) else args_params(args)
    metric, direction = ranking_metric(args, has_eval=has_eval)
    return Who(study, next_trial_number(registry, study), None, params, direction, metric)


def ranking_metric(args: Any, *, has_eval: bool) -> tuple[str, Direction]:
    """The metric a trial outside a search is ranked by: ``metric_for_best_model``."""
    if not has_eval:
        return "train_loss", Direction.MINIMIZE
    name = args.metric_for_best_model or "loss"
    greater = args.greater_is_better
    if greater is None:
        greater = not name.endswith("loss")
    key = name if name.startswith("eval_") else f"eval_{name}"
    return key, Direction.MAXIMIZE if greater else Direction.MINIMIZE
