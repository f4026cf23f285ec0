"""Which earlier trials teach: eligibility and quality gate, pool policies, per-step sampler.

Three stages, in the order the Distiller applies them:

1. :func:`eligible`: READY rows only; pruned trials and intermediate checkpoints only when
   asked; the quality gate drops teachers whose metric is missing, non-finite or no better
   than chance. It also says why each was dropped.
2. :func:`select_pool`: the pool policy (best/random/recent/diverse/all, or one given to
   :func:`register_policy`) picks up to k.
3. :class:`StepSampler`: on each distilled step, which members of the pool run (k=1 is the
   papers' O(1) sampling; ``"all"`` the ensemble).

Every random choice uses a ``random.Random`` owned by the caller or the sampler, never the
global RNG, so a seed reproduces the sequence.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

from ._names import POLICIES
from ._storage import Direction, Status, TeacherRecord
from .errors import ConfigError

__all__ = [
    "POLICIES",
    "Eligibility",
    "PolicyFn",
    "StepSampler",
    "eligible",
    "get_policy",
    "policy_names",
    "register_policy",
    "select_pool",
]


class Eligibility(NamedTuple):
    """What :func:`eligible` returns: the teachers kept, and each one dropped with its reason.

    Example:
        >>> kept, dropped = eligible([])
        >>> kept, dropped
        ([], [])
    """

    kept: list[TeacherRecord]
    dropped: list[tuple[TeacherRecord, str]]


def _rejection(
    rec: TeacherRecord,
    *,
    include_pruned: bool,
    include_intermediate: bool,
    quality_gate: bool,
    chance_metric: float | None,
    output_signature: str | None,
) -> str | None:
    """Why ``rec`` may not teach, or None if it may."""
    if rec.status != Status.READY:
        return f"status {Status(rec.status).value}, not READY"
    if output_signature is not None and rec.output_signature != output_signature:
        return f"output signature {rec.output_signature!r} != {output_signature!r}"
    if not include_pruned and rec.trial_state == "pruned":
        return "pruned trial (include_pruned is off)"
    if not include_intermediate and not rec.final:
        return f"intermediate checkpoint at step {rec.step} (include_intermediate is off)"
    if not quality_gate:
        return None
    value = rec.metric_value
    if value is None or not math.isfinite(value):
        return f"quality gate: metric is {value!r}, not a finite number"
    if chance_metric is not None:
        if rec.direction == Direction.MINIMIZE and value >= chance_metric:
            return f"quality gate: metric {value!r} is no better than chance ({chance_metric!r})"
        if rec.direction != Direction.MINIMIZE and value <= chance_metric:
            return f"quality gate: metric {value!r} is no better than chance ({chance_metric!r})"
    return None


def eligible(
    records: Iterable[TeacherRecord],
    *,
    include_pruned: bool = True,
    include_intermediate: bool = False,
    quality_gate: bool = True,
    chance_metric: float | None = None,
    output_signature: str | None = None,
    min_skill: float = 0.0,
    min_gain: float = 0.0,
) -> Eligibility:
    """Split ``records`` into those that may teach and those that may not, with the reason.

    Rules, in order: status READY; ``output_signature`` equal when given; no pruned trial
    unless ``include_pruned`` (on by default: early-stopped teachers are often good ones);
    final checkpoints only unless ``include_intermediate``; with ``quality_gate`` (default) the
    metric must be finite and, when ``chance_metric`` is given, better than chance in the
    record's direction (maximize: ``> chance``; minimize: ``< chance``), and its gain over
    chance at least ``min_gain`` and at least ``min_skill`` times the best candidate's gain: a
    diverged trial that is better than chance by a hair (0.1015 on 10 classes) is no teacher.
    Order is preserved.

    Example:
        >>> kept, dropped = eligible(records, chance_metric=0.1)  # doctest: +SKIP
        >>> for rec, why in dropped:  # doctest: +SKIP
        ...     log.warning("teacher %d left out: %s", rec.id, why)
    """
    result = Eligibility([], [])
    passed: list[TeacherRecord] = []
    for rec in records:
        why = _rejection(
            rec,
            include_pruned=include_pruned,
            include_intermediate=include_intermediate,
            quality_gate=quality_gate,
            chance_metric=chance_metric,
            output_signature=output_signature,
        )
        if why is None:
            passed.append(rec)
        else:
            result.dropped.append((rec, why))
    if not (quality_gate and chance_metric is not None and passed):
        result.kept.extend(passed)
        return result
    best = max(_gain(r, chance_metric) for r in passed)
    for rec in passed:
        gain = _gain(rec, chance_metric)
        if gain < min_gain:
            result.dropped.append(
                (
                    rec,
                    f"quality gate: metric {rec.metric_value!r} is within {min_gain:.3g} of "
                    f"chance ({chance_metric!r}): a diverged or untrained model",
                )
            )
        elif best > 0 and gain < min_skill * best:
            result.dropped.append(
                (
                    rec,
                    f"quality gate: metric {rec.metric_value!r} is {gain / best:.0%} of the "
                    f"best teacher's gain over chance ({chance_metric!r}); teachers.min_skill "
                    f"is {min_skill:.0%}",
                )
            )
        else:
            result.kept.append(rec)
    return result


def _gain(rec: TeacherRecord, chance: float) -> float:
    """How much better than chance a record's (finite) metric is, in its direction."""
    value = float(rec.metric_value or 0.0)
    return chance - value if rec.direction == Direction.MINIMIZE else value - chance


# ---------------------------------------------------------------- pool policies


def _badness(rec: TeacherRecord) -> tuple[float, int]:
    """Sort key, best first: by metric in the record's direction, missing last, ties by id."""
    value = rec.metric_value
    if value is None or math.isnan(value):
        return (math.inf, rec.id)
    return (value if rec.direction == Direction.MINIMIZE else -value, rec.id)


def _best(recs: list[TeacherRecord], k: int, rng: random.Random) -> list[TeacherRecord]:
    return sorted(recs, key=_badness)[:k]


def _random(recs: list[TeacherRecord], k: int, rng: random.Random) -> list[TeacherRecord]:
    return sorted(rng.sample(recs, k), key=lambda r: r.id)


def _recent(recs: list[TeacherRecord], k: int, rng: random.Random) -> list[TeacherRecord]:
    return sorted(recs, key=lambda r: (r.created_at, r.id), reverse=True)[:k]


def _diverse(recs: list[TeacherRecord], k: int, rng: random.Random) -> list[TeacherRecord]:
    ranked = sorted(recs, key=_badness)
    if k == 1:
        return ranked[:1]
    step = (len(ranked) - 1) / (k - 1)  # >= 1 since k <= n: the picks are distinct
    return [ranked[math.floor(i * step + 0.5)] for i in range(k)]


def _all(recs: list[TeacherRecord], k: int, rng: random.Random) -> list[TeacherRecord]:
    return recs


#: A pool policy: ``fn(records, k, rng) -> the chosen records``, in the order they rank.
#: ``records`` are eligible ones sorted by id, 1 <= k <= len(records); ``rng`` is the only
#: randomness it may use.
PolicyFn = Callable[[list[TeacherRecord], int, random.Random], list[TeacherRecord]]


def register_policy(name: str, fn: PolicyFn, *, replace: bool = False) -> None:
    """Make ``fn`` available to :func:`select_pool` and the config (``teachers.policy``).

    ConfigError if ``name`` is taken, unless ``replace``.

    Example:
        >>> def oldest(recs, k, rng):
        ...     return sorted(recs, key=lambda r: (r.created_at, r.id))[:k]
        >>> register_policy("oldest", oldest)  # doctest: +SKIP
        >>> select_pool(records, policy="oldest", k=2)  # doctest: +SKIP
    """
    POLICIES.register(name, fn, replace=replace)


def policy_names() -> list[str]:
    """The registered pool policy names, sorted.

    Example:
        >>> policy_names()[:3]
        ['all', 'best', 'diverse']
    """
    return sorted(POLICIES.names())


def get_policy(name: str) -> PolicyFn:
    """The pool policy registered as ``name``; ConfigError listing the known names otherwise.

    Example:
        >>> get_policy("best").__name__
        '_best'
    """
    return POLICIES.get(name)


# the built-ins, in the order the config lists them; see select_pool for each one's choice
register_policy("best", _best)
register_policy("random", _random)
register_policy("recent", _recent)
register_policy("diverse", _diverse)
register_policy("all", _all)


def select_pool(
    records: Iterable[TeacherRecord],
    *,
    policy: str = "best",
    k: int | None = None,
    rng: random.Random | int | None = None,
) -> list[TeacherRecord]:
    """Pick the pool of at most ``k`` teachers from eligible ``records``.

    Policies (all deterministic except ``random``, and independent of the input order):

    - ``best``: the k best by metric, each in its own direction; ties by id; best first.
    - ``random``: k drawn uniformly with ``rng`` (a ``random.Random`` or a seed); by id.
    - ``recent``: the k newest by ``created_at`` (ties: higher id); newest first.
    - ``diverse``: spread over the metric's range: the records ranked best first and the k
      at evenly spaced ranks (always the best and the worst when k >= 2); best first.
    - ``all``: every record, by id; ``k`` is ignored.
    - any name given to :func:`register_policy`.

    ``k=None`` or k at least the number of records gives all of them (in the policy's order).
    Records without a metric rank last (the quality gate normally removes them).

    Example:
        >>> [r.id for r in select_pool(records, policy="best", k=2)]  # doctest: +SKIP
        [7, 3]
    """
    choose = get_policy(policy)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ConfigError(f"pool size k must be a positive int or None, got {k!r}")
    recs = sorted(records, key=lambda r: r.id)
    n = len(recs) if k is None else min(k, len(recs))
    if n == 0:
        return []
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    return list(choose(recs, n, rng))


# ---------------------------------------------------------------- per-step sampler


class StepSampler:
    """Which pool members teach on one distilled step: k of n without replacement, seeded.

    ``k=1`` (the default; the papers' O(1) sampling) costs one ``randrange`` per step; k > 1
    costs O(k); ``k="all"`` returns every index (the ensemble). Indices are sorted ascending,
    so the teachers' logits are averaged in a fixed order. A pool smaller than k gives all.

    Example:
        >>> sampler = StepSampler(1, seed=0)
        >>> [sampler.sample(5) for _ in range(3)]
        [[3], [3], [0]]
        >>> StepSampler("all").sample(3)
        [0, 1, 2]
    """

    def __init__(self, k: int | Literal["all"] = 1, seed: int | None = None) -> None:
        if k != "all" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"teachers per step must be a positive int or 'all', got {k!r}")
        self.k: int | Literal["all"] = k
        self.seed = seed
        self._rng = random.Random(seed)

    def sample(self, n_pool: int) -> list[int]:
        """Indices into a pool of ``n_pool`` teachers for this step (empty if the pool is)."""
        if n_pool < 0:
            raise ValueError(f"pool size must be >= 0, got {n_pool}")
        k = self.k
        if k == "all" or k >= n_pool:
            return list(range(n_pool))
        if k == 1:
            return [self._rng.randrange(n_pool)]
        return sorted(self._rng.sample(range(n_pool), k))

    def state(self) -> tuple[Any, ...]:
        """The RNG state, for checkpoints; give it back to :meth:`set_state` to resume."""
        return self._rng.getstate()

    def set_state(self, state: tuple[Any, ...]) -> None:
        """Resume the sequence from a :meth:`state` taken earlier."""
        self._rng.setstate(state)

    def __repr__(self) -> str:
        return f"StepSampler(k={self.k!r}, seed={self.seed!r})"
