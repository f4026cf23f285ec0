"""The trial's teacher pool: which teachers, refreshed from the registry while training runs."""

from __future__ import annotations

import logging
import random
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import nn

from .._storage import Direction, Registry, StorageError, TeacherQuery, TeacherRecord
from ..config import RecycleConfig
from ..sampling import eligible, select_pool
from ..teachers import BuildFn, TeacherPool
from ..time import TimeUnit
from ._accounting import Accounting
from ._clock import TrialClock
from ._identity import TrialIdentity

log = logging.getLogger(__name__)
_AUTOCAST = {"float16": torch.float16, "bfloat16": torch.bfloat16}

Prepared = tuple[list[TeacherRecord], dict[int, nn.Module | str]]


def output_signature(logits: torch.Tensor) -> str:
    """What teachers must output to teach this student: rank and size of the last dim."""
    return f"logits/{logits.dim()}d/{logits.shape[-1]}"


class PoolRefresher:
    """Queries the registry for the pool and loads new teachers, in the background after the
    first time (training never waits for a refresh after the first).

    A refresh that finds the registry unchanged (one aggregate query, ``Registry.stamp``)
    skips the full query. A registry outage keeps the current pool and is recorded in the
    accounting.

    Example:
        >>> refresher = PoolRefresher(cfg, identity, registry, clock, acc, rng)  # doctest: +SKIP
        >>> refresher.refresh(student_logits)  # doctest: +SKIP
    """

    def __init__(
        self,
        config: RecycleConfig,
        identity: TrialIdentity,
        registry: Registry,
        clock: TrialClock,
        accounting: Accounting,
        rng: random.Random,
        *,
        background: bool = True,
        signature: str | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.registry = registry
        self.clock = clock
        self.accounting = accounting
        self.rng = rng
        self.signature = signature
        self.model: nn.Module | None = None
        self.build: BuildFn | None = None
        self.pool: TeacherPool | None = None
        self.classes: int | None = None
        self.rank: int | None = None  # of the student's logits: 2 for classes, 3 for tokens
        self._background = background
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[Prepared] | None = None
        self._last_step: int | None = None
        self._last_epoch = 0
        self._every_steps: float | None = None
        self._stamp: tuple[int, int, int] | None = None  # Registry.stamp at the last selection
        self._counts_trials = TimeUnit.TRIAL in config.distill.schedule.units

    def replanned(self) -> None:
        """The plan changed: spans in steps are converted again."""
        self._every_steps = None

    def apply_finished(self) -> None:
        """Apply a background refresh that has finished (cheap: runs every step)."""
        if self._pending is not None and self._pending.done():
            self._apply_pending()

    def maybe_refresh(self, student_logits: torch.Tensor) -> None:
        """Refresh when one is due (in the background once a pool exists)."""
        if not self._due():
            return
        if self.pool is None or not self._background:
            self.refresh(student_logits)
        elif self._pending is None:
            self._refresh_in_background()

    def _due(self) -> bool:
        if self._last_step is None:
            return True
        every = self.config.teachers.refresh
        if every is None:
            return False
        clock = self.clock
        if every.unit is TimeUnit.EPOCH and clock.steps_per_epoch is None:
            return clock.epoch - self._last_epoch >= every.value
        if self._every_steps is None:  # converted once: this runs every step
            self._every_steps = max(1.0, clock.span(every))
        return clock.step - self._last_step >= self._every_steps

    def refresh(self, student_logits: torch.Tensor | None = None) -> list[TeacherRecord]:
        """Re-query the registry for the pool now; teachers already held are not reloaded."""
        self._mark(student_logits)
        if self.pool is None:
            self.pool = self._new_pool(student_logits)
        try:
            if self._unchanged():
                return self.pool.records
            chosen = self._select()
        except StorageError as exc:
            self._failed(exc)
            return self.pool.records
        self.pool.set_pool(chosen)
        return self.pool.records

    def sync(self) -> None:
        """Wait for a background refresh in flight and apply it."""
        if self._pending is not None:
            self._pending.exception()  # waits; errors are handled when applied
            self._apply_pending()

    def close(self) -> None:
        """Stop the background refresh (a refresh in flight finishes on its own)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._pending = None

    def _failed(self, exc: StorageError) -> None:
        self._stamp = None  # query again next time
        self.accounting.note_error(f"pool refresh failed: {exc}")

    def _mark(self, student_logits: torch.Tensor | None) -> None:
        self._last_step = self.clock.step
        self._last_epoch = self.clock.epoch
        if student_logits is not None:
            self.classes = int(student_logits.shape[-1])
            self.rank = student_logits.dim()
            if self.signature is None:
                self.signature = output_signature(student_logits)

    def _refresh_in_background(self) -> None:
        """Query now (about a millisecond); load new teachers' weights in a background thread.

        Only the slow part, reading and building new teachers, leaves the training thread: a
        pure-Python query in a thread would hold the GIL against the training loop.
        """
        pool = self.pool
        assert pool is not None
        self._mark(None)
        try:
            if self._unchanged():
                return
            chosen = self._select()
        except StorageError as exc:
            self._failed(exc)
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
        assert pending is not None and self.pool is not None
        chosen, prepared = pending.result()
        self.pool.set_pool(chosen, prepared)

    def studies(self) -> tuple[str, ...]:
        """The studies whose teachers may join the pool (the trial's own first)."""
        return tuple(dict.fromkeys((self.identity.study, *self.config.teachers.studies)))

    def _unchanged(self) -> bool:
        """Whether the registry's READY teachers of the pool's studies are as last selected."""
        stamp = self.registry.stamp(self.studies())
        if stamp == self._stamp and not (self.pool is not None and self.pool.retry):
            return True  # (teachers left out while the registry was busy: select again)
        self._stamp = stamp
        return False

    def plan_pool(self) -> tuple[list[TeacherRecord], list[TeacherRecord]]:
        """The pool a refresh would pick now, and every candidate record (for the plan).

        Loads nothing. A registry outage gives empty lists and is recorded.
        """
        try:
            records = self._candidates()
            return self._select(records), records
        except StorageError as exc:
            self._failed(exc)
            return [], []

    def _select(self, records: list[TeacherRecord] | None = None) -> list[TeacherRecord]:
        """Query the registry and pick the pool (no change to the pool itself)."""
        if records is None:
            records = self._candidates()
        if self._counts_trials:
            self.clock.finished_trials = self.registry.count_finished_trials(self.identity.study)
        cfg = self.config.teachers
        chance, min_gain = self._chance()
        kept, dropped = eligible(
            records,
            include_pruned=cfg.include_pruned,
            include_intermediate=cfg.include_intermediate,
            quality_gate=cfg.quality_gate,
            chance_metric=chance,
            min_skill=cfg.min_skill,
            min_gain=min_gain,
        )
        for rec, why in dropped:
            log.info("teacher %s left out of the pool: %s", rec.id, why)
        return select_pool(kept, policy=cfg.policy, k=cfg.pool, rng=self.rng)

    def _candidates(self) -> list[TeacherRecord]:
        found: list[TeacherRecord] = []
        me = self.identity
        # teachers registered without a signature (outside a KD loop) are checked when first run
        signatures = (self.signature, "") if self.signature else None
        for study in self.studies():
            found += self.registry.query(TeacherQuery(study=study, output_signature=signatures))
        return [rec for rec in found if not me.owns(rec)]

    def _new_pool(self, student_logits: torch.Tensor | None) -> TeacherPool:
        if self.model is None and self.build is None:
            raise ValueError("attach the student model (kd.attach(model)) before training")
        cfg = self.config.teachers
        pool = TeacherPool(
            self.registry,
            template=self.model,
            build=self.build,
            max_on_device=cfg.max_on_device,
            autocast=_AUTOCAST.get(cfg.autocast) if cfg.autocast else None,
            fused=cfg.fused,
        )
        device = student_logits.device if student_logits is not None else None
        return pool.to(device) if device is not None else pool

    def _chance(self) -> tuple[float | None, float]:
        """The metric at chance, and the least gain over it that is not a diverged model.

        An accuracy on C classes (class logits): chance 1/C, and a teacher must be a tenth of
        the way from chance to perfect (0.19 on 10 classes). A token accuracy on a vocabulary
        of V (token logits, e.g. masked LM, whose good values are small): chance 1/V, and only
        the gate relative to the best teacher (``min_skill``) applies, which keeps out a
        diverged run stuck at the unigram plateau. A chance metric given in the config: any
        gain.
        """
        cfg = self.config.teachers
        if cfg.chance_metric is not None or not cfg.quality_gate:
            return cfg.chance_metric, 0.0
        me = self.identity
        name = (me.metric_name or "").lower()
        if self.classes and "acc" in name and me.direction is Direction.MAXIMIZE:
            chance = 1.0 / self.classes
            return chance, 0.1 * (1.0 - chance) if self.rank == 2 else 0.0
        return None, 0.0
