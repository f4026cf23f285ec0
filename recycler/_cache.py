"""Teacher-logit cache: each teacher's logits per stable sample id, computed once and reused."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .errors import RecyclerError

if TYPE_CHECKING:
    from .teachers import Inputs, TeacherPool


class LogitCache:
    """Dense per-teacher tables of logits indexed by sample id, under a memory bound.

    Exact by construction for deterministic teacher inputs: a cached row is the very tensor
    the online path computed for that sample. The first ``verify_hits`` cache hits per teacher
    are recomputed online and compared, so random augmentation (inputs that change between
    epochs) is caught and refused instead of silently distilling from stale logits.

    Example:
        >>> cache = LogitCache(max_bytes=1 << 20)
        >>> ids = torch.tensor([0, 2])
        >>> cache.store(7, ids, torch.ones(2, 3))
        >>> cache.lookup(7, ids).shape
        torch.Size([2, 3])
    """

    def __init__(self, max_bytes: int, verify_hits: int = 2) -> None:
        self.max_bytes = max_bytes
        self.verify_hits = verify_hits
        self._rows: dict[int, torch.Tensor] = {}
        self._filled: dict[int, torch.Tensor] = {}
        # per teacher: every row below this index is filled (a hit there needs no mask check)
        self._dense: dict[int, int] = {}
        self._stored: set[int] = set()  # teachers with rows stored since their prefix was taken
        self._verified: dict[int, int] = {}
        self.full = False
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache tables."""
        return sum(t.element_size() * t.nelement() for t in self._rows.values())

    def lookup(
        self, teacher_id: int, ids: torch.Tensor, largest: int | None = None
    ) -> torch.Tensor | None:
        """The cached logits of these samples, or None if any of them is missing.

        ``largest``: ``ids.max()`` if the caller knows it (saves a reduction per step).
        """
        rows = self._rows.get(teacher_id)
        top = int(ids.max()) if largest is None else largest
        if rows is None or top >= rows.shape[0]:
            self.misses += 1
            return None
        if top >= self._dense[teacher_id]:  # some ids lie past the filled prefix: check each
            filled = self._filled[teacher_id]
            if not bool(filled[ids].all()):
                self.misses += 1
                return None
            if teacher_id in self._stored:  # new rows since the prefix was measured
                self._stored.discard(teacher_id)
                self._dense[teacher_id] = _filled_prefix(filled)
        self.hits += 1
        return rows.index_select(0, ids)

    def needs_verify(self, teacher_id: int) -> bool:
        """Whether the next hit of this teacher should be checked against the online path."""
        return self._verified.get(teacher_id, 0) < self.verify_hits

    def check(self, teacher_id: int, cached: torch.Tensor, online: torch.Tensor) -> None:
        """Compare a hit with a fresh online computation; refuse if the inputs changed."""
        self._verified[teacher_id] = self._verified.get(teacher_id, 0) + 1
        if not torch.allclose(cached, online, rtol=1e-4, atol=1e-5):
            raise RecyclerError(
                "teacher-logit cache cannot be exact: a teacher gave different logits for the "
                "same sample ids in a later epoch (random augmentation or changing inputs?); "
                "set distill.cache: false"
            )

    def store(self, teacher_id: int, ids: torch.Tensor, logits: torch.Tensor) -> None:
        """Remember these samples' logits (silently stops growing at the memory bound)."""
        if self.full:
            return
        need = int(ids.max()) + 1
        rows = self._rows.get(teacher_id)
        if rows is None or need > rows.shape[0]:
            capacity = max(need, 2 * rows.shape[0] if rows is not None else need)
            row_bytes = logits[0].element_size() * logits[0].nelement()
            extra = (capacity - (rows.shape[0] if rows is not None else 0)) * row_bytes
            if self.nbytes + extra > self.max_bytes:
                self.full = True
                return
            grown = logits.new_zeros((capacity, *logits.shape[1:]))
            filled = torch.zeros(capacity, dtype=torch.bool, device=logits.device)
            if rows is not None:
                grown[: rows.shape[0]] = rows
                filled[: rows.shape[0]] = self._filled[teacher_id]
            self._rows[teacher_id], self._filled[teacher_id] = grown, filled
            self._dense.setdefault(teacher_id, 0)
        self._rows[teacher_id][ids] = logits
        self._filled[teacher_id][ids] = True
        self._stored.add(teacher_id)


def check_ids(sample_ids: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, int]:
    """Validate the sample ids the cache needs: one non-negative integer per sample.

    Returns the ids as int64 and the largest of them.
    """
    if sample_ids is None:
        raise RecyclerError(
            "distill.cache is on but loss() got no sample_ids: pass sample_ids=<ids of the "
            "batch's samples> (a stable id per sample), or set distill.cache: false"
        )
    ids = torch.as_tensor(sample_ids)
    if ids.dim() != 1 or ids.shape[0] != batch or ids.dtype.is_floating_point:
        raise RecyclerError(
            f"sample_ids must be a 1-D integer tensor with one id per sample ({batch}), got "
            f"shape {tuple(ids.shape)} and dtype {ids.dtype}"
        )
    if not ids.numel():
        return ids.long(), -1
    low, high = torch.aminmax(ids)
    if int(low) < 0:
        raise RecyclerError("sample_ids must be >= 0 (they index the teacher-logit cache)")
    return ids.long(), int(high)


def _filled_prefix(filled: torch.Tensor) -> int:
    """How many leading rows are filled."""
    missing = (~filled).nonzero()
    return int(missing[0, 0]) if missing.numel() else filled.shape[0]


def cached_logits(
    cache: LogitCache,
    pool: TeacherPool,
    indices: list[int],
    inputs: Inputs,
    ids: torch.Tensor,
    largest: int | None = None,
) -> torch.Tensor:
    """Mean logits of the pool's teachers at ``indices`` for samples ``ids``, via the cache.

    A miss fills every teacher's rows for this batch while the cache has room, so later epochs
    hit whichever teacher the sampler picks; the first hits of each teacher are verified.
    """
    outs: list[torch.Tensor] = []
    for index, tid in zip(indices, pool.ids(indices), strict=True):
        hit = cache.lookup(tid, ids, largest)
        if hit is None:
            fill = range(len(pool)) if not cache.full else [index]
            for i, logits in zip(fill, pool.each_logits(list(fill), inputs), strict=True):
                cache.store(pool.ids([i])[0], ids, logits)
                if i == index:
                    hit = logits
        elif cache.needs_verify(tid):
            cache.check(tid, hit, pool.each_logits([index], inputs)[0])
        assert hit is not None
        outs.append(hit)
    return outs[0] if len(outs) == 1 else torch.stack(outs).mean(dim=0)
