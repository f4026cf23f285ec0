"""Do recycler's defaults ever make a sweep worse? A second task, with diverging trials.

The task: scikit-learn's bundled digits (8x8 images as 64 features, no download), a fixed
1000/797 train/test split by a seeded permutation, standardised with the training split's
statistics; the model: an MLP with no normalisation layer (64 -> 128 -> 128 -> 10, ReLU),
which, unlike the main benchmark's BatchNorm CNN, diverges at a high learning rate. The
sweep: ``lr`` log-uniform in [0.01, 3.0] (SGD, momentum 0.9, cosine decay), drawn per seed by
Optuna's RandomSampler; here every lr >= 0.3 ended at chance (10%). A seed whose draw has no
lr >= 0.5 (a sure divergence) before its last trial gets lr 3.0 at a seeded position among
those trials instead, and the report says so: every sweep has a diverged trial that a later
trial could take as a teacher. Two methods run the same trials in the same order,
interleaved, each as a real Optuna study:

  plain     no recycler
  recycled  ``recycle(objective, config=RecycleConfig(registry=..., blobs=...),
            metric="accuracy")``: every other option at recycler's defaults

Reported: per seed the best final accuracy of each sweep and their difference, its mean ±
std over seeds with a verdict (within noise or above when mean >= -2 standard errors), the
sweeps' wall-clock ratio, which trials diverged, every recycled trial's pool, and how many
diverged teachers (final accuracy < 0.19: not a tenth of the way from chance to perfect) any
pool kept. Outputs: second_task.md, .json and .png.

    python examples/benchmarks/second_task.py           # 5 seeds x 6 trials, 40 epochs
    python examples/benchmarks/second_task.py --quick   # 2 seeds x 3 trials, 20 epochs
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from _harness import (
    Curve,
    OneLineParser,
    Params,
    Progress,
    Summary,
    Task,
    machine,
    machine_line,
    markdown_table,
    plot_lines,
    run_record,
    train_curve,
    write_outputs,
)
from torch import nn

from recycler.config import RecycleConfig
from recycler.demo.task import Split
from recycler.distiller import Distiller
from recycler.integrations.optuna import recycle

STEM = "second_task"
LR = (0.01, 3.0)
SURE_DIVERGENCE = 0.5  # every lr >= 0.3 ended at chance here, after 20 or 40 epochs
CHANCE = 0.1
DIVERGED_BELOW = CHANCE + 0.1 * (1.0 - CHANCE)  # 0.19: not a tenth of the way to perfect
METHODS = ("plain", "recycled")
NOISE_SE = 2.0  # the verdict: within noise or above when mean diff >= -2 standard errors


def load_digits_splits(n_train: int = 1000, seed: int = 0) -> tuple[Split, Split]:
    """Digits as [N, 64] float32, split by a seeded permutation, standardised on training."""
    from sklearn.datasets import load_digits

    x_all, y_all = load_digits(return_X_y=True)
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(seed))
    x = torch.tensor(x_all, dtype=torch.float32)[order]
    y = torch.tensor(y_all, dtype=torch.int64)[order]
    mean, std = x[:n_train].mean(0), x[:n_train].std(0)
    x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))  # some pixels never ink
    return tuple(  # type: ignore[return-value]
        Split(x[part], y[part], torch.arange(len(y[part])))
        for part in (slice(0, n_train), slice(n_train, None))
    )


def mlp(params: Mapping[str, Any]) -> nn.Module:
    """64 -> hidden -> hidden -> 10 with ReLU, no normalisation (``hidden`` default 128)."""
    hidden = int(params.get("hidden", 128))
    return nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def suggest(trial: optuna.Trial) -> Params:
    return {"lr": trial.suggest_float("lr", *LR, log=True)}


def draw(seed: int, trials: int) -> tuple[list[Params], int | None]:
    """The seed's trials (RandomSampler), and the position given lr 3.0, if any was."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    params = [suggest(study.ask()) for _ in range(trials)]
    if any(p["lr"] >= SURE_DIVERGENCE for p in params[:-1]):
        return params, None
    forced = random.Random(seed).randrange(trials - 1)
    params[forced] = {"lr": LR[1]}
    return params, forced


@dataclass
class Sweep:
    """One method's Optuna study over a seed's trials, run a trial at a time."""

    method: str
    task: Task
    seed: int
    workdir: Path
    curves: list[Curve] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)  # each trial's whole wall-clock

    def __post_init__(self) -> None:
        self.study = optuna.create_study(
            study_name=f"digits-lr-{self.method}-s{self.seed}", direction="maximize"
        )
        self.objective: Callable[[optuna.Trial], Any]
        if self.method == "plain":
            self.objective = lambda trial: self._train(trial, None)
        else:
            config = RecycleConfig(
                registry=f"sqlite:///{self.workdir / 'registry.db'}",
                blobs=str(self.workdir / "teachers"),
            )
            self.objective = recycle(self._train, config=config, metric="accuracy")

    def step(self, params: Params) -> Curve:
        self.study.enqueue_trial(params)
        began = time.perf_counter()
        self.study.optimize(self.objective, n_trials=1)
        self.costs.append(time.perf_counter() - began)
        trial = self.study.trials[-1]
        if trial.state != optuna.trial.TrialState.COMPLETE:
            raise RuntimeError(f"{self.method} trial {trial.number} ended {trial.state.name}")
        curve = self.curves[-1]
        curve.kd = dict(trial.user_attrs.get("recycler", {}))
        return curve

    def _train(self, trial: optuna.Trial, kd: Distiller | None) -> float:
        def on_epoch(epoch: int, accuracy: float) -> None:
            trial.report(accuracy, epoch)  # as a user would (recycle() passes it on)

        seed = 1000 * self.seed + trial.number  # both methods: the same init and data order
        curve = train_curve(
            self.task, suggest(trial), seed=seed, label=self.method, kd=kd, on_epoch=on_epoch
        )
        curve.model = None
        self.curves.append(curve)
        return curve.final


def _curve_json(curve: Curve) -> dict[str, Any]:
    """A curve's JSON without ``at`` (sweep times: the trial's ``cost`` says it whole)."""
    return {k: v for k, v in curve.to_json().items() if k != "at"}


@dataclass
class SeedResult:
    """One seed: both sweeps' curves (recycled ones carry their recycler attrs) and costs."""

    seed: int
    params: list[Params]
    forced: int | None
    curves: dict[str, list[Curve]]
    costs: dict[str, list[float]]

    def best(self, method: str) -> float:
        return max(c.final for c in self.curves[method])

    @property
    def diff(self) -> float:
        return self.best("recycled") - self.best("plain")

    @property
    def time_ratio(self) -> float:
        return sum(self.costs["recycled"]) / sum(self.costs["plain"])

    def diverged(self, method: str) -> list[int]:
        return [i for i, c in enumerate(self.curves[method]) if c.final < DIVERGED_BELOW]

    def teacher_trials(self) -> dict[int, int]:
        """Teacher id -> the recycled trial that registered it."""
        return {
            c.kd["teacher_id"]: i
            for i, c in enumerate(self.curves["recycled"])
            if c.kd.get("teacher_id") is not None
        }

    def taught_by(self, i: int) -> list[int]:
        """Teacher ids in recycled trial ``i``'s final pool or among those it used."""
        kd = self.curves["recycled"][i].kd
        return sorted({*kd.get("pool", []), *kd.get("teachers_used", [])})

    def kept_diverged(self) -> list[dict[str, Any]]:
        """Every (trial, teacher) where a diverged teacher was in the pool or used."""
        owner, finals = self.teacher_trials(), [c.final for c in self.curves["recycled"]]
        return [
            {"trial": i, "teacher_id": tid, "teacher_trial": owner.get(tid), "metric": metric}
            for i in range(len(self.params))
            for tid in self.taught_by(i)
            if (metric := finals[owner[tid]] if tid in owner else None) is None
            or metric < DIVERGED_BELOW  # a teacher of no known trial counts too
        ]

    def to_json(self) -> dict[str, Any]:
        trials = [
            {
                "number": i,
                "lr": p["lr"],
                "forced": i == self.forced,
                **{
                    m: {
                        **_curve_json(self.curves[m][i]),
                        "final": self.curves[m][i].final,
                        "cost": self.costs[m][i],
                        "diverged": self.curves[m][i].final < DIVERGED_BELOW,
                    }
                    for m in METHODS
                },
            }
            for i, p in enumerate(self.params)
        ]
        return {
            "seed": self.seed,
            "forced_at": self.forced,
            "best": {m: self.best(m) for m in METHODS},
            "diff": self.diff,
            "seconds": {m: sum(self.costs[m]) for m in METHODS},
            "time_ratio": self.time_ratio,
            "teacher_trials": self.teacher_trials(),
            "diverged_teachers_kept": self.kept_diverged(),
            "trials": trials,
        }


def run_seed(task: Task, seed: int, trials: int, progress: Progress) -> SeedResult:
    params, forced = draw(seed, trials)
    with tempfile.TemporaryDirectory(prefix="recycler-second-") as scratch:
        sweeps = {m: Sweep(m, task, seed, Path(scratch)) for m in METHODS}
        for i, p in enumerate(params):
            for sweep in sweeps.values():  # interleaved: the machine's moods hit both alike
                curve = sweep.step(p)
                pool = curve.kd.get("pool", "—") if sweep.method == "recycled" else "—"
                progress(
                    f"seed {seed} trial {i + 1}/{trials} lr {p['lr']:.3f} {sweep.method:<8} "
                    f"{curve.final:.3f} in {sweep.costs[-1]:.1f} s; pool {pool}"
                )
    return SeedResult(
        seed,
        params,
        forced,
        {m: s.curves for m, s in sweeps.items()},
        {m: s.costs for m, s in sweeps.items()},
    )


def warm_up(task: Task) -> None:
    """Untimed two-trial sweeps of 1 epoch: one-time costs (imports, Optuna's first study,
    the registry's first use) fall in no timed sweep."""
    small = Task(task.name, task.data, task.build, 1, task.batch_size)
    with tempfile.TemporaryDirectory(prefix="recycler-warm-") as scratch:
        for method in METHODS:
            sweep = Sweep(method, small, 0, Path(scratch))
            for _ in range(2):
                sweep.step({"lr": 0.1})


# -- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    diff: Summary
    se: float
    kept: int

    @classmethod
    def of(cls, results: Sequence[SeedResult]) -> Verdict:
        diff = Summary.of_values(r.diff for r in results)
        se = (diff.std or 0.0) / math.sqrt(diff.n)
        return cls(diff, se, sum(len(r.kept_diverged()) for r in results))

    @property
    def within_noise(self) -> bool:
        return (self.diff.mean or 0.0) >= -NOISE_SE * self.se - 1e-12

    @property
    def text(self) -> str:
        return "within noise or above" if self.within_noise else "BELOW plain"

    def to_json(self) -> dict[str, Any]:
        return {
            "diff": self.diff.to_json(),
            "se": self.se,
            "rule": f"within noise or above if mean diff >= -{NOISE_SE:g} standard errors",
            "verdict": self.text,
            "diverged_teachers_kept": self.kept,
        }


def _trials(ids: Sequence[int], owner: Mapping[int, int]) -> str:
    return ", ".join(f"t{owner[t]}" if t in owner else f"id {t}?" for t in ids) or "—"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def seed_table(results: Sequence[SeedResult]) -> str:
    rows = [
        (
            str(r.seed),
            _pct(r.best("plain")),
            _pct(r.best("recycled")),
            f"{100 * r.diff:+.2f}",
            f"{r.time_ratio:.2f}x",
            ", ".join(f"t{i}" for i in r.diverged("plain")) or "—",
            ", ".join(f"t{i}" for i in r.diverged("recycled")) or "—",
            "—" if r.forced is None else f"t{r.forced}",
        )
        for r in results
    ]
    header = ("seed", "plain best %", "recycled best %", "diff (points)", "wall-clock ratio")
    return markdown_table(
        (*header, "diverged (plain)", "diverged (recycled)", "lr 3.0 forced at"), rows
    )


def trial_table(results: Sequence[SeedResult]) -> str:
    rows = []
    for r in results:
        owner = r.teacher_trials()
        for i, p in enumerate(r.params):
            plain, mine = r.curves["plain"][i], r.curves["recycled"][i]
            notes = [m for m in METHODS if r.curves[m][i].final < DIVERGED_BELOW]
            rows.append(
                (
                    str(r.seed),
                    f"t{i}" + (" (forced)" if i == r.forced else ""),
                    f"{p['lr']:.3f}",
                    _pct(plain.final),
                    _pct(mine.final),
                    _trials(mine.kd.get("pool", []), owner),
                    _trials(mine.kd.get("teachers_used", []), owner),
                    str(mine.kd.get("steps_distilled", 0)),
                    f"{r.costs['plain'][i]:.1f} / {r.costs['recycled'][i]:.1f}",
                    ("diverged: " + ", ".join(notes)) if notes else "",
                )
            )
    header = ("seed", "trial", "lr", "plain %", "recycled %", "pool (final)", "teachers used")
    return markdown_table((*header, "steps distilled", "seconds plain / recycled", ""), rows)


def report(results: Sequence[SeedResult], task: str, args: argparse.Namespace, took: str) -> str:
    verdict = Verdict.of(results)
    ratio = Summary.of_values(r.time_ratio for r in results)
    forced = [r.seed for r in results if r.forced is not None]
    lines = [
        "# Second task: recycler's defaults on digits with an unnormalised MLP, "
        "a sweep with diverging trials",
        "",
        f"{task}; lr log-uniform in [{LR[0]}, {LR[1]}] (SGD, momentum 0.9, cosine decay), "
        f"{args.trials} trials per seed by Optuna's RandomSampler; seeds "
        f"{', '.join(str(r.seed) for r in results)}; total run {took}.",
        f"Machine: {machine_line(machine())}.",
        "",
        "`plain`: no recycler. `recycled`: `recycle(objective, config=RecycleConfig(registry=..., "
        'blobs=...), metric="accuracy")`, every other option at '
        "recycler's defaults. Same "
        "trials, same order, same initialisation and data order, interleaved.",
        f"Seeds whose draw had no lr >= {SURE_DIVERGENCE} before the last trial got lr "
        f"{LR[1]} at a seeded position: {', '.join(map(str, forced)) or 'none'}.",
        "",
        "## Verdict",
        "",
        f"- Best final accuracy, recycled - plain (paired per seed): "
        f"{verdict.diff.text(100.0, 2, ' points')}, standard error "
        f"{100 * verdict.se:.2f}; rule: within noise or above if the mean difference is >= "
        f"-{NOISE_SE:g} standard errors: **{verdict.text}**",
        f"- Diverged teachers kept in a pool: {verdict.kept} (diverged: final accuracy < "
        f"{DIVERGED_BELOW:.2f}, not a tenth of the way from chance {CHANCE} to perfect; checked "
        "over every recycled trial's final pool and every teacher it used)",
        f"- Wall-clock, recycled sweep / plain sweep: {ratio.text(digits=2, unit='x')} "
        "(each trial's whole wall-clock, teacher loading and registration included)",
        "",
        "## Per seed",
        "",
        seed_table(results),
        "",
        "## Per trial",
        "",
        "Pools and teachers as the recycled trials (`tN`) that registered them.",
        "",
        trial_table(results),
    ]
    if args.quick:
        lines += ["", "(--quick: a smoke run; its numbers only show the report's shape.)"]
    return "\n".join(lines)


def plot(results: Sequence[SeedResult], path: Path) -> Path:
    """Best final accuracy so far against the trial number, one line per seed and method."""

    def best_so_far(curves: Sequence[Curve]) -> tuple[list[float], list[float]]:
        finals = [c.final for c in curves]
        return [float(i + 1) for i in range(len(finals))], [
            max(finals[: i + 1]) for i in range(len(finals))
        ]

    series = {m: [best_so_far(r.curves[m]) for r in results] for m in METHODS}
    return plot_lines(path, {"digits lr sweep: best final accuracy so far": series}, xlabel="trial")


def main(argv: Sequence[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="a small run (seconds), e.g. for tests")
    ap.add_argument("--seeds", type=int, default=None, help="seeds (default 5; --quick 2)")
    ap.add_argument("--trials", type=int, default=None, help="trials per seed (default 6; 3)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 40; 20)")
    ap.add_argument("--out", type=Path, default=Path(f"bench-results/{STEM}"), help="output folder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings)")
    args = ap.parse_args(argv)
    for name in ("seeds", "epochs", "threads"):
        if (value := getattr(args, name)) is not None and value < 1:
            ap.error(f"--{name} must be >= 1, got {value}")
    if args.trials is not None and args.trials < 2:
        ap.error(f"--trials must be >= 2 (a sweep recycles earlier trials), got {args.trials}")
    args.seeds = args.seeds or (2 if args.quick else 5)
    args.trials = args.trials or (3 if args.quick else 6)
    args.epochs = args.epochs or (20 if args.quick else 40)
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = Task("digits", load_digits_splits(), mlp, args.epochs, batch_size=50)
    steps = math.ceil(len(task.data[0].y) / task.batch_size) * task.epochs
    described = f"{task.describe()} ({steps} steps per trial), MLP 64-128-128-10"
    progress = Progress()
    progress(described)
    warm_up(task)
    start = time.perf_counter()
    results = [run_seed(task, seed, args.trials, progress) for seed in range(args.seeds)]
    took = time.perf_counter() - start
    text = report(results, described, args, f"{took / 60:.1f} min")
    summary = {
        **Verdict.of(results).to_json(),
        "time_ratio": Summary.of_values(r.time_ratio for r in results).to_json(),
    }
    data = run_record(args, described, took, diverged_below=DIVERGED_BELOW, summary=summary,
                      seeds=[r.to_json() for r in results])  # fmt: skip
    files = write_outputs(args.out, STEM, text, data)
    files.append(plot(results, args.out / f"{STEM}.png"))
    print(text)
    print("\nwrote " + ", ".join(map(str, files)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
