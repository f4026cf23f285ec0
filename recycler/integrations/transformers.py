"""Hugging Face transformers: recycle a Trainer's runs and ``Trainer.hyperparameter_search``.

Swap ``Trainer`` for :class:`RecycleTrainer` (or put :class:`RecycleMixin` first among
your own Trainer subclass's bases) and give it ``recycle=`` (a :class:`RecycleConfig`, a
dict or a YAML path). Each ``train()`` is a trial: it distils from the earlier trials'
models on the model's logits (class logits, or token logits ``[B, T, V]`` on the positions
whose label is not -100) and its model becomes a teacher for the later ones.

How the Trainer's hooks map onto the trial lifecycle (:mod:`recycler.distiller`)::

    train(trial=...)                      one trial (hyperparameter_search: one per trial)
      model_init(trial)                   the student
      _hp_search_setup(trial)          -> kd = Distiller(study, trial, params); kd.attach(model)
      set_initial_training_values()    -> kd.plan(the Trainer's length); with a budget the
                                          effective length goes to args.num_train_epochs or
                                          args.max_steps, so the LR schedule follows it
      compute_loss() per micro-batch   -> task + kd_scale * λ·KD (teachers: the batch less labels)
      _report_to_hp_search() per eval  -> kd.report(value) (register.every); Ray: + kd_* metrics
      returns                          -> kd.finish("complete", the objective / metric)
      raises optuna.TrialPruned        -> kd.finish("pruned")   (register.on decides)
      raises anything else             -> kd.finish("fail")     (no teacher)

Identity: with ``hyperparameter_search(backend="optuna")`` the Optuna study and trial (the
accounting goes to ``trial.user_attrs["recycler"]``); with ``backend="ray"`` the experiment
name and Ray's trial id (registered from inside the trial at its end; the KD metrics join
each report); without a search, ``config.study``, else ``args.run_name``, else the name of
``args.output_dir``, and the next free trial number of that study. The Distiller's clock
counts micro-batches: with gradient accumulation G, ``ba`` spans and ``steps`` are G per
optimizer step (``ep`` and ``dur`` are not affected).

Example:
    >>> from recycler.integrations.transformers import RecycleTrainer
    >>> trainer = RecycleTrainer(model_init=model_init, args=args, train_dataset=train,
    ...                          eval_dataset=test, recycle="recycle.yaml")  # doctest: +SKIP
    >>> trainer.hyperparameter_search(backend="optuna", storage="sqlite:///sweep.db",
    ...                               study_name="lr", n_trials=8)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from .._imports import require
from .._storage import Direction, Registry
from ..config import RecycleConfig
from ..distiller import Distiller, TrialOutcome, metric_of
from ..errors import ConfigError
from ..teachers import BuildFn
from ._hf_identity import OBJECTIVE, who
from ._hf_loop import (
    LoopLength,
    forget_finished_dataloaders,
    kd_mask,
    kd_scale,
    names_schedule,
    parse_schedule,
    registry_for,
    student_logits,
)
from ._optuna_finish import finish as optuna_finish
from ._ray_common import shareable

if TYPE_CHECKING:
    import transformers
    from transformers import Trainer as _Base
else:
    transformers = require(
        "transformers", "transformers", minimum="5.0", feature="the transformers integration"
    )
    _Base = object

__all__ = [
    "MLM_SCHEDULE",
    "OBJECTIVE",
    "TEACHERS_FROM",
    "RecycleMixin",
    "RecycleTrainer",
    "is_language_model",
]

#: The default schedule for language-model (token) logits, after Blakeney et al. 2022 §5.2:
#: distilling BERT only in the first 20-50% of training was best, throughout it hurt.
MLM_SCHEDULE = "until 0.3dur"
#: Where teachers' models come from: a copy of the student's architecture, or model_init.
TEACHERS_FROM = ("student", "model_init")
ConfigLike = RecycleConfig | Mapping[str, Any] | str | os.PathLike[str] | None
_LABEL_KEYS = frozenset({"labels", "label", "label_ids", "shift_labels"})
_LM_SUFFIXES = ("ForMaskedLM", "ForCausalLM", "LMHeadModel")


def is_language_model(model: nn.Module) -> bool:
    """Whether ``model`` has a masked- or causal-LM head (its logits are token logits).

    Example:
        >>> is_language_model(nn.Linear(2, 2))
        False
    """
    auto = transformers.models.auto.modeling_auto
    names: set[str] = set()
    for table in (auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES, auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        for value in table.values():
            names.update([value] if isinstance(value, str) else value)
    return any(
        c.__name__ in names or c.__name__.endswith(_LM_SUFFIXES) for c in type(model).__mro__
    )


class RecycleMixin(_Base):  # type: ignore[misc]
    """Recycling for any ``transformers.Trainer`` subclass: list it first among the bases.

    ``class MyTrainer(RecycleMixin, MyOwnTrainer)`` keeps ``MyOwnTrainer.compute_loss``
    (it must honour ``return_outputs=True``, as the Trainer's evaluation needs anyway) and
    adds the KD term to the loss it returns. Keyword arguments besides the Trainer's:

    - ``recycle``: the :class:`RecycleConfig` (or a dict, a YAML path); a bad option fails
      here, before any training, with its key path.
    - ``registry``: an open registry instead of ``recycle``'s URLs (not sent to Ray's
      workers: they open the config's).
    - ``mlm_schedule`` (default :data:`MLM_SCHEDULE`): the schedule for language models
      when the config names none (``None``: the config's ``always``).
    - ``teachers_from``: ``"student"`` (default; a copy of the student's architecture) or
      ``"model_init"`` (each teacher built by ``model_init`` from its own trial's params,
      when the architecture is a hyperparameter).

    After each ``train()``: ``recycle_outcome`` (the trial's :class:`TrialOutcome`:
    ``.info`` the accounting, ``.record`` the teacher). While it trains: ``distiller``.
    """

    def __init__(
        self,
        *args: Any,
        recycle: ConfigLike = None,
        registry: Registry | None = None,
        mlm_schedule: str | None = MLM_SCHEDULE,
        teachers_from: str = "student",
        **kwargs: Any,
    ) -> None:
        self.recycle_config = RecycleConfig.coerce(recycle)
        self._recycle_names_schedule = names_schedule(recycle)
        self.mlm_schedule = parse_schedule(mlm_schedule)
        if teachers_from not in TEACHERS_FROM:
            raise ConfigError(f"teachers_from: {teachers_from!r} is not one of student, model_init")
        self.teachers_from = teachers_from
        self.distiller: Distiller | None = None
        self.recycle_outcome: TrialOutcome | None = None
        self._recycle_registry = registry
        self._recycle_direction: Direction | None = None  # during hyperparameter_search
        self._recycle_loop: LoopLength | None = None
        self._recycle_last: float | None = None
        self._recycle_synced = False
        self._recycle_saved: dict[str, Any] = {}
        super().__init__(*args, **kwargs)
        if teachers_from == "model_init" and self.model_init is None:
            raise ConfigError("teachers_from: 'model_init' needs the Trainer's model_init")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        base = transformers.Trainer
        if base in mro and mro.index(base) < mro.index(RecycleMixin):
            raise TypeError(
                f"{cls.__name__}: list RecycleMixin before the Trainer classes in its bases "
                f"(class {cls.__name__}(RecycleMixin, YourTrainer)), else its hooks never run"
            )

    def __getstate__(self) -> dict[str, Any]:
        # Ray ships the trainer to its workers: an open registry (engines) stays here
        state = self.__dict__.copy()
        state["_recycle_registry"] = None
        state["distiller"] = None
        return state

    # -- the search ----------------------------------------------------------------------

    def hyperparameter_search(
        self,
        hp_space: Callable[..., dict[str, Any]] | None = None,
        compute_objective: Callable[[dict[str, float]], float] | None = None,
        n_trials: int = 20,
        direction: str | list[str] = "minimize",
        backend: Any = None,
        hp_name: Callable[..., str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``Trainer.hyperparameter_search``, each trial recycled; single-objective only.

        With ``backend="ray"`` the config's local paths are made absolute here (Ray runs
        each trial in its own folder).
        """
        if not isinstance(direction, str):
            raise ConfigError(
                "direction: recycler ranks teachers by one objective; a multi-objective "
                f"search ({direction!r}) is not supported"
            )
        config = self.recycle_config
        if str(getattr(backend, "value", backend)) == "ray":
            self.recycle_config = shareable(config)
            forget_finished_dataloaders()
        self._recycle_direction = Direction(direction)
        try:
            return super().hyperparameter_search(
                hp_space, compute_objective, n_trials, direction, backend, hp_name, **kwargs
            )
        finally:
            self.recycle_config = config
            self._recycle_direction = None

    # -- the trial -----------------------------------------------------------------------

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``Trainer.train``, one recycled trial: it distils, then becomes a teacher."""
        self.recycle_outcome = None
        try:
            output = super().train(
                resume_from_checkpoint=resume_from_checkpoint,
                trial=trial,
                ignore_keys_for_eval=ignore_keys_for_eval,
                **kwargs,
            )
        except BaseException as exc:
            self._recycle_restore()
            self._recycle_end(exc, None)
            raise
        self._recycle_restore()
        self._recycle_end(None, output)
        return output

    def _hp_search_setup(self, trial: Any) -> None:
        super()._hp_search_setup(trial)  # trial params are in self.args now
        self._recycle_begin(trial)

    def set_initial_training_values(self, args: Any, dataloader: Any, *rest: Any) -> Any:
        values = super().set_initial_training_values(args, dataloader, *rest)
        kd = self.distiller
        if kd is None or self._recycle_loop is not None:
            return values
        loop = self._recycle_loop = LoopLength.of(args, dataloader)
        kd.plan(**loop.plan())  # budget and init happen here, before the optimizer exists
        if loop.epochs is not None and kd.epochs is not None and kd.epochs != loop.epochs:
            self._recycle_set(args, "num_train_epochs", float(kd.epochs))
        elif (
            loop.epochs is None and kd.steps is not None and kd.steps != loop.micro(loop.max_steps)
        ):
            self._recycle_set(args, "max_steps", loop.updates(kd.steps))
        else:
            return values
        self._recycle_loop = LoopLength.of(args, dataloader)
        return super().set_initial_training_values(args, dataloader, *rest)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        """The Trainer's loss (or the subclass's) plus the KD term, at the Trainer's scale."""
        kd = self.distiller
        if kd is None or not model.training:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        self._recycle_sync_clock(kd)
        labels = inputs.get("labels")
        drop = _LABEL_KEYS.union(getattr(self, "label_names", None) or ())
        teacher_inputs = {k: v for k, v in inputs.items() if k not in drop}
        shift = inputs.get("shift_labels")
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        logits = student_logits(outputs)
        causal = bool(getattr(self, "_loss_shifts_labels", False))
        mask, kept = kd_mask(logits, labels, shift, causal=causal)
        zero = loss.new_zeros(())
        term = kd.loss(logits, labels, teacher_inputs, task_loss=zero, mask=mask)
        if term is not zero:
            loss = loss + term * kd_scale(self, kept, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _report_to_hp_search(self, trial: Any, step: int, metrics: dict[str, float]) -> None:
        kd = self.distiller
        if kd is not None:
            value = self._recycle_value(trial, metrics)
            self._recycle_last = value
            kd.report(value)  # an intermediate teacher when register.every is due
            if self._recycle_backend() == "ray" and trial is not None:
                self._recycle_report_ray(kd, metrics, done=False)
                return
        super()._report_to_hp_search(trial, step, metrics)  # Optuna: report, maybe prune

    # -- the lifecycle, step by step -----------------------------------------------------

    def _recycle_backend(self) -> str | None:
        backend = getattr(self, "hp_search_backend", None)
        return None if backend is None else str(getattr(backend, "value", backend))

    def _recycle_begin(self, trial: Any) -> None:
        if self.distiller is not None:
            self.distiller.close()
        self._recycle_loop, self._recycle_last, self._recycle_synced = None, None, False
        config = self._recycle_trial_config()
        registry = self._recycle_registry or registry_for(config)
        me = who(
            trial,
            backend=self._recycle_backend(),
            search_direction=self._recycle_direction,
            args=self.args,
            has_eval=self.eval_dataset is not None,
            config=config,
            registry=registry,
        )
        build = self._recycle_build() if self.teachers_from == "model_init" else None
        self.distiller = Distiller(
            config,
            study=me.study,
            trial_number=me.number,
            trial_id=me.id,
            run=me.run,
            framework="transformers",
            params=me.params,
            registry=registry,
            model=self.model,
            build=build,
            direction=me.direction,
            metric_name=me.metric,
            # a model_init build draws random weights: in the training thread, RNG restored
            background_refresh=build is None,
        )

    def _recycle_trial_config(self) -> RecycleConfig:
        config = self.recycle_config
        if (
            self.mlm_schedule is not None
            and not self._recycle_names_schedule
            and is_language_model(self.model)
        ):
            distill = dataclasses.replace(config.distill, schedule=self.mlm_schedule)
            config = dataclasses.replace(config, distill=distill)
        if config.teachers.autocast is None and (self.args.bf16 or self.args.fp16):
            dtype: Literal["float16", "bfloat16"] = "bfloat16" if self.args.bf16 else "float16"
            config = dataclasses.replace(
                config, teachers=dataclasses.replace(config.teachers, autocast=dtype)
            )
        return config

    def _recycle_build(self) -> BuildFn:
        backend = self._recycle_backend()

        def build(params: Mapping[str, Any]) -> nn.Module:
            trial: Any = None
            if backend == "optuna":
                trial = require("optuna", None).trial.FixedTrial(dict(params))
            elif backend is not None:
                trial = dict(params)
            with torch.random.fork_rng(devices=[]):  # the student's RNG stream stays as it was
                model: nn.Module = self.call_model_init(trial)
            return model

        return build

    def _recycle_set(self, args: Any, name: str, value: Any) -> None:
        self._recycle_saved.setdefault(name, getattr(args, name))
        setattr(args, name, value)

    def _recycle_restore(self) -> None:
        for name, value in self._recycle_saved.items():
            setattr(self.args, name, value)
        self._recycle_saved.clear()

    def _recycle_sync_clock(self, kd: Distiller) -> None:
        """A resumed ``train(resume_from_checkpoint=...)``: the clock starts where it was."""
        if self._recycle_synced:
            return
        self._recycle_synced = True
        done = int(self.state.global_step)
        if done and kd.step == 0 and self._recycle_loop is not None:
            kd.resume_at(self._recycle_loop.micro(done))

    def _recycle_value(self, trial: Any, metrics: Mapping[str, float]) -> float | None:
        if self._recycle_backend() is not None and trial is not None:
            return metric_of(self.compute_objective(dict(metrics)))
        kd = self.distiller
        return metric_of(metrics.get(kd.metric_name or "")) if kd is not None else None

    def _recycle_report_ray(self, kd: Distiller, metrics: Mapping[str, float], done: bool) -> None:
        """Ray's report of ``_report_to_hp_search`` (and of the search's last evaluation),
        with the KD metrics (``kd_steps_distilled``, ``kd_teachers``, ...) added."""
        tune = require("ray.tune", "ray", feature="hyperparameter_search(backend='ray')")
        from .ray_tune import kd_metrics

        self.objective = self.compute_objective(dict(metrics))
        out: dict[str, Any] = {**metrics, "objective": self.objective, **kd_metrics(kd)}
        if done:
            out["done"] = True
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if done or self.control.should_save:
                self._tune_save_checkpoint(checkpoint_dir=folder)
                checkpoint = tune.Checkpoint.from_directory(folder)
            tune.report(out, checkpoint=checkpoint)

    def _recycle_final(self, kd: Distiller, output: Any) -> float | None:
        """The value the trial's teacher is ranked by."""
        if self._recycle_backend() is not None and self._trial is not None:
            if getattr(self, "objective", None) is None:  # no evaluation while training
                metrics = self.evaluate()
                kd.observe(metric_of(self.compute_objective(dict(metrics))))
                if self._recycle_backend() == "ray":
                    self._recycle_report_ray(kd, metrics, done=True)
                else:
                    self.objective = self.compute_objective(dict(metrics))
            return metric_of(self.objective)
        if kd.metric_name == "train_loss":
            return metric_of(getattr(output, "training_loss", None))
        if self.args.load_best_model_at_end and self.state.best_metric is not None:
            return metric_of(self.state.best_metric)  # the weights are the best checkpoint's
        if self._recycle_last is not None:
            return self._recycle_last
        return metric_of(self.evaluate().get(kd.metric_name or ""))

    def _recycle_end(self, exc: BaseException | None, output: Any) -> None:
        kd, self.distiller = self.distiller, None
        if kd is None:
            return
        why: str | None = None
        value: float | None = None
        if exc is None:
            state = "complete"
            try:
                value = self._recycle_final(kd, output)
            except Exception as failure:  # the final evaluation failed: so did the trial
                self._recycle_finish(kd, "fail", None, f"{type(failure).__name__}: {failure}")
                raise
        elif isinstance(exc, require("optuna", None).TrialPruned):
            state = "pruned"
        elif isinstance(exc, Exception):
            state, why = "fail", f"{type(exc).__name__}: {exc}"
        else:  # KeyboardInterrupt: stop the background refresh, nothing else
            kd.close()
            return
        self._recycle_finish(kd, state, value, why)

    def _recycle_finish(
        self, kd: Distiller, state: Any, value: float | None, why: str | None
    ) -> None:
        trial = self._trial
        if self._recycle_backend() == "optuna" and trial is not None:
            self.recycle_outcome = optuna_finish(trial, kd, state, value, 0, why=why)
        else:
            if state == "pruned" and value is None:
                value = self._recycle_last
            self.recycle_outcome = kd.finish(state, value, why=why)


class RecycleTrainer(RecycleMixin, transformers.Trainer):  # type: ignore[misc]
    """``transformers.Trainer`` whose runs recycle the earlier runs (see :class:`RecycleMixin`).

    Example:
        >>> trainer = RecycleTrainer(model=model, args=args, train_dataset=data,
        ...                          recycle={"registry": "sqlite:///runs.db"})  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
        >>> trainer.recycle_outcome.info["steps_distilled"]  # doctest: +SKIP
        120
    """
