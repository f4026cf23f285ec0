"""RegistryCallback: the Tune driver registers finished trials' checkpoints as teachers."""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

from .._imports import require
from .._storage import Registry, StorageError, TeacherRecord
from ..config import RecycleConfig
from ..distiller import RUNNING, TrialIdentity, checkpoint_due, not_registered
from ..distiller._lifecycle import register_teacher
from ..errors import ConfigError
from ._ray_common import (
    clock_of,
    direction_of,
    read_meta,
    read_weights,
    shareable,
    trial_number_of,
)

if TYPE_CHECKING:
    from ray import tune
else:
    tune = require("ray.tune", "ray", feature="the Ray Tune integration")

log = logging.getLogger(__name__)


class RegistryCallback(tune.Callback):
    """Registers teachers from the Tune driver, the registry's single writer.

    On trial completion the trial's latest checkpoint becomes a final teacher: ``complete``
    if the trial ran to its end (or its planned length), ``pruned`` if a scheduler such as
    ASHA or a stopper ended it early; each only if listed in ``config.register.on``. With
    ``register.every`` set, intermediate checkpoints are registered too (each once a newer
    one exists, so the last one is registered as final). A trial that errors keeps no teacher:
    its intermediate teachers are marked DELETED. Weights are copied into the registry's blob
    store, so Ray may delete its checkpoint folders (``num_to_keep``) at will.

    Registration is idempotent by (trial, step, checksum) and the registered keys are part of
    the callback's state, so ``Tuner.restore`` never registers a teacher twice. A registry
    failure is warned about and never fails the trial.

    Example:
        >>> cfg = RecycleConfig(registry="postgresql+psycopg://u@db/sweeps", blobs="s3://b/t")
        >>> tuner = tune.Tuner(
        ...     recycled(train, cfg, metric="accuracy", mode="max"),
        ...     tune_config=tune.TuneConfig(metric="accuracy", mode="max", num_samples=8),
        ...     run_config=tune.RunConfig(callbacks=[RegistryCallback(cfg)]),
        ... )  # doctest: +SKIP
    """

    def __init__(
        self,
        config: RecycleConfig | dict[str, Any] | str | None = None,
        *,
        metric: str | None = None,
        mode: str | None = None,
        tune_config: Any = None,
        weights_file: str | None = None,
        output_signature: str | None = None,
    ) -> None:
        """``metric``/``mode`` default to ``tune_config``'s, else to what the trainable wrote.

        ``weights_file``/``output_signature`` are for checkpoints not written by
        :func:`report` (e.g. ``model.pt``, read with ``weights_only=True``).
        """
        self.config = shareable(RecycleConfig.coerce(config))
        self.metric = metric or getattr(tune_config, "metric", None)
        self.mode = mode or getattr(tune_config, "mode", None)
        direction_of(self.mode)  # validates
        self.weights_file = weights_file
        self.output_signature = output_signature
        self.errors: list[str] = []
        self._registry: Registry | None = None
        self._keys: set[str] = set()
        self._teachers: dict[str, list[int]] = {}
        self._stopped: set[str] = set()
        self._last_step: dict[str, int] = {}

    @property
    def registry(self) -> Registry:
        """The registry teachers go to (opened on first use)."""
        if self._registry is None:
            self._registry = Registry(self.config.registry, self.config.blobs)
        return self._registry

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_registry"] = None  # Ray pickles callbacks; connections stay behind
        return state

    # -- Tune's hooks --------------------------------------------------------------------

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        # Tune sets done=True on the result when a scheduler or stopper ends the trial; a trial
        # whose function returns ends with a duplicate result that callbacks never see.
        if result.get("done"):
            self._stopped.add(trial.trial_id)

    def on_checkpoint(
        self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        if not self.config.register.enabled or self.config.register.every is None:
            return
        # Called before Tune files the new checkpoint (and deletes old ones): the previous
        # latest still exists, and is now known not to be the trial's last one.
        previous = getattr(trial, "latest_checkpoint_result", None)
        if previous is None or previous.checkpoint is None:
            return
        if previous.checkpoint.path == checkpoint.path:
            return
        self._register(trial, previous, final=False, state="running")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        stopped = trial.trial_id in self._stopped
        self._stopped.discard(trial.trial_id)
        if not self.config.register.enabled:
            return
        latest = getattr(trial, "latest_checkpoint_result", None)
        if latest is None or latest.checkpoint is None:
            log.warning("trial %s finished without a checkpoint: no teacher", trial.trial_id)
            return
        self._register(trial, latest, final=True, state="pruned" if stopped else "complete")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._stopped.discard(trial.trial_id)
        self._last_step.pop(trial.trial_id, None)
        # a restarted trial (restart_errored) registers afresh
        self._keys = {k for k in self._keys if not k.startswith(f"{trial.trial_id}/")}
        for teacher_id in self._teachers.pop(trial.trial_id, []):
            try:
                self.registry.delete(teacher_id)
            except StorageError as exc:
                self._warn(f"could not delete teacher {teacher_id} of errored trial: {exc}")

    def get_state(self) -> dict[str, Any]:
        return {
            "keys": sorted(self._keys),
            "teachers": {k: list(v) for k, v in self._teachers.items()},
            "stopped": sorted(self._stopped),
            "last_step": dict(self._last_step),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._keys = set(state.get("keys", ()))
        self._teachers = {k: list(v) for k, v in state.get("teachers", {}).items()}
        self._stopped = set(state.get("stopped", ()))
        self._last_step = dict(state.get("last_step", {}))

    # -- registering ---------------------------------------------------------------------

    def _register(self, trial: Any, result: Any, *, final: bool, state: str) -> None:
        try:
            with result.checkpoint.as_directory() as folder:
                meta = read_meta(folder)
                metrics = dict(result.metrics or {})
                clock = clock_of(meta)
                step = (
                    clock.step if clock is not None else int(metrics.get("training_iteration", 0))
                )
                if final and state == "pruned" and _reached_plan(meta):
                    state = "complete"  # stopped at its planned end (e.g. ASHA's max_t)
                if not_registered(self.config, state if final else RUNNING) is not None:
                    return
                last = self._last_step.get(trial.trial_id, 0)
                if not final and not checkpoint_due(self.config.register.every, clock, last):
                    return
                loaded = read_weights(folder, meta, self.weights_file)
            if loaded is None:
                log.warning(
                    "trial %s: its checkpoint has no weights file: no teacher", trial.trial_id
                )
                return
            tensors, sha = loaded
            key = f"{trial.trial_id}/{step}/{sha}"
            if key in self._keys:
                return
            rec = self._write(trial, meta, metrics, tensors, step=step, final=final, state=state)
        except (StorageError, OSError, ValueError, ConfigError) as exc:
            self._warn(f"trial {trial.trial_id}: registering its checkpoint failed: {exc}")
            return
        self._keys.add(key)
        self._teachers.setdefault(trial.trial_id, []).append(rec.id)
        if not final:
            self._last_step[trial.trial_id] = step
        log.info("trial %s: teacher %s registered (%s)", trial.trial_id, rec.id, state)

    def _write(
        self,
        trial: Any,
        meta: dict[str, Any],
        metrics: dict[str, Any],
        tensors: dict[str, Any],
        *,
        step: int,
        final: bool,
        state: str,
    ) -> TeacherRecord:
        metric = self.metric or meta.get("metric_name")
        value = metrics.get(metric) if metric else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = None
        clock = clock_of(meta)
        identity = TrialIdentity(
            study=self.config.study or meta.get("study") or trial.storage.experiment_dir_name,
            number=int(meta.get("trial_number", trial_number_of(trial.trial_id))),
            id=trial.trial_id,
            run=trial.trial_id,  # as the trial's own Distiller names its run
            framework="ray",
            params=trial.config,
            direction=direction_of(self.mode or meta.get("mode")),
            metric_name=metric,
        )
        return register_teacher(
            self.registry,
            identity,
            tensors,
            metric=float(value) if value is not None and math.isfinite(value) else None,
            state=state,
            final=final,
            step=step,
            epoch=clock.epoch if clock is not None else None,
            signature=meta.get("output_signature") or self.output_signature,
            tags={
                **(_str_tags(meta.get("tags")) if final else {}),
                "ray_iteration": str(metrics.get("training_iteration", "")),
            },
        )

    def _warn(self, message: str) -> None:
        self.errors.append(message)
        warnings.warn(f"recycler: {message}", RuntimeWarning, stacklevel=3)


def _reached_plan(meta: dict[str, Any]) -> bool:
    clock = clock_of(meta)
    total = clock.total_steps if clock is not None else None
    return clock is not None and total is not None and clock.step >= total


def _str_tags(raw: Any) -> dict[str, str]:
    """The trial's tags from ``recycler.json`` (str to str only)."""
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
