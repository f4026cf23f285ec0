"""Distiller: the per-trial runtime every adapter uses (loss, clock, refresh, accounting)."""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
import zlib
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._storage import Direction, Registry, StorageError, TeacherQuery, TeacherRecord
from ..config import RecycleConfig
from ..losses import KDTerm, combine
from ..sampling import StepSampler, eligible, select_pool
from ..schedule import ALWAYS
from ..teachers import BuildFn, Inputs, TeacherPool
from ..time import Clock, Time, TimeUnit
from ._cache import LogitCache, Lookup, cached_logits, check_ids

log = logging.getLogger(__name__)
_AUTOCAST = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Distiller:
    """Knowledge distillation from earlier trials, for one trial.

    Call :meth:`loss` once per training step; it returns ``task + λ·KD`` when the schedule
    distils this step and a pool exists, else the task loss alone (no teacher runs then).
    Call :meth:`register` when the trial ends to make the model a teacher for later trials.

    Example:
        >>> kd = Distiller(study="lr-sweep", trial_number=3, model=net)  # doctest: +SKIP
        >>> kd.plan(epochs=60, steps_per_epoch=len(loader))  # doctest: +SKIP
        >>> for x, y in loader:  # doctest: +SKIP
        ...     loss = kd.loss(net(x), y, x)
        ...     loss.backward(); opt.step(); opt.zero_grad()
        >>> kd.register(net, metric=0.71)  # doctest: +SKIP
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
    ) -> None:
        self.config = config or RecycleConfig()
        self.study = self.config.study or study
        self.trial_number = trial_number
        self.trial_id = trial_id
        self.framework = framework
        self.params = dict(params or {})
        self.direction = Direction(direction)
        self.metric_name = metric_name
        self.registry = registry or Registry(self.config.registry, self.config.blobs)
        self._signature = output_signature
        self._classes: int | None = None
        self._model = model
        self._build = build
        self._pool: TeacherPool | None = None
        seed = self.config.teachers.seed
        if seed is None:
            seed = zlib.crc32(f"{self.study}\x00{trial_number}".encode())
        self._rng = random.Random(seed)
        self._sampler = StepSampler(self.config.teachers.per_step, seed=seed)
        self._schedule = self.config.distill.schedule
        self._always = self._schedule == ALWAYS
        self._counts_trials = TimeUnit.TRIAL in self._schedule.units
        distill = self.config.distill
        self._term = KDTerm(distill.loss, distill.temperature, distill.standardize)
        self._cache = LogitCache(distill.cache_max_bytes) if distill.cache else None
        # the cache keeps a step's teacher rows as the KD term compares them (only_correct
        # needs the raw ones)
        self._prepare = self._cache is not None and not distill.only_correct
        # the clock
        self._step = 0
        self._epoch: int | None = None
        self._steps_per_epoch: int | None = None
        self._planned_epochs: int | None = None
        self._planned_steps: int | None = None
        self._finished_trials = 0
        self._last_refresh_step: int | None = None
        self._stamp: tuple[int, int, int] | None = None  # Registry.stamp at the last selection
        self._last_refresh_epoch = 0
        self._refresh_steps: float | None = None
        self._warmup_steps: float | None = None
        # accounting
        self._distilled = 0
        self._teacher_s = 0.0
        self._step_s = 0.0
        self._last_call: float | None = None
        self._used: dict[int, int] = {}
        self._errors: list[str] = []
        self._registered: TeacherRecord | None = None
        # pool refreshes after the first run in a background thread: training never waits
        self._background = background_refresh
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[tuple[list[TeacherRecord], dict[int, nn.Module | str]]] | None = None

    # -- setup ---------------------------------------------------------------------------

    def attach(self, model: nn.Module, build: BuildFn | None = None) -> Distiller:
        """The student model (its architecture is the default teacher architecture)."""
        self._model = model
        if build is not None:
            self._build = build
        return self

    def plan(
        self,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        steps: int | None = None,
    ) -> Distiller:
        """The trial's planned length, for epoch-based schedules and ``dur`` fractions."""
        self._planned_epochs = epochs
        self._steps_per_epoch = steps_per_epoch
        if steps is None and epochs is not None and steps_per_epoch is not None:
            steps = epochs * steps_per_epoch
        self._planned_steps = steps
        self._refresh_steps = self._warmup_steps = None
        return self

    def resume_at(self, step: int, epoch: int | None = None) -> None:
        """Put the clock at ``step`` (and ``epoch``) for a trial resumed from a checkpoint."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self._step = step
        if epoch is not None:
            self._epoch = epoch

    @property
    def signature(self) -> str | None:
        """The output signature teachers must have (known after the first step)."""
        return self._signature

    def set_epoch(self, epoch: int) -> None:
        """Tell the clock the current epoch (when steps per epoch are not fixed)."""
        self._epoch = epoch

    @property
    def step(self) -> int:
        """Training steps taken so far (calls to :meth:`loss`)."""
        return self._step

    @property
    def epoch(self) -> int:
        """The current epoch (0-based)."""
        if self._epoch is not None:
            return self._epoch
        return self._step // self._steps_per_epoch if self._steps_per_epoch else 0

    def clock(self) -> Clock:
        """The schedule's view of where this trial is."""
        return Clock(
            step=self._step,
            epoch=self.epoch,
            steps_per_epoch=self._steps_per_epoch,
            planned_steps=self._planned_steps,
            planned_epochs=self._planned_epochs,
            finished_trials=self._finished_trials,
        )

    @property
    def teachers(self) -> list[TeacherRecord]:
        """The current pool."""
        return self._pool.records if self._pool is not None else []

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
        now = time.perf_counter()
        if self._last_call is not None:
            self._step_s += now - self._last_call
        self._last_call = now
        task = task_loss if task_loss is not None else self._task_loss(student_logits, target)
        try:
            if inputs is None or not self._distils_now(student_logits):
                return task
            pool = self._pool
            assert pool is not None
            indices = self._sampler.sample(len(pool))
            teacher, prepared, finite = self._teacher_logits(
                pool, indices, inputs, student_logits, sample_ids
            )
            if mask is None and target is not None and student_logits.dim() == 3:
                mask = target != -100
            if self.config.distill.only_correct:
                mask = _teacher_correct(teacher, target, mask)
            kd = self._term(student_logits, teacher, mask, prepared=prepared)
            # the quality gate: one scalar check, unless the rows were checked when cached
            gate = self.config.teachers.quality_gate and not finite
            if gate and not math.isfinite(kd.detach().item()):
                self._drop_non_finite(pool, indices, inputs)
                return task  # no KD this step
            for tid in pool.ids(indices):
                self._used[tid] = self._used.get(tid, 0) + 1
            self._distilled += 1
            return combine(task, kd, self._weight())
        finally:
            self._step += 1

    def _task_loss(self, logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is None:
            raise ValueError("loss() needs the target labels or task_loss=<your task loss>")
        if logits.dim() == 2:  # no reshape: one autograd node fewer per step
            return F.cross_entropy(logits, target)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    def _distils_now(self, student_logits: torch.Tensor) -> bool:
        if self.config.distill.weight == 0:
            return False
        if self._pending is not None and self._pending.done():
            self._apply_pending()
        # the schedule first: steps it leaves out touch neither teachers nor the registry
        # ('tr' schedules need the registry's trial count, so they refresh regardless)
        if not (self._always or self._counts_trials or self._schedule.active(self.clock())):
            return False
        if self._due_refresh():
            if self._pool is None or not self._background:
                self.refresh(student_logits)
            elif self._pending is None:
                self._refresh_in_background()
        pool = self._pool
        if pool is None or len(pool) < self.config.teachers.min_pool:  # min_pool >= 1
            return False
        return not self._counts_trials or self._schedule.active(self.clock())

    def _teacher_logits(
        self,
        pool: TeacherPool,
        indices: list[int],
        inputs: Inputs,
        student_logits: torch.Tensor,
        sample_ids: torch.Tensor | None,
    ) -> Lookup:
        """The step's teacher logits (online, or through the cache)."""
        start = time.perf_counter()
        if self._cache is None:
            out = Lookup(pool.logits(indices, inputs), prepared=False, finite=False)
        else:
            out = self._cached_logits(pool, indices, inputs, student_logits, sample_ids)
        self._teacher_s += time.perf_counter() - start
        return out

    def _drop_non_finite(self, pool: TeacherPool, indices: list[int], inputs: Inputs) -> None:
        """The quality gate on logits: drop each sampled teacher whose logits are not finite.

        Runs only when a step's KD term came out non-finite (one scalar check per step).
        """
        for tid, logits in zip(pool.ids(indices), pool.each_logits(indices, inputs), strict=True):
            if not bool(torch.isfinite(logits).all()):
                pool.drop(tid, "its logits are not finite (quality gate)")

    def _cached_logits(
        self,
        pool: TeacherPool,
        indices: list[int],
        inputs: Inputs,
        student_logits: torch.Tensor,
        sample_ids: torch.Tensor | None,
    ) -> Lookup:
        assert self._cache is not None
        ids, largest = check_ids(sample_ids, student_logits.shape[0])
        prepare = (lambda t: self._term.target(t, student_logits)) if self._prepare else None
        if ids.device != student_logits.device:
            ids = ids.to(student_logits.device)
        return cached_logits(self._cache, pool, indices, inputs, ids, largest, prepare)

    def _weight(self) -> float:
        weight = self.config.distill.weight
        warmup = self.config.distill.warmup
        if warmup is None:
            return weight
        if self._warmup_steps is None:  # converted once: this runs every distilled step
            self._warmup_steps = self._span(warmup)
        done = self._warmup_steps
        return weight * min(1.0, (self._step + 1) / done) if done > 0 else weight

    def _span(self, t: Time) -> float:
        """How many steps a time span is on this trial's clock."""
        return float(self.clock().steps(t))

    # -- the pool ------------------------------------------------------------------------

    def _due_refresh(self) -> bool:
        if self._last_refresh_step is None:
            return True
        every = self.config.teachers.refresh
        if every is None:
            return False
        if every.unit is TimeUnit.EPOCH and self._steps_per_epoch is None:
            return self.epoch - self._last_refresh_epoch >= every.value
        if self._refresh_steps is None:  # converted once: this runs every step
            self._refresh_steps = max(1.0, self._span(every))
        return self._step - self._last_refresh_step >= self._refresh_steps

    def refresh(self, student_logits: torch.Tensor | None = None) -> list[TeacherRecord]:
        """Re-query the registry for the pool now; teachers already held are not reloaded.

        A registry outage keeps the current pool (possibly none) and is recorded in
        :meth:`stats`; training goes on.
        """
        self._mark_refresh(student_logits)
        if self._pool is None:
            self._pool = self._new_pool(student_logits)
        try:
            if self._unchanged():
                return self._pool.records
            chosen = self._select()
        except StorageError as exc:
            self._stamp = None  # query again next time
            self._note_error(f"pool refresh failed: {exc}")
            return self.teachers
        self._pool.set_pool(chosen)
        return self._pool.records

    def sync(self) -> list[TeacherRecord]:
        """Wait for a background refresh in flight and apply it; returns the pool."""
        if self._pending is not None:
            self._pending.exception()  # waits; errors are handled when applied
            self._apply_pending()
        return self.teachers

    def close(self) -> None:
        """Stop the background refresh (a refresh in flight finishes on its own)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._pending = None

    def _mark_refresh(self, student_logits: torch.Tensor | None) -> None:
        self._last_refresh_step = self._step
        self._last_refresh_epoch = self.epoch
        if student_logits is not None:
            self._classes = int(student_logits.shape[-1])
            if self._signature is None:
                self._signature = output_signature(student_logits)

    def _refresh_in_background(self) -> None:
        """Query now (about a millisecond); load new teachers' weights in a background thread.

        Only the slow part, reading and building new teachers, leaves the training thread: a
        pure-Python query in a thread would hold the GIL against the training loop.
        """
        pool = self._pool
        assert pool is not None
        self._mark_refresh(None)
        try:
            if self._unchanged():
                return
            chosen = self._select()
        except StorageError as exc:
            self._stamp = None  # query again next time
            self._note_error(f"pool refresh failed: {exc}")
            return
        new = [r for r in chosen if r.id not in pool.held]
        if not new:
            pool.set_pool(chosen)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="recycler-refresh")
        self._pending = self._executor.submit(lambda: (chosen, pool.prepare(new)))

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None and self._pool is not None
        chosen, prepared = pending.result()
        self._pool.set_pool(chosen, prepared)

    def _studies(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.study, *self.config.teachers.studies)))

    def _unchanged(self) -> bool:
        """Whether the registry's READY teachers of the pool's studies are as last selected.

        One aggregate query (:meth:`Registry.stamp`); a refresh that finds nothing changed
        skips the full query and the pool selection.
        """
        stamp = self.registry.stamp(self._studies())
        if stamp == self._stamp:
            return True
        self._stamp = stamp
        return False

    def _select(self) -> list[TeacherRecord]:
        """Query the registry and pick the pool (no change to the pool itself)."""
        records = self._candidates()
        if self._counts_trials:
            self._finished_trials = self.registry.count_finished_trials(self.study)
        cfg = self.config.teachers
        kept, dropped = eligible(
            records,
            include_pruned=cfg.include_pruned,
            include_intermediate=cfg.include_intermediate,
            quality_gate=cfg.quality_gate,
            chance_metric=self._chance(),
        )
        for rec, why in dropped:
            log.info("teacher %s left out of the pool: %s", rec.id, why)
        return select_pool(kept, policy=cfg.policy, k=cfg.pool, rng=self._rng)

    def _candidates(self) -> list[TeacherRecord]:
        found: list[TeacherRecord] = []
        for study in self._studies():
            found += self.registry.query(
                TeacherQuery(
                    study=study,
                    output_signature=self._signature,
                    exclude_trials=(self.trial_number,) if study == self.study else (),
                )
            )
        return found

    def _new_pool(self, student_logits: torch.Tensor | None) -> TeacherPool:
        if self._model is None and self._build is None:
            raise ValueError("attach the student model (kd.attach(model)) before training")
        cfg = self.config.teachers
        pool = TeacherPool(
            self.registry,
            template=self._model,
            build=self._build,
            max_on_device=cfg.max_on_device,
            autocast=_AUTOCAST.get(cfg.autocast) if cfg.autocast else None,
            fused=cfg.fused,
        )
        device = student_logits.device if student_logits is not None else None
        return pool.to(device) if device is not None else pool

    def _chance(self) -> float | None:
        cfg = self.config.teachers
        if cfg.chance_metric is not None or not cfg.quality_gate:
            return cfg.chance_metric
        name = (self.metric_name or "").lower()
        if self._classes and "acc" in name and self.direction is Direction.MAXIMIZE:
            return 1.0 / self._classes  # accuracy at chance level
        return None

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
        """Store the model as a teacher and write this trial's lineage; None if that failed.

        A registry failure is recorded in :meth:`stats` and warned about, never raised:
        the trial's own result is never lost because the registry is away.
        """
        model = model or self._model
        if model is None:
            raise ValueError("register() needs the model (or attach it first)")
        self.close()
        try:
            rec = self.registry.register(
                model.state_dict(),
                study=self.study,
                trial_number=self.trial_number,
                trial_id=self.trial_id,
                framework=self.framework,
                params=_jsonable(self.params),
                metric_name=self.metric_name,
                metric_value=metric,
                direction=self.direction,
                step=self._step if step is None else step,
                epoch=self.epoch,
                final=final,
                trial_state=state,
                output_signature=self._signature or "",
                tags=tags,
            )
        except StorageError as exc:
            self._note_error(f"registering the model failed: {exc}")
            return None
        self._registered = rec
        self.write_lineage()
        return rec

    def write_lineage(self) -> None:
        """Record which teachers this trial learned from (idempotent)."""
        try:
            for tid, steps in self._used.items():
                self.registry.add_lineage(
                    self.study,
                    self.trial_number,
                    tid,
                    steps_distilled=steps,
                    weight=self.config.distill.weight,
                    overhead=self.overhead,
                )
        except StorageError as exc:
            self._note_error(f"writing lineage failed: {exc}")

    @property
    def overhead(self) -> float:
        """Teacher-forward time as a fraction of the rest of the step time."""
        rest = self._step_s - self._teacher_s
        return self._teacher_s / rest if rest > 0 else 0.0

    def stats(self) -> dict[str, Any]:
        """KD accounting for this trial (JSON-serialisable)."""
        out: dict[str, Any] = {
            "pool": [r.id for r in self.teachers],
            "teachers_used": sorted(self._used),
            "steps": self._step,
            "steps_distilled": self._distilled,
            "teacher_forward_s": round(self._teacher_s, 6),
            "step_s": round(self._step_s, 6),
            "overhead": round(self.overhead, 6),
        }
        if self._pool is not None and self._pool.skipped:
            out["skipped"] = {str(k): v for k, v in self._pool.skipped.items()}
        if self._cache is not None:
            out["cache"] = {"hits": self._cache.hits, "misses": self._cache.misses}
        if self._registered is not None:
            out["teacher_id"] = self._registered.id
        if self._errors:
            out["registry_errors"] = list(self._errors)
        return out

    def _note_error(self, message: str) -> None:
        if message not in self._errors:
            warnings.warn(f"recycler: {message}; training goes on", RuntimeWarning, stacklevel=3)
            self._errors.append(message)


def _teacher_correct(
    teacher: torch.Tensor, target: torch.Tensor | None, mask: torch.Tensor | None
) -> torch.Tensor:
    """``mask`` narrowed to the rows whose (averaged) teacher argmax equals the label."""
    if target is None:
        raise ValueError("distill.only_correct needs the target labels: pass loss(logits, target)")
    correct = teacher.argmax(dim=-1) == target
    return correct if mask is None else correct & mask


def output_signature(logits: torch.Tensor) -> str:
    """What teachers must output to teach this student: rank and size of the last dim."""
    return f"logits/{logits.dim()}d/{logits.shape[-1]}"


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        out[str(key)] = (
            value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        )
    return out
