"""Eligibility and quality gate, pool policies, and the per-step sampler."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from collections import Counter
from typing import Any

import pytest

from recycler.errors import ConfigError
from recycler.sampling import POLICIES, StepSampler, eligible, select_pool
from storage import Direction, Status, TeacherRecord

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def rec(
    id: int,
    metric: float | None = 0.5,
    *,
    direction: Direction = Direction.MAXIMIZE,
    final: bool = True,
    trial_state: str = "complete",
    status: Status = Status.READY,
    minutes: int | None = None,
    signature: str = "logits[10]",
) -> TeacherRecord:
    return TeacherRecord(
        id=id,
        study="sweep",
        trial_number=id,
        trial_id=None,
        framework="optuna",
        params={"lr": 0.1},
        metric_name="accuracy",
        metric_value=metric,
        direction=direction,
        step=100 if final else 50,
        epoch=None,
        final=final,
        trial_state=trial_state,
        output_signature=signature,
        blob_key=f"k{id}",
        blob_uri=f"file:///t/{id}",
        sha256="0" * 64,
        size_bytes=1,
        format="safetensors",
        status=status,
        reason=None,
        tags={},
        created_at=T0 + dt.timedelta(minutes=id if minutes is None else minutes),
    )


def ids(records: list[TeacherRecord]) -> list[int]:
    return [r.id for r in records]


def kept(records: list[TeacherRecord], **kwargs: Any) -> list[TeacherRecord]:
    result = eligible(records, **kwargs)
    assert len(result.kept) + len(result.dropped) == len(records)
    return result.kept


# ---------------------------------------------------------------- eligibility and quality gate


def test_ready_final_and_pruned_rules() -> None:
    records = [
        rec(1),
        rec(2, status=Status.PENDING),
        rec(3, status=Status.QUARANTINED),
        rec(4, trial_state="pruned"),
        rec(5, final=False),
        rec(6, trial_state="pruned", final=False),
        rec(7, signature="logits[100]"),
    ]
    assert ids(kept(records)) == [1, 4, 7]  # defaults: pruned yes, intermediate no
    assert ids(kept(records, include_pruned=False)) == [1, 7]
    assert ids(kept(records, include_intermediate=True)) == [1, 4, 5, 6, 7]
    assert ids(kept(records, include_pruned=False, include_intermediate=True)) == [1, 5, 7]
    assert ids(kept(records, output_signature="logits[10]")) == [1, 4]


def test_eligible_says_why() -> None:
    records = [
        rec(1),
        rec(2, status=Status.PENDING),
        rec(4, trial_state="pruned"),
        rec(5, final=False),
        rec(6, signature="logits[100]"),
    ]
    kept_, dropped = eligible(records, include_pruned=False, output_signature="logits[10]")
    assert ids(kept_) == [1]
    reasons = {r.id: why for r, why in dropped}
    assert reasons == {
        2: "status PENDING, not READY",
        4: "pruned trial (include_pruned is off)",
        5: "intermediate checkpoint at step 50 (include_intermediate is off)",
        6: "output signature 'logits[100]' != 'logits[10]'",
    }


def test_quality_gate_non_finite() -> None:
    records = [rec(1, 0.9), rec(2, None), rec(3, math.nan), rec(4, math.inf), rec(5, -math.inf)]
    s = eligible(records)
    assert ids(s.kept) == [1]
    assert [why for _, why in s.dropped] == [
        "quality gate: metric is None, not a finite number",
        "quality gate: metric is nan, not a finite number",
        "quality gate: metric is inf, not a finite number",
        "quality gate: metric is -inf, not a finite number",
    ]
    assert ids(kept(records, quality_gate=False)) == [1, 2, 3, 4, 5]


def test_quality_gate_chance_maximize() -> None:
    records = [rec(1, 0.05), rec(2, 0.1), rec(3, 0.11), rec(4, 0.9)]
    assert ids(kept(records, chance_metric=0.1)) == [3, 4]  # equal to chance is dropped
    assert ids(kept(records)) == [1, 2, 3, 4]  # no chance level: only finiteness
    s = eligible(records, chance_metric=0.1)
    assert s.dropped[1][1] == "quality gate: metric 0.1 is no better than chance (0.1)"


def test_quality_gate_chance_minimize() -> None:
    # a loss: chance is log(10) ~ 2.303 for 10 classes; a diverged run sits at or above it
    m = Direction.MINIMIZE
    records = [
        rec(1, 0.3, direction=m),
        rec(2, math.log(10), direction=m),
        rec(3, 5.0, direction=m),
        rec(4, 2.2, direction=m),
        rec(5, math.nan, direction=m),
    ]
    assert ids(kept(records, chance_metric=math.log(10))) == [1, 4]


# ---------------------------------------------------------------- pool policies

MAX, MIN = Direction.MAXIMIZE, Direction.MINIMIZE
POOL = [  # id, metric, created (minutes): deliberately not in id order
    rec(4, 0.70, minutes=40),
    rec(1, 0.90, minutes=10),
    rec(6, 0.20, minutes=60),
    rec(3, 0.90, minutes=30),  # ties id 1 on metric
    rec(2, 0.50, minutes=60),  # ties id 6 on created_at
    rec(5, 0.10, minutes=5),
]


@pytest.mark.parametrize(
    ("policy", "k", "want"),
    [
        ("best", 1, [1]),
        ("best", 3, [1, 3, 4]),
        ("best", 99, [1, 3, 4, 2, 6, 5]),
        ("recent", 2, [6, 2]),
        ("recent", 3, [6, 2, 4]),
        ("diverse", 1, [1]),
        ("diverse", 2, [1, 5]),  # ranks 0 and 5
        ("diverse", 3, [1, 2, 5]),  # ranks 0, 2.5 -> 3 (round half up), 5
        ("diverse", 4, [1, 4, 2, 5]),  # ranks 0, 1.67 -> 2, 3.33 -> 3, 5
        ("diverse", 6, [1, 3, 4, 2, 6, 5]),
        ("all", 2, [1, 2, 3, 4, 5, 6]),
        ("all", None, [1, 2, 3, 4, 5, 6]),
    ],
)
def test_policy_selection(policy: str, k: int | None, want: list[int]) -> None:
    got = ids(select_pool(POOL, policy=policy, k=k))
    assert got == want
    assert ids(select_pool(list(reversed(POOL)), policy=policy, k=k)) == want  # order-free


def test_best_minimize_and_missing_metric() -> None:
    pool = [
        rec(1, 0.5, direction=MIN),
        rec(2, 0.2, direction=MIN),
        rec(3, None, direction=MIN),
        rec(4, 0.2, direction=MIN),
        rec(5, 0.9, direction=MIN),
    ]
    assert ids(select_pool(pool, policy="best", k=3)) == [2, 4, 1]
    assert ids(select_pool(pool, policy="best")) == [2, 4, 1, 5, 3]  # missing metric last
    assert ids(select_pool(pool, policy="diverse", k=3)) == [2, 1, 3]


def test_random_policy_is_seeded_and_uniform() -> None:
    picks = [tuple(ids(select_pool(POOL, policy="random", k=2, rng=seed))) for seed in range(3000)]
    assert picks[:50] == [
        tuple(ids(select_pool(POOL, policy="random", k=2, rng=s))) for s in range(50)
    ]
    assert all(a < b for a, b in picks)  # sorted by id
    counts = Counter(picks)
    assert set(counts) == set(itertools.combinations(range(1, 7), 2))
    # 15 pairs, p = 1/15 each over 3000 draws: sd = 13.7; 5 sd is 68
    assert all(abs(c - 200) < 68 for c in counts.values()), counts
    rng = random.Random(7)
    first = ids(select_pool(POOL, policy="random", k=3, rng=rng))
    assert ids(select_pool(POOL, policy="random", k=3, rng=random.Random(7))) == first


def test_policy_errors_and_edges() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown pool policy 'top'.*all, best, diverse, random, recent"
    ):
        select_pool(POOL, policy="top", k=1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="positive int"):
            select_pool(POOL, policy="best", k=bad)  # type: ignore[arg-type]
    for policy in POLICIES:
        assert select_pool([], policy=policy, k=3) == []
        assert len(select_pool(POOL, policy=policy, k=10)) == 6


# ---------------------------------------------------------------- per-step sampler


def within_binomial(counts: Counter[int], n_draws: int, p: float, sigmas: float = 4.5) -> bool:
    """Every count within ``sigmas`` standard deviations of n*p.

    For 20,000 draws with p = 0.2: sd = sqrt(n p (1 - p)) = 56.6, so 4.5 sd = 255 (1.3% of
    n*p = 4000). A fair sampler exceeds 4.5 sd on one of 5 counts with probability about
    5 * 6.8e-6 = 3.4e-5, so this does not fail by chance (and the seed is fixed anyway); a
    sampler that gives one index 2.4 percentage points too much (480 counts, 8.5 sd) or never
    returns an index fails it (see test_tolerance_rejects_biased_samplers).
    """
    sd = math.sqrt(n_draws * p * (1 - p))
    return all(abs(counts.get(i, 0) - n_draws * p) <= sigmas * sd for i in range(round(1 / p)))


def test_sample_one_is_uniform() -> None:
    sampler = StepSampler(1, seed=123)
    draws = [sampler.sample(5) for _ in range(20_000)]
    assert all(len(d) == 1 and 0 <= d[0] < 5 for d in draws)
    counts = Counter(d[0] for d in draws)
    assert within_binomial(counts, 20_000, 0.2), counts


def test_tolerance_rejects_biased_samplers() -> None:
    rng = random.Random(0)
    never_last = Counter(rng.randrange(4) for _ in range(20_000))  # off-by-one: never index 4
    assert not within_binomial(never_last, 20_000, 0.2)
    skewed = Counter(0 if rng.random() < 0.03 else rng.randrange(5) for _ in range(20_000))
    assert not within_binomial(skewed, 20_000, 0.2)  # p(0) = 0.03 + 0.97 * 0.2 = 0.224


def test_sample_k_is_uniform_without_replacement() -> None:
    sampler = StepSampler(2, seed=9)
    draws = [sampler.sample(5) for _ in range(20_000)]
    assert all(len(d) == 2 and d[0] < d[1] for d in draws)  # distinct and sorted
    per_index = Counter(i for d in draws for i in d)
    assert within_binomial(Counter({i: c / 2 for i, c in per_index.items()}), 20_000, 0.2)
    pairs = Counter(tuple(d) for d in draws)
    assert len(pairs) == 10
    sd = math.sqrt(20_000 * 0.1 * 0.9)  # each of the 10 pairs has p = 0.1
    assert all(abs(c - 2_000) <= 4.5 * sd for c in pairs.values()), pairs


def test_seed_reproduces_and_different_seeds_differ() -> None:
    def run(seed: int | None, k: int = 1) -> list[list[int]]:
        s = StepSampler(k, seed=seed)
        return [s.sample(7) for _ in range(200)]

    assert run(5) == run(5)
    assert run(5, k=3) == run(5, k=3)
    assert run(5) != run(6)
    assert run(None) != run(None)  # unseeded: fresh entropy each time (p of equality 7**-200)


def test_state_resumes_the_sequence() -> None:
    s = StepSampler(2, seed=1)
    for _ in range(10):
        s.sample(9)
    state = s.state()
    after = [s.sample(9) for _ in range(20)]
    t = StepSampler(2, seed=999)
    t.set_state(state)
    assert [t.sample(9) for _ in range(20)] == after


def test_global_rng_untouched() -> None:
    random.seed(42)
    expected = random.random()
    random.seed(42)
    StepSampler(1, seed=0).sample(5)
    StepSampler(3).sample(10)
    select_pool(POOL, policy="random", k=2)
    assert random.random() == expected


def test_all_equals_the_explicit_ensemble() -> None:
    for n in range(0, 8):
        assert StepSampler("all", seed=0).sample(n) == list(range(n))
        assert StepSampler(n + 2, seed=0).sample(n) == list(range(n))  # k >= n: all of them
    assert StepSampler(3).sample(3) == [0, 1, 2]
    assert StepSampler(1).sample(1) == [0]


def test_huge_pool_is_not_materialised() -> None:
    # O(k) per call: a range-based sampler never builds a list of n indices.
    assert 0 <= StepSampler(1, seed=0).sample(10**15)[0] < 10**15
    assert len(set(StepSampler(3, seed=0).sample(10**15))) == 3


def test_sampler_errors() -> None:
    for bad in (0, -2, 1.0, "some", True):
        with pytest.raises(ConfigError, match="positive int or 'all'"):
            StepSampler(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        StepSampler(1).sample(-1)
    assert StepSampler(1).sample(0) == []
    assert repr(StepSampler(2, seed=3)) == "StepSampler(k=2, seed=3)"
