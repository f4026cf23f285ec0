"""``paper_tables.py``'s results by run name and the verdicts computed from them.

A verdict compares runs by paired differences over seeds; it says "no clear difference" when
the mean difference is within two standard errors, so nothing is claimed from noise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _harness import Curve


class Results:
    """Curves by run name (one per seed, in seed order) and the JSON record of every run."""

    def __init__(self) -> None:
        self.curves: dict[str, list[Curve]] = {}
        self.runs: list[dict[str, Any]] = []

    def add(self, name: str, curve: Curve, replicate: int, config: dict[str, Any]) -> None:
        self.curves.setdefault(name, []).append(curve)
        self.runs.append({**curve.to_json(), "replicate": replicate, "config": config})

    def finals(self, names: str | Sequence[str]) -> list[float]:
        """Final accuracy per seed (of a group of runs: their mean)."""
        group = [names] if isinstance(names, str) else list(names)
        per_run = [[c.final for c in self.curves[name]] for name in group]
        return [statistics.fmean(seed) for seed in zip(*per_run, strict=True)]

    def mean(self, name: str) -> float:
        """Mean final accuracy over seeds."""
        return statistics.fmean(self.finals(name))

    def diff(self, a: str | Sequence[str], b: str | Sequence[str]) -> Diff:
        """``a - b`` in accuracy points, paired by seed."""
        got = [100 * (x - y) for x, y in zip(self.finals(a), self.finals(b), strict=True)]
        std = statistics.stdev(got) if len(got) > 1 else 0.0
        return Diff(statistics.fmean(got), std, len(got))

    def time_ratio(self, name: str) -> list[float]:
        """Per seed: the run's seconds over the baseline's."""
        pairs = zip(self.curves[name], self.curves["baseline"], strict=True)
        return [c.total_seconds / base.total_seconds for c, base in pairs]


@dataclass(frozen=True)
class Diff:
    """A paired difference over seeds, in points; clear when beyond two standard errors."""

    mean: float
    std: float
    n: int

    @property
    def sign(self) -> int:
        noise = 2 * self.std / math.sqrt(self.n) if self.n > 1 else 0.0
        return 0 if abs(self.mean) <= noise else (1 if self.mean > 0 else -1)

    def says(self, up: str, down: str, flat: str = "no clear difference") -> str:
        word = {1: up, -1: down, 0: flat}[self.sign]
        return f"{self.mean:+.1f} ± {self.std:.1f} pts: {word}"


def verdict_identical(r: Results) -> str:
    best = max((f"KD A best {k}" for k in range(1, 6)), key=r.mean)
    more = r.diff("KD A best 5", "KD A best 1").says("more helped", "more hurt")
    beat = r.diff(best, "best A").says("the student beat it", "the student fell short")
    kd = r.diff("KD A best 1", "baseline").says("KD helped", "KD hurt")
    k = int(best.removeprefix("KD A best "))
    return (
        f"5 teachers vs 1: {more}; the best KD row ({k} teacher{'s' * (k > 1)}) vs the seed's "
        f"best teacher: "
        f"{beat}; 1 teacher vs no KD: {kd}."
    )


def verdict_diverse(r: Results) -> str:
    kd = "KD B all 5"
    return (
        f"KD vs fine-tuning the best teacher: "
        f"{r.diff(kd, 'fine-tune best B').says('KD better', 'fine-tuning better')}; "
        f"vs the wider model: {r.diff(kd, 'wide (64 ch)').says('KD better', 'wider better')}; "
        f"vs no KD: {r.diff(kd, 'baseline').says('KD better', 'KD worse')}; "
        f"vs the seed's best teacher: {r.diff(kd, 'best B').says('KD better', 'KD worse')}."
    )


def verdict_sampling(r: Results) -> str:
    one = r.diff("KD B sample 1", "KD B all 5").says("gain", "loss")
    three = r.diff("KD B sample 3", "KD B sample 1").says("gain", "loss")
    time_one = statistics.fmean(r.time_ratio("KD B sample 1"))
    time_all = statistics.fmean(r.time_ratio("KD B all 5"))
    return (
        f"sample 1 vs all 5: {one}; time ÷ baseline {time_one:.2f}x (sample 1) vs "
        f"{time_all:.2f}x (all 5); sample 3 vs sample 1: {three}."
    )


def verdict_schedules(r: Results) -> str:
    periodic = ["KD B every", "KD B every2"]
    blocks = [f"KD B {k}" for k in ("first", "middle", "last", "first+last")]
    best = max(periodic + blocks, key=r.mean)
    spread = r.diff(periodic, blocks).says("periodic better", "blocks better")
    longer = r.diff("KD B every2", "KD B every").says("2 better", "1 better")
    always = r.diff("KD B all 5", best).says("every epoch better", "the schedule better")
    return (
        f"periodic (mean of 2) vs blocks (mean of 4): {spread}; 2-epoch vs 1-epoch blocks: "
        f"{longer}; every epoch vs the best schedule ({best.removeprefix('KD B ')}): {always}."
    )


def verdict_schedule_sampling(r: Results) -> str:
    parts = [
        f"{key}: {r.diff(f'KD B {key} sample 1', f'KD B {key}').says('sampling 1 helped', 'hurt')}"
        for key in ("first+last", "every")
    ]
    return "sample 1 vs all 5 with schedule " + "; ".join(parts) + "."


def verdict_good_bad(r: Results) -> str:
    worse = r.diff("KD worst", "KD best").says("worst better", "best better")
    both = r.diff(["KD both", "KD both sample 1"], "KD best").says("both better", "best better")
    worst = r.diff("KD worst", "baseline").says("even the worst helped", "it hurt")
    return (
        f"worst vs best teacher: {worse}; both (mean of every step and sample 1) vs the best "
        f"alone: {both}; worst vs no KD: {worst}."
    )


def verdict_only_correct(r: Results) -> str:
    change = r.diff("KD both only correct", "KD both")
    return f"only_correct vs every sample: {change.says('only_correct helped', 'it hurt')}."


def verdict_losses(r: Results) -> str:
    short = next(n for n in r.curves if n.startswith("KD best mse "))
    length = short.removeprefix("KD best mse ")
    full = r.diff("KD best kl", "KD best").says("KL better", "MSE better")
    part = r.diff(f"KD best kl {length}", short).says("KL better", "MSE better")
    trade = r.diff(short, "baseline").says("the shorter KD run better", "the baseline better")
    return (
        f"KL vs MSE at full length: {full}; at {length}: {part}; MSE at {length} vs no KD at "
        f"full length: {trade}."
    )
