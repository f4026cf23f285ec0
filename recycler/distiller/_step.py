"""One distilled step: the sampled teachers' logits (online or cached), the KD term, the gate."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from ..config import RecycleConfig
from ..errors import RecyclerError
from ..losses import KDTerm
from ..sampling import StepSampler
from ..teachers import Inputs, TeacherPool
from ._accounting import Accounting
from ._cache import LogitCache, Lookup, cached_logits, check_ids
from ._outgrown import Outgrown


class KDStep:
    """The KD term of a step with a pool: ``D(student, mean of sampled teachers)``.

    Returns None when the quality gate rejects the step's teachers (their logits not finite):
    those teachers leave the pool and the step trains on the task loss alone.

    Example:
        >>> step = KDStep(config, sampler, accounting)  # doctest: +SKIP
        >>> kd = step(pool, student_logits, target, inputs)  # doctest: +SKIP
    """

    def __init__(self, config: RecycleConfig, sampler: StepSampler, accounting: Accounting):
        distill = config.distill
        self.sampler = sampler
        self.accounting = accounting
        self.only_correct = distill.only_correct
        self.gate = config.teachers.quality_gate
        self.outgrown = Outgrown() if config.teachers.retire else None
        self._pruned: TeacherPool | None = None  # the pool the retired were last taken out of
        self.term = KDTerm.from_config(distill)
        self.cache = LogitCache(distill.cache_max_bytes) if distill.cache else None
        # the cache keeps a step's teacher rows as the KD term compares them (only_correct
        # needs the raw ones)
        self._prepare = self.cache is not None and not distill.only_correct

    def __call__(
        self,
        pool: TeacherPool,
        student_logits: torch.Tensor,
        target: torch.Tensor | None,
        inputs: Inputs,
        mask: torch.Tensor | None = None,
        sample_ids: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        if pool is not self._pruned:  # a new pool (a resumed trial's): the retired leave it
            self.retire(pool)
            if not len(pool):
                return None
        indices = self.sampler.sample(len(pool))
        ids = pool.ids(indices)
        if self.only_correct and target is None:
            teacher_correct(student_logits, target, mask)  # the user's error: raises, says how
        if mask is None and target is not None and student_logits.dim() == 3:
            mask = target != -100
        labelled = mask  # the rows with a label (only_correct narrows ``mask`` below)
        try:  # the teachers' side: a forward that raises (a shape mismatch) drops the teacher
            if pool.unchecked and pool.check_outputs(indices, inputs, student_logits):
                return None  # a teacher without a recorded signature did not fit: it left
            teacher, prepared, finite = self._teacher_logits(
                pool, indices, inputs, student_logits, sample_ids
            )
            if self.only_correct:
                mask = teacher_correct(teacher, target, mask)
            kd = self.term(student_logits, teacher, mask, prepared=prepared)
        except RecyclerError:
            raise  # the user's configuration (e.g. the cache without sample ids): say so
        except Exception as exc:
            _drop_failing(pool, ids, inputs, student_logits, exc)
            return None  # this step trains on the task loss alone
        # the quality gate: one scalar check, unless the rows were checked when cached
        if self.gate and not finite and not math.isfinite(kd.detach().item()):
            _drop_non_finite(pool, indices, inputs)
            return None
        self.accounting.distilled_with(pool.ids(indices))
        if self.outgrown is not None:
            self.outgrown.observe(tuple(ids), student_logits, teacher, target, labelled)
            if self.outgrown.judge():
                self.retire(pool)
        return kd

    def stats(self) -> dict[str, Any]:
        """The teachers retired (id -> why) and the cache's counts, when there are any."""
        out: dict[str, Any] = {}
        if self.outgrown is not None and self.outgrown.retired:
            out["retired"] = {str(k): v for k, v in self.outgrown.retired.items()}
        if self.cache is not None:
            out["cache"] = {"hits": self.cache.hits, "misses": self.cache.misses}
        return out

    def state_dict(self) -> dict[str, Any] | None:
        """What a resumed trial needs to retire the same teachers at the same steps."""
        return self.outgrown.state_dict() if self.outgrown is not None else None

    def load_state_dict(self, state: Any) -> None:
        """Back to :meth:`state_dict` (None or another shape: nothing to restore)."""
        if self.outgrown is not None and isinstance(state, Mapping):
            self.outgrown.load_state_dict(state)

    def retire(self, pool: TeacherPool) -> None:
        """Take the teachers the student outgrew out of ``pool`` (a refresh never brings them
        back: the pool holds them out)."""
        self._pruned = pool
        if self.outgrown is None or not self.outgrown.retired:
            return
        for rec in pool.records:
            why = self.outgrown.retired.get(rec.id)
            if why is not None:
                pool.retire(rec.id, why)

    def _teacher_logits(
        self,
        pool: TeacherPool,
        indices: list[int],
        inputs: Inputs,
        student_logits: torch.Tensor,
        sample_ids: torch.Tensor | None,
    ) -> Lookup:
        start = time.perf_counter()
        if self.cache is None:
            out = Lookup(pool.logits(indices, inputs), prepared=False, finite=False)
        else:
            ids, largest = check_ids(sample_ids, student_logits.shape[0])
            term = self.term
            prepare = (lambda t: term.target(t, student_logits)) if self._prepare else None
            if ids.device != student_logits.device:
                ids = ids.to(student_logits.device)
            out = cached_logits(self.cache, pool, indices, inputs, ids, largest, prepare)
        self.accounting.teacher_s += time.perf_counter() - start
        return out


def _drop_failing(
    pool: TeacherPool,
    ids: list[int],
    inputs: Inputs,
    student_logits: torch.Tensor,
    exc: Exception,
) -> None:
    """A step's teachers failed (``exc``): drop each one that fails alone, or whose logits
    differ in shape from the student's; if none does, drop them all (the step cannot tell)."""
    where = {rec.id: n for n, rec in enumerate(pool.records)}  # positions now (some may be gone)
    ids = [tid for tid in ids if tid in where]
    culprits: dict[int, str] = {}
    for tid in ids:
        i = where[tid]
        try:
            (out,) = pool.each_logits([i], inputs)
        except Exception as own:
            culprits[tid] = f"its forward raised {_brief(own)}"
            continue
        if out.shape != student_logits.shape:
            culprits[tid] = (
                f"its logits have shape {tuple(out.shape)}, the student's "
                f"{tuple(student_logits.shape)}"
            )
    if not culprits:
        culprits = {tid: f"the KD step failed with it: {_brief(exc)}" for tid in ids}
    for tid, why in culprits.items():
        pool.drop(tid, why)


def _brief(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _drop_non_finite(pool: TeacherPool, indices: list[int], inputs: Inputs) -> None:
    """The quality gate on logits: drop each sampled teacher whose logits are not finite."""
    for tid, logits in zip(pool.ids(indices), pool.each_logits(indices, inputs), strict=True):
        if not bool(torch.isfinite(logits).all()):
            pool.drop(tid, "its logits are not finite (quality gate)")


def teacher_correct(
    teacher: torch.Tensor, target: torch.Tensor | None, mask: torch.Tensor | None
) -> torch.Tensor:
    """``mask`` narrowed to the rows whose (averaged) teacher argmax equals the label."""
    if target is None:
        raise ValueError("distill.only_correct needs the target labels: pass loss(logits, target)")
    correct = teacher.argmax(dim=-1) == target
    return correct if mask is None else correct & mask
