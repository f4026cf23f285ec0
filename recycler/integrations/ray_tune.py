"""Ray Tune integration: recycled function trainables and a driver-side registry callback.

Inside a trial, :func:`recycled` (or :func:`get_distiller`) gives the trial its
:class:`~recycler.distiller.Distiller`, named after the experiment (the study) and the trial;
:func:`report` is ``ray.tune.report`` plus the KD metrics (``kd_active``, ``kd_teachers``,
``kd_steps_distilled``, ``kd_overhead``, ...) and, with ``model=``, a checkpoint the driver can
register. On the driver, :class:`RegistryCallback` registers each finished trial as a teacher;
running trials pick new teachers up at their next pool refresh (``teachers.refresh``).

Example:
    >>> from ray import tune
    >>> from recycler.integrations.ray_tune import RegistryCallback, recycled, report
    >>> cfg = {"registry": "sqlite:///sweep.db", "blobs": "./teachers"}
    >>> def train(config, kd):
    ...     net = make_net(config)
    ...     kd.attach(net).plan(epochs=10, steps_per_epoch=len(loader))
    ...     for epoch in range(10):
    ...         for x, y in loader:
    ...             loss = kd.loss(net(x), y, x)
    ...             ...
    ...         report({"accuracy": evaluate(net)}, model=net)
    >>> tuner = tune.Tuner(
    ...     tune.with_resources(recycled(train, cfg, metric="accuracy", mode="max"), {"cpu": 1}),
    ...     param_space={"lr": tune.loguniform(1e-3, 1e-1)},
    ...     tune_config=tune.TuneConfig(metric="accuracy", mode="max", num_samples=8),
    ...     run_config=tune.RunConfig(callbacks=[RegistryCallback(cfg)]),
    ... )  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from .._imports import require
from ..config import RecycleConfig, check_locations
from ..distiller import Distiller
from ..errors import RecyclerError
from ..teachers import BuildFn

if TYPE_CHECKING:
    from ray import tune
else:
    tune = require("ray.tune", "ray", feature="the Ray Tune integration")

from ._ray_callback import RegistryCallback
from ._ray_common import (
    META_FILE,
    WEIGHTS_FILE,
    clock_dict,
    clock_of,
    direction_of,
    mode_of,
    read_meta,
    read_weights,
    shareable,
    trial_number_of,
    write_checkpoint,
)

__all__ = [
    "META_FILE",
    "WEIGHTS_FILE",
    "RegistryCallback",
    "get_distiller",
    "kd_metrics",
    "recycled",
    "report",
    "resume",
    "trial_number_of",
]

TrainFn = Callable[..., None]  # train_fn(config, kd, **parameters)

# The running trial's Distiller, per worker process: (trial id, distiller).
_active: tuple[str, Distiller] | None = None
# steps distilled at each Distiller's previous report, for kd_active
_last_distilled: weakref.WeakKeyDictionary[Distiller, int] = weakref.WeakKeyDictionary()


def recycled(
    train_fn: TrainFn,
    config: RecycleConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    metric: str | None = None,
    mode: str | None = None,
    build: BuildFn | None = None,
) -> Callable[[dict[str, Any]], None]:
    """A Ray Tune function trainable calling ``train_fn(config, kd)`` with the trial's Distiller.

    ``config``: a :class:`RecycleConfig`, a dict or a YAML path; local paths in it are made
    absolute here, on the driver (trials run in their own folders). ``metric``/``mode``: what
    the trial reports and which way is better (Ray's "max"/"min"). ``build(params)``: builds a
    teacher of another architecture from its trial config (default: the student's copy).
    When ``train_fn`` ends the Distiller writes its lineage and stops. Wrap the result in
    ``tune.with_parameters(..., data=data)`` to pass ``data=`` on to ``train_fn``.

    Example:
        >>> def train(config, kd):
        ...     pass  # build the model, kd.attach(model).plan(...), kd.loss(...), report(...)
        >>> trainable = recycled(train, {"registry": "sqlite:////tmp/s.db"}, metric="acc")
        >>> trainable.__name__
        'train'
        >>> tune.Tuner(trainable, param_space={"lr": tune.uniform(0.01, 0.1)})  # doctest: +SKIP
    """
    checked = RecycleConfig.coerce(config)
    check_locations(checked, folders=False)  # a URL that can never work fails here
    cfg = shareable(checked).to_dict()
    direction_of(mode)  # fail on the driver, not in every trial

    def trainable(trial_config: dict[str, Any], **parameters: Any) -> None:
        kd = get_distiller(cfg, params=trial_config, metric=metric, mode=mode, build=build)
        try:
            train_fn(trial_config, kd, **parameters)
        finally:
            _finish(kd)

    trainable.__name__ = getattr(train_fn, "__name__", "recycled")
    trainable.__qualname__ = getattr(train_fn, "__qualname__", trainable.__name__)
    trainable.__doc__ = train_fn.__doc__
    return trainable


def get_distiller(
    config: RecycleConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    metric: str | None = None,
    mode: str | None = None,
    build: BuildFn | None = None,
    model: nn.Module | None = None,
) -> Distiller:
    """The running Ray Tune trial's Distiller, made on the first call in the trial.

    Its study is the experiment name (or ``config.study``), its trial id Ray's trial id and
    its trial number :func:`trial_number_of` that id. Later calls in the same trial return the
    same Distiller (and ignore their arguments). Paths in ``config`` must be absolute here.

    Example:
        >>> def train(config):  # a plain Ray Tune function trainable
        ...     kd = get_distiller("/shared/recycle.yaml", params=config, metric="acc")
        ...     kd.attach(net)  # doctest: +SKIP
    """
    global _active
    context = tune.get_context()
    trial_id = _trial_id()
    if not trial_id:
        raise RecyclerError(
            "get_distiller() works only inside a Ray Tune trial (a function run by tune.Tuner)"
        )
    if _active is not None and _active[0] == trial_id:
        return _active[1]
    kd = Distiller(
        shareable(RecycleConfig.coerce(config), resolve=False),
        study=context.get_experiment_name(),
        trial_number=trial_number_of(trial_id),
        trial_id=trial_id,
        run=trial_id,  # unique per experiment, kept by a restored one: the callback's too
        framework="ray",
        params=params,
        direction=direction_of(mode),
        metric_name=metric,
        model=model,
        build=build,
    )
    _active = (trial_id, kd)
    return kd


def kd_metrics(kd: Distiller) -> dict[str, float | int]:
    """The KD metrics reported with each result.

    ``kd_active``: 1 if a step since the previous report distilled; ``kd_teachers``: teachers
    in the pool now; ``kd_teachers_used``: distinct teachers used so far; ``kd_steps`` and
    ``kd_steps_distilled``: steps so far and how many distilled; ``kd_overhead``: teacher
    forward time over the rest of the step time; ``kd_registry_errors``: registry failures.

    Example:
        >>> kd_metrics(kd)["kd_teachers"]  # doctest: +SKIP
        3
    """
    stats = kd.stats()
    distilled = int(stats["steps_distilled"])
    before = _last_distilled.get(kd, 0)
    _last_distilled[kd] = distilled
    return {
        "kd_active": int(distilled > before),
        "kd_teachers": len(stats["pool"]),
        "kd_teachers_used": len(stats["teachers_used"]),
        "kd_steps": int(stats["steps"]),
        "kd_steps_distilled": distilled,
        "kd_overhead": float(stats["overhead"]),
        "kd_teacher_forward_s": float(stats["teacher_forward_s"]),
        "kd_registry_errors": len(stats.get("registry_errors", ())),
        **{f"kd_{k}": v for k, v in _plan_metrics(stats).items()},
    }


def _plan_metrics(stats: Mapping[str, Any]) -> dict[str, float | int]:
    """Planned and effective length, the budget's fraction and the init parent, as numbers."""
    out: dict[str, float | int] = {
        k: stats[k] for k in ("planned_steps", "effective_steps") if stats.get(k) is not None
    }
    if "budget" in stats:
        out["budget"] = float(stats["budget"]["fraction"])
    if stats.get("init_parent") is not None:
        out["init_parent"] = int(stats["init_parent"])
    return out


def report(
    metrics: Mapping[str, Any],
    *,
    model: nn.Module | None = None,
    checkpoint: Any = None,
    kd: Distiller | None = None,
) -> None:
    """``ray.tune.report`` with the KD metrics added and, with ``model``, a teacher checkpoint.

    ``model``: its weights (safetensors) and ``recycler.json`` go into the checkpoint, a new
    one, or ``checkpoint`` (a local folder from ``tune.Checkpoint.from_directory``) if given,
    for :class:`RegistryCallback` to register. ``kd``: default, the trial's Distiller. Also
    updates the trial's lineage in the registry (idempotent).

    Every call with ``model`` is one Tune checkpoint. Leave ``CheckpointConfig(num_to_keep)``
    unset when the sweep's trials, all together, report seconds apart: with it, Tune snapshots
    the experiment state after every ``num_to_keep`` checkpoints of a trial and warns whenever
    two snapshots come within 5 s.

    Example:
        >>> report({"accuracy": acc, "loss": loss}, model=net)  # doctest: +SKIP
    """
    kd = kd if kd is not None else _current()
    out = dict(metrics)
    if kd is not None:
        value = out.get(kd.metric_name) if kd.metric_name else None
        kd.observe(float(value) if isinstance(value, (int, float)) else None)
        out.update(kd_metrics(kd))
        if out["kd_teachers_used"]:
            kd.write_lineage()
    if model is None:
        if kd is not None and checkpoint is None and kd.config.register.enabled:
            kd.notice(
                "report_without_model",
                "report() got no model=, so this trial's model will not become a teacher: "
                "pass report(metrics, model=net) (or register.enabled: false to silence this)",
            )
        tune.report(out, checkpoint=checkpoint)
        return
    meta = _meta(kd)
    if checkpoint is not None:
        if getattr(checkpoint.filesystem, "type_name", None) != "local":
            raise RecyclerError(
                "report(model=..., checkpoint=...) needs a local checkpoint folder "
                "(tune.Checkpoint.from_directory); leave checkpoint out to let recycler make one"
            )
        write_checkpoint(checkpoint.path, model, meta)
        tune.report(out, checkpoint=checkpoint)
        return
    with tempfile.TemporaryDirectory(prefix="recycler-ckpt-") as folder:
        write_checkpoint(folder, model, meta)
        tune.report(out, checkpoint=tune.Checkpoint.from_directory(folder))


def resume(model: nn.Module, kd: Distiller | None = None) -> int:
    """Continue a resumed trial: its latest checkpoint's weights into ``model``; epochs done.

    Ray hands a trial its latest checkpoint when it resumes it (``Tuner.restore``,
    ``FailureConfig(max_failures=...)``, PBT). The Distiller's state (default: the trial's)
    is put back as :func:`report` saved it -- clock, sampler RNG, per-teacher usage, steps
    distilled -- so schedules, teacher draws and lineage go on as if never interrupted. Returns 0
    when the trial starts afresh; else the epochs done, by the Distiller's clock (``plan``).

    Example:
        >>> for epoch in range(resume(net, kd), epochs):  # doctest: +SKIP
        ...     train_one_epoch(net, kd)
        ...     report({"accuracy": evaluate(net)}, model=net)
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        meta = read_meta(folder)
        loaded = read_weights(folder, meta)
    if loaded is None:
        raise RecyclerError(
            f"the trial's checkpoint {checkpoint.path} has no {WEIGHTS_FILE}: "
            "resume() reads checkpoints written by report(..., model=...)"
        )
    model.load_state_dict(loaded[0])
    clock = clock_of(meta)
    kd = kd if kd is not None else _current()
    if clock is None:
        return 0
    if kd is not None:
        saved = meta.get("distiller")
        if isinstance(saved, Mapping):
            kd.load_state_dict(saved)  # clock, sampler RNG, usage: the lineage loses nothing
            # kd_active compares with the steps distilled at the previous report, which is
            # the checkpoint's report: not 0 in this fresh worker process
            _last_distilled[kd] = int(kd.stats()["steps_distilled"])
        else:
            kd.resume_at(clock.step)
    return clock.epoch


def _trial_id() -> str | None:
    with warnings.catch_warnings():  # Ray warns when called outside a trial; we raise instead
        warnings.simplefilter("ignore")
        trial_id = tune.get_context().get_trial_id()
    return str(trial_id) if trial_id else None


def _current() -> Distiller | None:
    if _active is None:
        return None
    return _active[1] if _trial_id() == _active[0] else None


def _meta(kd: Distiller | None) -> dict[str, Any]:
    if kd is None:
        context = tune.get_context()
        trial_id = _trial_id() or ""
        return {
            "study": context.get_experiment_name(),
            "trial_id": trial_id,
            "trial_number": trial_number_of(trial_id),
        }
    signature = kd.signature
    return {
        "study": kd.study,
        "trial_id": kd.trial_id,
        "trial_number": kd.trial_number,
        "metric_name": kd.metric_name,
        "mode": mode_of(kd.direction),
        "clock": clock_dict(kd.clock()),
        "distiller": kd.state_dict(),
        "tags": kd.final_tags(),
        "output_signature": signature if isinstance(signature, str) else None,
    }


def _finish(kd: Distiller) -> None:
    """The trial's end: lineage written, background work stopped, the Distiller released."""
    global _active
    try:
        kd.write_lineage()
        if kd.config.summary:
            kd.log_summary()
    finally:
        close = getattr(kd, "close", None)
        if callable(close):
            close()
        if _active is not None and _active[1] is kd:
            _active = None
