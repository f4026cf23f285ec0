"""Teacher-logit cache: teachers' logits per stable sample id, computed once and reused.

Tables are keyed by what they hold: a tuple of teacher ids is a step's whole teacher target
(one teacher, or the whole pool's ensemble), stored as the KD term compares it (``prepare``);
an int is one teacher's raw logits, for steps that average a subset of the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..errors import RecyclerError
from ..losses import average_teachers

if TYPE_CHECKING:
    from ..teachers import Inputs, TeacherPool

#: What the cache stores of a step's teacher logits (identity when None): ``KDTerm.target``.
Prepare = Callable[[torch.Tensor], torch.Tensor]
#: A table's key: a tuple of teacher ids (a whole step's target) or one teacher id (raw rows).
Key = int | tuple[int, ...]


class LogitCache:
    """Dense tables of logits indexed by sample id, one per key, under a memory bound.

    Exact by construction for deterministic teacher inputs: a cached row is the very tensor
    the online path computed for that sample. The first ``verify_hits`` cache hits per key
    are recomputed online and compared, so random augmentation (inputs that change between
    epochs) is caught and refused instead of silently distilling from stale logits.

    Example:
        >>> cache = LogitCache(max_bytes=1 << 20)
        >>> ids = torch.tensor([0, 2])
        >>> cache.store(7, ids, torch.ones(2, 3))
        True
        >>> cache.lookup(7, ids).shape
        torch.Size([2, 3])
    """

    def __init__(self, max_bytes: int, verify_hits: int = 2) -> None:
        self.max_bytes = max_bytes
        self.verify_hits = verify_hits
        self._rows: dict[Key, torch.Tensor] = {}
        self._filled: dict[Key, torch.Tensor] = {}
        # per key: every row below this index is filled (a hit there needs no mask check)
        self._dense: dict[Key, int] = {}
        self._stored: set[Key] = set()  # keys with rows stored since their prefix was taken
        self._verified: dict[Key, int] = {}
        self._finite: dict[Key, bool] = {}  # per key: every row stored so far is finite
        self.full = False
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache tables."""
        return sum(t.element_size() * t.nelement() for t in self._rows.values())

    def lookup(
        self, key: Key, ids: torch.Tensor, largest: int | None = None
    ) -> torch.Tensor | None:
        """The cached logits of these samples, or None if any of them is missing.

        ``largest``: ``ids.max()`` if the caller knows it (saves a reduction per step).
        """
        rows = self._rows.get(key)
        top = int(ids.max()) if largest is None else largest
        if rows is None or top >= rows.shape[0]:
            self.misses += 1
            return None
        if top >= self._dense[key]:  # some ids lie past the filled prefix: check each
            filled = self._filled[key]
            if not bool(filled[ids].all()):
                self.misses += 1
                return None
            if key in self._stored:  # new rows since the prefix was measured
                self._stored.discard(key)
                self._dense[key] = _filled_prefix(filled)
        self.hits += 1
        return rows.index_select(0, ids)

    def finite(self, key: Key) -> bool:
        """Whether every row stored under this key is finite (checked once, when stored)."""
        return self._finite.get(key, False)

    def needs_verify(self, key: Key) -> bool:
        """Whether the next hit of this key should be checked against the online path."""
        return self._verified.get(key, 0) < self.verify_hits

    def check(self, key: Key, cached: torch.Tensor, online: torch.Tensor) -> None:
        """Compare a hit with a fresh online computation; refuse if the inputs changed."""
        self._verified[key] = self._verified.get(key, 0) + 1
        if not torch.allclose(cached, online, rtol=1e-4, atol=1e-5):
            raise RecyclerError(
                "teacher-logit cache cannot be exact: a teacher gave different logits for the "
                "same sample ids in a later epoch (random augmentation or changing inputs?); "
                "set distill.cache: false"
            )

    def store(self, key: Key, ids: torch.Tensor, logits: torch.Tensor) -> bool:
        """Remember these samples' logits; False once at the memory bound (nothing stored)."""
        if self.full:
            return False
        need = int(ids.max()) + 1
        rows = self._rows.get(key)
        if rows is None or need > rows.shape[0]:
            capacity = max(need, 2 * rows.shape[0] if rows is not None else need)
            row_bytes = logits[0].element_size() * logits[0].nelement()
            extra = (capacity - (rows.shape[0] if rows is not None else 0)) * row_bytes
            if self.nbytes + extra > self.max_bytes:
                self.full = True
                return False
            grown = logits.new_zeros((capacity, *logits.shape[1:]))
            filled = torch.zeros(capacity, dtype=torch.bool, device=logits.device)
            if rows is not None:
                grown[: rows.shape[0]] = rows
                filled[: rows.shape[0]] = self._filled[key]
            self._rows[key], self._filled[key] = grown, filled
            self._dense.setdefault(key, 0)
        self._rows[key][ids] = logits
        self._filled[key][ids] = True
        self._stored.add(key)
        finite = self._finite.get(key, True)
        self._finite[key] = finite and bool(torch.isfinite(logits).all())
        return True

    def drop(self, key: Key) -> None:
        """Forget a table (a pool's ensemble once the pool changed), making room again."""
        for table in (self._rows, self._filled, self._dense, self._verified, self._finite):
            table.pop(key, None)
        self._stored.discard(key)
        self.full = False

    def held(self) -> list[Key]:
        """The keys of the tables held."""
        return list(self._rows)


def check_ids(sample_ids: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, int]:
    """Validate the sample ids the cache needs: one non-negative integer per sample.

    Returns the ids as int64 and the largest of them.
    """
    if sample_ids is None:
        raise RecyclerError(
            "distill.cache is on but loss() got no sample_ids: pass sample_ids=<ids of the "
            "batch's samples> (a stable id per sample), or set distill.cache: false"
        )
    ids = sample_ids if isinstance(sample_ids, torch.Tensor) else torch.as_tensor(sample_ids)
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
    return (ids if ids.dtype == torch.int64 else ids.long()), int(high)


def _filled_prefix(filled: torch.Tensor) -> int:
    """How many leading rows are filled."""
    missing = (~filled).nonzero()
    return int(missing[0, 0]) if missing.numel() else filled.shape[0]


class Lookup(NamedTuple):
    """A step's teacher logits through the cache.

    ``prepared``: as ``KDTerm.target`` gives them (else raw); ``finite``: every row came from
    the cache and was finite when stored (the quality gate need not look again).
    """

    logits: torch.Tensor
    prepared: bool
    finite: bool


def cached_logits(
    cache: LogitCache,
    pool: TeacherPool,
    indices: list[int],
    inputs: Inputs,
    ids: torch.Tensor,
    largest: int | None = None,
    prepare: Prepare | None = None,
) -> Lookup:
    """The mean logits of the pool's teachers at ``indices`` for samples ``ids``, via the cache.

    One teacher, or the whole pool, is one table of the step's target (``prepare``d once when
    stored: the KD term does not redo it every step); a subset averages its teachers' raw rows
    as the online loop does. A miss of one teacher fills every teacher's table for the batch
    while there is room, so later epochs hit whichever teacher the sampler picks. The first
    hits of each table are checked against the online path.
    """
    if 1 < len(indices) < len(pool):
        rows = [_table(cache, pool, [i], inputs, ids, largest, None) for i in indices]
        mean = average_teachers([r for r, _ in rows])
        return Lookup(mean, False, all(finite for _, finite in rows))
    logits, finite = _table(cache, pool, indices, inputs, ids, largest, prepare)
    return Lookup(logits, prepare is not None, finite)


def _table(
    cache: LogitCache,
    pool: TeacherPool,
    indices: list[int],
    inputs: Inputs,
    ids: torch.Tensor,
    largest: int | None,
    prepare: Prepare | None,
) -> tuple[torch.Tensor, bool]:
    """The rows of one table (the step's target, or one teacher's raw rows) and finiteness."""
    key = _key(pool.ids(indices), prepare)
    hit = cache.lookup(key, ids, largest)
    if hit is not None:
        if cache.needs_verify(key):
            online = pool.logits(indices, inputs)
            cache.check(key, hit, prepare(online) if prepare is not None else online)
        return hit, cache.finite(key)
    if len(indices) > 1:  # the whole pool's ensemble: the previous pool's is stale now
        for old in cache.held():
            if isinstance(old, tuple) and len(old) > 1 and old != key:
                cache.drop(old)
        fills = {key: pool.logits(indices, inputs)}
    else:  # one teacher: fill every teacher's table for this batch while there is room
        fill = list(range(len(pool))) if not cache.full else indices
        each = zip(pool.ids(fill), pool.each_logits(fill, inputs), strict=True)
        fills = {_key([tid], prepare): logits for tid, logits in each}
    found = None
    for k, logits in fills.items():
        rows = prepare(logits) if prepare is not None else logits
        stored = cache.store(k, ids, rows)  # False when full: then not checked either
        if k == key:
            found = rows, stored and cache.finite(key)
    assert found is not None
    return found


def _key(tids: list[int], prepare: Prepare | None) -> Key:
    """A step's target (prepared) is keyed by its teachers' tuple; raw rows by the teacher."""
    return tuple(tids) if prepare is not None else tids[0]
