"""Distiller: the per-trial runtime every adapter uses; composes clock, pool, step, accounting."""

from __future__ import annotations

import random
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._storage import Direction, Registry, TeacherRecord
from ..config import RecycleConfig, check_locations
from ..errors import ConfigError
from ..losses import combine, task_loss_of
from ..sampling import StepSampler
from ..schedule import ALWAYS
from ..teachers import BuildFn, Inputs, TeacherPool
from ..time import Clock, TimeUnit
from . import _lifecycle as lifecycle
from ._accounting import Accounting
from ._clock import TrialClock
from ._identity import IdentityView, TrialIdentity
from ._notices import NO_INPUTS, Notices, never_fires, why_off
from ._plan import TrialPlan
from ._refresh import PoolRefresher
from ._resume import STATE_VERSION, check_state, rng_json, rng_tuple
from ._step import KDStep


class Distiller(IdentityView):
    """Knowledge distillation from earlier trials, for one trial.

    Call :meth:`loss` once per training step; it returns ``task + λ·KD`` when the schedule
    distils this step and a pool exists, else the task loss alone (no teacher runs then).
    Call :meth:`finish` (or :meth:`register`) when the trial ends to make the model a teacher
    for later trials; :meth:`state_dict` / :meth:`load_state_dict` carry it across a resume.
    ``run``: this run's key (:class:`TrialIdentity`; default random).

    Example:
        >>> kd = Distiller(study="lr-sweep", trial_number=3, model=net)  # doctest: +SKIP
        >>> kd.plan(epochs=60, steps_per_epoch=len(loader))  # doctest: +SKIP
        >>> for x, y in loader:  # doctest: +SKIP
        ...     loss = kd.loss(net(x), y, x)
        ...     loss.backward(); opt.step(); opt.zero_grad()
        >>> kd.finish("complete", metric=0.71)  # doctest: +SKIP
    """

    def __init__(
        self,
        config: RecycleConfig | None = None,
        *,
        study: str,
        trial_number: int,
        trial_id: str | None = None,
        framework: str = "manual",
        params: Mapping[str, Any] | None = None,
        registry: Registry | None = None,
        model: nn.Module | None = None,
        build: BuildFn | None = None,
        direction: Direction | str = Direction.MAXIMIZE,
        metric_name: str | None = None,
        output_signature: str | None = None,
        background_refresh: bool = True,
        run: str | None = None,
    ) -> None:
        self.config = config or RecycleConfig()
        self.identity = TrialIdentity(
            study=self.config.study or study,
            number=trial_number,
            id=trial_id,
            framework=framework,
            params=dict(params or {}),
            direction=Direction(direction),
            metric_name=metric_name,
            run=run or "",
        )
        if registry is None:
            check_locations(self.config)
        self.registry = registry or Registry(self.config.registry, self.config.blobs)
        seed = self.config.teachers.seed
        if seed is None:
            seed = zlib.crc32(f"{self.identity.study}\x00{trial_number}".encode())
        self._rng = random.Random(seed)  # the pool policy's
        self.clock_state = TrialClock()
        self.accounting = Accounting()
        self._refresher = PoolRefresher(
            self.config,
            self.identity,
            self.registry,
            self.clock_state,
            self.accounting,
            self._rng,
            background=background_refresh,
            signature=output_signature,
        )
        self._refresher.model, self._refresher.build = model, build
        self._kd = KDStep(
            self.config, StepSampler(self.config.teachers.per_step, seed=seed), self.accounting
        )
        self._schedule = self.config.distill.schedule
        self._always = self._schedule == ALWAYS
        self._counts_trials = TimeUnit.TRIAL in self._schedule.units
        self._warmup_steps: float | None = None
        self._plan = TrialPlan(
            self.config,
            self.identity,
            self.registry,
            self.clock_state,
            self._refresher,
            self.accounting,
        )
        self._notices = Notices(self.identity.study, trial_number)
        self._registrations = lifecycle.Registrations(self.registry, self.identity, self.accounting)

    # -- setup ---------------------------------------------------------------------------

    def attach(self, model: nn.Module, build: BuildFn | None = None) -> Distiller:
        """The student model (its architecture is the default teacher architecture)."""
        self._refresher.model = model
        if build is not None:
            self._refresher.build = build
        return self

    @property
    def model(self) -> nn.Module | None:
        """The attached student model."""
        return self._refresher.model

    def plan(
        self,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        steps: int | None = None,
    ) -> Distiller:
        """The trial's planned length, for epoch-based schedules and ``dur`` fractions.

        Call it after :meth:`attach`, before training. With ``budget`` a trial that has a
        pool trains a fraction of this plan: read the effective length from :attr:`epochs` /
        :attr:`steps` (and run the LR schedule over it). With ``init`` the model's weights
        start from the best compatible earlier teacher.
        """
        self._plan.apply(epochs, steps_per_epoch, steps, self.model)
        self._refresher.replanned()
        self._warmup_steps = None
        self._check_schedule()
        return self

    def _check_schedule(self) -> None:
        """Say once when the schedule never distils within this plan."""
        if not self._counts_trials and self.config.distill.weight > 0:
            problem = never_fires(self._schedule, self.clock())
            if problem is not None:
                self._notices.say("schedule", problem)

    @property
    def epochs(self) -> int | None:
        """The epochs to train: the plan's, or fewer under ``budget``."""
        return self.clock_state.planned_epochs

    @property
    def steps(self) -> int | None:
        """The steps to train: the plan's, or fewer under ``budget``."""
        return self.clock_state.planned_steps

    def resume_at(self, step: int, epoch: int | None = None) -> None:
        """Put the clock at ``step`` (and ``epoch``) for a trial resumed from a checkpoint."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.clock_state.step = step
        if epoch is not None:
            self.clock_state.explicit_epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        """Tell the clock the current epoch (when steps per epoch are not fixed)."""
        self.clock_state.explicit_epoch = epoch

    @property
    def signature(self) -> str | None:
        """The output signature teachers must have (known after the first step)."""
        return self._refresher.signature

    @property
    def step(self) -> int:
        """Training steps taken so far (calls to :meth:`loss`)."""
        return self.clock_state.step

    @property
    def epoch(self) -> int:
        """The current epoch (0-based)."""
        return self.clock_state.epoch

    def clock(self) -> Clock:
        """The schedule's view of where this trial is."""
        return self.clock_state.now()

    @property
    def pool(self) -> TeacherPool | None:
        """The loaded teachers (None before the first refresh)."""
        return self._refresher.pool

    @property
    def teachers(self) -> list[TeacherRecord]:
        """The current pool."""
        pool = self._refresher.pool
        return pool.records if pool is not None else []

    # -- the training step ---------------------------------------------------------------

    def loss(
        self,
        student_logits: torch.Tensor,
        target: torch.Tensor | None = None,
        inputs: Inputs | None = None,
        *,
        task_loss: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        sample_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``task + λ·KD`` for this step (the task loss alone when KD is off); advances the clock.

        ``target``: class labels (cross-entropy; -100 is ignored), or pass ``task_loss``.
        ``inputs``: what the student got (a tensor, a tuple of args or a dict of kwargs).
        ``mask``: for token logits [B, T, V], the positions to distil (default: target != -100).
        """
        self.accounting.tick()
        task = task_loss if task_loss is not None else task_loss_of(student_logits, target)
        try:
            if inputs is None:
                self._no_inputs()
                return task
            if not self._distils_now(student_logits):
                return task
            pool = self._refresher.pool
            assert pool is not None
            kd = self._kd(pool, student_logits, target, inputs, mask, sample_ids)
            return task if kd is None else combine(task, kd, self._weight())
        finally:
            self.clock_state.step += 1

    def _no_inputs(self) -> None:
        if self.config.distill.weight > 0:
            self._notices.say("no_inputs", NO_INPUTS)

    def _active(self) -> bool:
        try:
            return self._schedule.active(self.clock())
        except ConfigError:
            raise ConfigError(
                f"distill.schedule {str(self._schedule)!r} counts in fractions of the trial "
                "('dur'), but the trial has no planned length: call "
                "kd.plan(epochs=..., steps_per_epoch=...) or kd.plan(steps=...) before training"
            ) from None

    def _distils_now(self, student_logits: torch.Tensor) -> bool:
        if self.config.distill.weight == 0:
            return False
        self._refresher.apply_finished()
        # the schedule first: steps it leaves out touch neither teachers nor the registry
        # ('tr' schedules need the registry's trial count, so they refresh regardless)
        if not (self._always or self._counts_trials or self._active()):
            return False
        self._refresher.maybe_refresh(student_logits)
        pool = self._refresher.pool
        if pool is None or len(pool) < self.config.teachers.min_pool:  # min_pool >= 1
            return False
        return not self._counts_trials or self._active()

    def _weight(self) -> float:
        weight = self.config.distill.weight
        warmup = self.config.distill.warmup
        if warmup is None:
            return weight
        if self._warmup_steps is None:  # converted once: this runs every distilled step
            self._warmup_steps = self.clock_state.span(warmup)
        done = self._warmup_steps
        return weight * min(1.0, (self.step + 1) / done) if done > 0 else weight

    # -- the pool ------------------------------------------------------------------------

    def refresh(self, student_logits: torch.Tensor | None = None) -> list[TeacherRecord]:
        """Re-query the registry for the pool now; teachers already held are not reloaded.

        A registry outage keeps the current pool (possibly none) and is recorded in
        :meth:`stats`; training goes on.
        """
        return self._refresher.refresh(student_logits)

    def sync(self) -> list[TeacherRecord]:
        """Wait for a background refresh in flight and apply it; returns the pool."""
        self._refresher.sync()
        return self.teachers

    def close(self) -> None:
        """Stop the background refresh (a refresh in flight finishes on its own)."""
        self._refresher.close()

    # -- the end of the trial ------------------------------------------------------------

    def register(
        self,
        model: nn.Module | None = None,
        metric: float | None = None,
        *,
        state: str = "complete",
        step: int | None = None,
        final: bool = True,
        tags: Mapping[str, str] | None = None,
    ) -> TeacherRecord | None:
        """Store the model as a teacher and write this trial's lineage; None if it was not.

        Nothing is stored when ``config.register`` does not allow ``state`` (see
        :func:`~recycler.distiller.not_registered`). A registry failure is recorded in
        :meth:`stats` and warned about, never raised: the trial's own result is never lost
        because the registry is away.
        """
        model = model or self.model
        if model is None:
            raise ValueError("register() needs the model (or attach it first)")
        if lifecycle.not_registered(self.config, state) is not None:
            return None
        if final:
            self.close()
            tags = {**self.final_tags(), **(tags or {})}
        rec = self._registrations.register(
            model.state_dict(),
            metric=metric,
            state=state,
            final=final,
            step=self.step if step is None else step,
            epoch=self.epoch,
            signature=self.signature,
            tags=tags,
        )
        if rec is not None:
            self.write_lineage()
        return rec

    def observe(self, metric: float | None) -> None:
        """Record a metric at the current step, without registering anything."""
        self._plan.observe(metric)

    def final_tags(self) -> dict[str, str]:
        """Tags the trial's final teacher carries (when it reached its best teacher, parent)."""
        return self._plan.tags(self.teachers, self.accounting.distilled > 0)

    def report(
        self, metric: float | None = None, model: nn.Module | None = None
    ) -> TeacherRecord | None:
        """A metric at the current step (adapters: at each report; own loops: each evaluation).

        Registers an intermediate teacher when ``register.every`` is due (returned, else None);
        the history tells later trials' ``budget: auto`` when this one reached its best teacher.
        """
        self.observe(metric)
        every = self.config.register.every
        if not lifecycle.checkpoint_due(every, self.clock(), self._registrations.last_checkpoint):
            return None
        return self.register(model, metric, state=lifecycle.RUNNING, final=False)

    def finish(
        self,
        state: lifecycle.TrialState,
        metric: float | None = None,
        *,
        model: nn.Module | None = None,
        why: str | None = None,
    ) -> lifecycle.TrialOutcome:
        """End the trial: register it (when the policy allows), write lineage, account.

        ``why``: the reason the model must not become a teacher (a failure's exception, a
        value that is not a number). A failed trial keeps no teacher: its intermediate
        checkpoints are deleted. Never raises for the registry's sake.
        """
        self.close()
        reason = why or lifecycle.not_registered(self.config, state)
        record: TeacherRecord | None = None
        if reason is None:
            try:
                record = self.register(model, metric, state=state)
            except ValueError as exc:  # no model attached
                reason = str(exc)
                warnings.warn(
                    f"recycler: trial {self.trial_number} not registered: {reason}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                if record is None:
                    reason = "the registry failed (see registry_errors)"
        else:
            self.write_lineage()
        if state == "fail":
            self._registrations.discard_intermediate()
        info: dict[str, Any] = {"study": self.study, "state": state, **self.stats()}
        info["kd"] = info["steps_distilled"] > 0
        info["registered"] = record is not None
        info.update(self._registrations.provenance())
        if reason is not None:
            info["not_registered"] = reason
        if self.config.summary:
            info["summary"] = self._notices.log_summary(info, self._why_off())
        return lifecycle.TrialOutcome(state, info, record, reason)

    def summary(self) -> str:
        """This trial's recycling in one line (what :meth:`finish` logs)."""
        return self._notices.summary(self.stats(), self._why_off())

    def log_summary(self) -> str:
        """Log :meth:`summary` on the ``recycler`` logger (INFO) and return it."""
        return self._notices.log_summary(self.stats(), self._why_off())

    def notice(self, key: str, message: str) -> None:
        """Warn once per trial under ``key`` (adapters: what the user must change)."""
        self._notices.say(key, message)

    def _why_off(self) -> str | None:
        """Why no step distilled (None when some did)."""
        if self.accounting.distilled:
            return None
        return why_off(
            weight=self.config.distill.weight,
            said=self._notices.said,
            errors=self.accounting.errors,
            pool=self._refresher.pool,
            steps=self.step,
            studies=self._refresher.studies(),
        )

    def write_lineage(self) -> None:
        """Record which teachers this trial learned from, and its init parent (idempotent)."""
        self._registrations.write_lineage(self.config.distill.weight, self._plan.init_parent)

    @property
    def overhead(self) -> float:
        """Teacher-forward time as a fraction of the rest of the step time."""
        return self.accounting.overhead

    def stats(self) -> dict[str, Any]:
        """KD accounting for this trial (JSON-serialisable)."""
        pool = self._refresher.pool
        out: dict[str, Any] = {"pool": [r.id for r in self.teachers], "steps": self.step}
        out.update(self.accounting.stats())
        out.update(self._plan.info())
        if pool is not None and pool.skipped:
            out["skipped"] = {str(k): v for k, v in pool.skipped.items()}
        out.update(self._kd.stats())
        out.update(self._registrations.stats())
        if "registry_errors" in out:  # after the rest, as before
            out["registry_errors"] = out.pop("registry_errors")
        return out

    # -- resume --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed trial needs to go on as if never interrupted (JSON-safe).

        The clock, the samplers' RNG states, per-teacher usage, steps distilled, teacher
        seconds and this trial's intermediate teachers. Give it to :meth:`load_state_dict`.

        Example:
            >>> saved = kd.state_dict()  # doctest: +SKIP
            >>> twin.load_state_dict(saved)  # doctest: +SKIP
        """
        return {
            "version": STATE_VERSION,
            "clock": self.clock_state.state_dict(),
            "accounting": self.accounting.state_dict(),
            "sampler": rng_json(self._kd.sampler.state()),
            "policy_rng": rng_json(self._rng.getstate()),
            **self._registrations.state_dict(),
            "signature": self.signature,
            "plan": self._plan.state_dict(),
            "outgrown": self._kd.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; a state of another version is refused."""
        check_state(state)
        self.clock_state.load_state_dict(state["clock"])
        self.accounting.load_state_dict(state["accounting"])
        self._kd.sampler.set_state(rng_tuple(state["sampler"]))
        self._rng.setstate(rng_tuple(state["policy_rng"]))
        self._registrations.load_state_dict(state)
        if isinstance(state.get("plan"), Mapping):
            self._plan.load_state_dict(dict(state["plan"]))
        self._kd.load_state_dict(state.get("outgrown"))
        if self._refresher.signature is None and isinstance(state.get("signature"), str):
            self._refresher.signature = state["signature"]
        self._refresher.replanned()
        self._warmup_steps = None
