"""Does recycling save wall-clock on a whole sweep? The same sweep run many ways, side by side.

Two sweeps on MNIST-1D (generated locally) with the demo's CNN, on the CPU, one trial at a time:
``lr`` (learning rate) and ``width-lr-wd`` (width, learning rate, weight decay). Trials are in
KD's regime: 60 epochs of 10 steps (1,000 samples, batch 100), 600 steps. Per seed, the trials'
hyperparameters are drawn once by Optuna's RandomSampler and every method runs those same
trials in the same order, each as a real Optuna study (recycled ones through
:func:`recycler.integrations.optuna.recycle`, with recycler's own ``budget`` and ``init``):

  plain       each trial from scratch, the whole plan
  kd          KD from the 5 best earlier trials (one sampled per step), the whole plan
  kd-half     the same, a trial with a pool trains half its plan (budget.scale 0.5)
  kd-auto     the same, the fraction chosen from the study's evidence (budget.scale auto)
  warm-start  no KD: each trial starts from the best compatible earlier trial's weights
              (init from best, shrink 1, perturb 0: the papers' fine-tuning baseline)
  sp-kd-half  shrink-and-perturb from the best earlier trial (0.5·θ + 0.1·θ_fresh) + KD, at
              half the plan (budget.scale 0.5)
  sp-kd-auto  the same, budget auto within [0.25, 0.5]
  sp-kd       the same, the whole plan (only with --methods: it costs as much as kd)
  pbt         Ray Tune Population Based Training over the same population (members keep
              width 32: PBT cannot change an architecture mid-run), as a reference;
              --no-pbt leaves it out, --pbt-seeds N runs it on the first N seeds only

The teacher-logit cache is on wherever it is exact (fixed inputs per sample id: MNIST-1D,
no augmentation). The methods' trials are interleaved (trial 1 of each, then trial 2 of each,
...) so the machine's moods hit all alike. Cost is each trial's whole wall-clock (model
build, plan, teacher loading, teacher forwards, evaluation and registration included).
Reported per seed and as mean ± standard deviation over seeds: the wall-clock to reach the
plain sweep's best final accuracy as a ratio to plain's, the best accuracy at 25/50/75/100% of
plain's cost, per trial the epochs trained and seconds per epoch, and the issue's targets.
Outputs: sweep_speedup.md, .json and .png (best accuracy so far against wall-clock).

    python examples/benchmarks/sweep_speedup.py           # 5 seeds x 2 sweeps x 8 methods
    python examples/benchmarks/sweep_speedup.py --quick   # 2 seeds, 3 trials of 6 epochs,
                                                          # PBT on seed 0

(see README.md "Results" for how long each takes on this project's 2-core CPU machine.)
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from _harness import (
    Curve,
    OneLineParser,
    Params,
    Progress,
    Summary,
    Task,
    add_common_args,
    machine,
    machine_line,
    make_task,
    markdown_table,
    parse_common,
    pct,
    plot_lines,
    run_record,
    train_curve,
    write_json,
    write_outputs,
)

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from recycler.integrations.optuna import recycle

Trace = list[tuple[float, float]]  # (cumulative sweep seconds, test accuracy) per epoch
SP = {"from": "best", "shrink": 0.5, "perturb": 0.1}  # shrink-and-perturb (Ash & Adams 2020)


@dataclass(frozen=True)
class Spec:
    """A method: what it does, and its RecycleConfig options (None: no recycler at all)."""

    what: str
    options: Mapping[str, Any] | None = None
    kd: bool = True  # whether it distils (the candidates for "best recycled mode")


METHODS: dict[str, Spec] = {
    "plain": Spec("each trial from scratch, the whole plan", None, kd=False),
    "kd": Spec("KD, sample 1 of the 5 best earlier trials per step; the whole plan", {}),
    "kd-half": Spec("KD; a trial with a pool trains half its plan", {"budget": {"scale": 0.5}}),
    "kd-auto": Spec("KD; budget auto", {"budget": {"scale": "auto"}}),
    "warm-start": Spec(
        "no KD; init from the best earlier trial (shrink 1, perturb 0)",
        {"init": {"from": "best"}, "distill": {"weight": 0.0}},
        kd=False,
    ),
    "sp-kd": Spec("shrink-and-perturb (0.5, 0.1) from the best + KD; the whole plan", {"init": SP}),
    "sp-kd-half": Spec(
        "shrink-and-perturb + KD; half the plan", {"init": SP, "budget": {"scale": 0.5}}
    ),
    "sp-kd-auto": Spec(
        "shrink-and-perturb + KD; budget auto within [0.25, 0.5]",
        {"init": SP, "budget": {"scale": "auto", "min": 0.25, "max": 0.5}},
    ),
    "pbt": Spec("Ray Tune PBT over the same population (reference)", None, kd=False),
}
#: What runs without --methods (``sp-kd``, the whole plan with init and KD, on request).
DEFAULT_METHODS = [m for m in METHODS if m != "sp-kd"]
BUDGETS = (0.25, 0.5, 0.75, 1.0)  # fractions of the plain sweep's total cost
LR = (0.01, 0.5)
WD = (1e-5, 1e-2)
WIDTHS = (16, 32, 48)
SWEEPS: dict[str, Callable[[optuna.Trial], Params]] = {
    "lr": lambda t: {"lr": t.suggest_float("lr", *LR, log=True)},
    "width-lr-wd": lambda t: {
        "channels": t.suggest_categorical("channels", WIDTHS),
        "lr": t.suggest_float("lr", *LR, log=True),
        "weight_decay": t.suggest_float("weight_decay", *WD, log=True),
    },
}
# the targets for the best recycled mode
TARGET_RATIO, STRETCH_RATIO, TARGET_SEEDS, TARGET_GAIN = 0.6, 0.4, 4, 0.01


def recycle_config(
    method: str, seed: int, workdir: Path, *, cache: bool, chance: float
) -> RecycleConfig:
    """A recycled method's configuration (one registry per seed; each method its own study).

    The common part: a pool of the 5 best earlier trials, one sampled per step, seeded; the
    teacher-logit cache when it is exact (``cache``: no augmentation); the task's chance
    accuracy for the quality gate (given, so that ``plan()``'s budget and init decisions,
    made before the first step shows the number of classes, see the same pool as KD).
    Then the method's own options.
    """
    options = METHODS[method].options
    assert options is not None, method
    base: dict[str, Any] = {
        "registry": f"sqlite:///{workdir / 'registry.db'}",
        "blobs": str(workdir / "teachers"),
        "teachers": {"pool": 5, "policy": "best", "seed": seed, "chance_metric": chance},
        "distill": {"cache": cache},
    }
    for section, values in options.items():
        base[section] = {**base.get(section, {}), **values}
    return RecycleConfig.from_dict(base)


def draw(sweep: str, seed: int, trials: int) -> list[Params]:
    """The sweep's trials for this seed, drawn by Optuna's RandomSampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [SWEEPS[sweep](study.ask()) for _ in range(trials)]


@dataclass
class Method:
    """One method's Optuna study over a sweep's trials, run a trial at a time."""

    name: str
    task: Task
    sweep: str
    seed: int
    workdir: Path
    curves: list[Curve] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)  # each trial's whole wall-clock
    cpu_costs: list[float] = field(default_factory=list)  # and its process CPU seconds
    cpu_at: list[list[float]] = field(default_factory=list)  # CPU seconds at each epoch's end

    def __post_init__(self) -> None:
        self.study = optuna.create_study(
            study_name=f"{self.sweep}-{self.name}-s{self.seed}",
            direction="maximize",
            sampler=optuna.samplers.RandomSampler(seed=self.seed),
        )
        self._began = self._began_cpu = 0.0
        self.objective: Callable[[optuna.Trial], Any]
        if METHODS[self.name].options is None:
            self.objective = lambda trial: self._train(trial, None)
        else:
            cache = self.task.augment is None  # exact: the same inputs for a sample id
            config = recycle_config(
                self.name, self.seed, self.workdir, cache=cache, chance=self.task.chance
            )
            self.objective = recycle(self._train, config=config, metric="accuracy")

    def step(self, params: Params) -> Curve:
        self.study.enqueue_trial(params)
        self._began, self._began_cpu = time.perf_counter(), time.process_time()
        self.study.optimize(self.objective, n_trials=1)
        self.costs.append(time.perf_counter() - self._began)
        self.cpu_costs.append(time.process_time() - self._began_cpu)
        curve = self.curves[-1]
        trial = self.study.trials[-1]
        if trial.state != optuna.trial.TrialState.COMPLETE:
            raise RuntimeError(f"{self.name} trial {trial.number} ended {trial.state.name}")
        curve.kd = dict(trial.user_attrs.get("recycler", curve.kd))
        return curve

    def _train(self, trial: optuna.Trial, kd: Distiller | None) -> float:
        params = SWEEPS[self.sweep](trial)
        seed = 1000 * self.seed + trial.number
        at: list[float] = []
        cpu_at: list[float] = []

        def on_epoch(epoch: int, accuracy: float) -> None:
            at.append(time.perf_counter() - self._began)
            cpu_at.append(time.process_time() - self._began_cpu)
            trial.report(accuracy, epoch)  # recycle() passes it on: budget auto's evidence

        curve = train_curve(self.task, params, seed=seed, label=self.name, kd=kd, on_epoch=on_epoch)
        curve.at = at
        self.curves.append(curve)
        self.cpu_at.append(cpu_at)
        return curve.final

    def trace(self, cpu: bool = False) -> Trace:
        """(sweep seconds, accuracy) per epoch: wall-clock, or the process's CPU seconds."""
        out, offset = [], 0.0
        costs = self.cpu_costs if cpu else self.costs
        for i, (curve, cost) in enumerate(zip(self.curves, costs, strict=True)):
            at = self.cpu_at[i] if cpu else curve.at
            out += [(offset + s, a) for s, a in zip(at, curve.accuracy, strict=True)]
            offset += cost
        return out


def run_pbt(task: Task, trials: list[Params], seed: int, workdir: Path, ip: str) -> Trace:
    """PBT over the sweep's population, on a local Ray started for it and stopped after
    (a Ray left running for the whole benchmark would tie its fate to Ray's)."""
    from _pbt import pbt_sweep, start_ray, stop_ray

    population = [
        {
            "lr": p["lr"],
            "weight_decay": p.get("weight_decay", 5e-4),
            "channels": 32,
            "seed": 1000 * seed + i,
        }
        for i, p in enumerate(trials)
    ]
    temp = start_ray(ip)
    try:
        return pbt_sweep(
            population,
            task,
            bounds={"lr": LR, "weight_decay": WD},
            seed=seed,
            workdir=workdir,
        )
    finally:
        stop_ray(temp)


# -- measures over traces and curves --------------------------------------------------------


def best_within(trace: Trace, budget: float) -> float | None:
    """Best accuracy reported within ``budget`` seconds of the sweep's cost."""
    got = [a for s, a in trace if s <= budget]
    return max(got) if got else None


def cost_to(trace: Trace, target: float) -> float | None:
    """The sweep's cost when an accuracy first reached ``target``."""
    return next((s for s, a in trace if a >= target), None)


@dataclass
class SeedResult:
    """One seed of one sweep: each method's trace, and the sequential methods' curves."""

    sweep: str
    seed: int
    params: list[Params]
    traces: dict[str, Trace]
    curves: dict[str, list[Curve]]
    costs: dict[str, list[float]]
    cpu_traces: dict[str, Trace]  # the same in CPU seconds (PBT's trace is CPU seconds already)

    @property
    def target(self) -> float:
        """The plain sweep's best final accuracy."""
        return max(c.final for c in self.curves["plain"])

    @property
    def plain_cost(self) -> float:
        """The plain sweep's total cost."""
        return sum(self.costs["plain"])

    def cost(self, method: str) -> float:
        """The method's total cost (PBT: its members' seconds)."""
        if method in self.costs:
            return sum(self.costs[method])
        return self.traces[method][-1][0]

    def ratio(self, method: str, cpu: bool = False) -> float | None:
        """Wall-clock (or CPU seconds) to plain's best final accuracy, over plain's (None:
        never reached)."""
        traces = self.cpu_traces if cpu else self.traces
        mine = cost_to(traces[method], self.target)
        plain = cost_to(traces["plain"], self.target)
        return None if mine is None or not plain else mine / plain

    def best_at(self, method: str, fraction: float) -> float | None:
        return best_within(self.traces[method], fraction * self.plain_cost)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeedResult:
        """Back from :meth:`to_json` (for --merge)."""

        def trace(points: Sequence[Sequence[float]]) -> Trace:
            return [(float(s), float(a)) for s, a in points]

        curves = {
            m: [
                Curve(
                    accuracy=c["accuracy"],
                    seconds=c["seconds"],
                    label=c["label"],
                    seed=c["seed"],
                    params=c["params"],
                    kd=c["kd"],
                    at=c["at"],
                )
                for c in cs
            ]
            for m, cs in data["curves"].items()
        }
        return cls(
            data["sweep"],
            int(data["seed"]),
            list(data["params"]),
            {m: trace(t) for m, t in data["traces"].items()},
            curves,
            {m: [float(c) for c in cs] for m, cs in data["costs"].items()},
            {m: trace(t) for m, t in data["cpu_traces"].items()},
        )

    def to_json(self) -> dict[str, Any]:
        """Everything measured, at full precision (a merged report equals the run's own)."""
        return {
            "sweep": self.sweep,
            "seed": self.seed,
            "params": self.params,
            "target": self.target,
            "traces": self.traces,
            "costs": self.costs,
            "cpu_traces": self.cpu_traces,
            "ratios": {m: self.ratio(m) for m in self.traces},
            "cpu_ratios": {m: self.ratio(m, cpu=True) for m in self.cpu_traces},
            "curves": {m: [c.to_json() for c in cs] for m, cs in self.curves.items()},
        }


def run_seed(
    task: Task, sweep: str, seed: int, args: argparse.Namespace, progress: Progress
) -> SeedResult:
    trials = draw(sweep, seed, args.trials)
    sequential = [m for m in args.methods if m != "pbt"]
    with tempfile.TemporaryDirectory(prefix="recycler-sweep-") as scratch:
        work = Path(scratch)
        methods = {m: Method(m, task, sweep, seed, work) for m in sequential}
        for i, params in enumerate(trials):
            for method in methods.values():  # interleaved: trial i of every method
                curve = method.step(params)
                progress(
                    f"{sweep} seed {seed} trial {i + 1}/{len(trials)} {method.name:<10} "
                    f"{curve.final:.3f} after {len(curve.accuracy)} ep in "
                    f"{method.costs[-1]:.1f} s"
                )
        traces = {m: method.trace() for m, method in methods.items()}
        cpu_traces = {m: method.trace(cpu=True) for m, method in methods.items()}
        if "pbt" in args.methods and seed < (args.first_seed or 0) + args.pbt_seeds:
            traces["pbt"] = cpu_traces["pbt"] = run_pbt(task, trials, seed, work, args.ray_ip)
            progress(f"{sweep} seed {seed} pbt        best {max(a for _, a in traces['pbt']):.3f}")
    curves = {m: method.curves for m, method in methods.items()}
    for cs in curves.values():
        for c in cs:
            c.model = None
    costs = {m: method.costs for m, method in methods.items()}
    return SeedResult(sweep, seed, trials, traces, curves, costs, cpu_traces)


# -- the report ---------------------------------------------------------------------------


def ratio_text(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}x"


def having(results: Sequence[SeedResult], method: str) -> list[SeedResult]:
    """The seeds that ran ``method`` (PBT may run on the first few only: --pbt-seeds)."""
    return [r for r in results if method in r.traces]


def seed_table(results: Sequence[SeedResult], methods: Sequence[str]) -> str:
    """Per seed: plain's best, when plain reached it, and each method's wall-clock ratio to
    reach it (—: not run). Trial 1 is the same run in every method (no teacher yet): a seed
    whose plain sweep got there in trial 1 gives every method a ratio of 1 up to timing noise.
    """
    rows = []
    for r in results:
        plain_at = cost_to(r.traces["plain"], r.target)
        trial = next(
            i for i, c in enumerate(r.curves["plain"], 1) if any(a >= r.target for a in c.accuracy)
        )
        cells = [ratio_text(r.ratio(m)) if m in r.traces else "—" for m in methods if m != "plain"]
        reached = f"{plain_at or 0:.1f} s (trial {trial})"
        rows.append([str(r.seed), f"{100 * r.target:.1f}", reached, *cells])
    header = ["seed", "plain's best", "plain reached it", *(m for m in methods if m != "plain")]
    return markdown_table(header, rows)


def seed_best_table(results: Sequence[SeedResult], methods: Sequence[str]) -> str:
    """Per seed: each method's best accuracy within plain's total cost."""
    rows = [
        [
            str(r.seed),
            *(_pct(r.best_at(m, 1.0) if m in r.traces else None) for m in methods),
            f"{r.plain_cost:.0f} s",
        ]
        for r in results
    ]
    return markdown_table(["seed", *methods, "plain's cost"], rows)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def equal_cost_table(results: Sequence[SeedResult], methods: Sequence[str]) -> str:
    """Best accuracy within fractions of the plain sweep's total cost, per method."""
    rows = []
    for m in methods:
        ran = having(results, m)
        cells = [pct(r.best_at(m, f) for r in ran) for f in BUDGETS]
        total = Summary.of_values(r.cost(m) / r.plain_cost for r in ran)
        rows.append([m, *cells, total.text(digits=2, unit="x")])
    header = ["method", *(f"best at {f:.0%} of plain's cost" for f in BUDGETS), "total cost"]
    return markdown_table(header, rows)


def target_table(results: Sequence[SeedResult], methods: Sequence[str]) -> str:
    """Wall-clock to the plain sweep's best final accuracy, as a ratio to plain's.

    The last column measures the same in the process's CPU seconds: on a machine shared with
    other jobs it moves less than wall-clock does (on a dedicated one the two agree).
    """
    rows = []
    for m in methods:
        ran = having(results, m)
        ratios = [r.ratio(m) for r in ran]
        sooner = sum(1 for x in ratios if x is not None and x < 1.0)
        rows.append(
            [
                m,
                Summary.of_values(ratios).text(digits=2, unit="x"),
                f"{sum(x is not None for x in ratios)}/{len(ratios)}",
                f"{sooner}/{len(ratios)}",
                Summary.of_values(r.ratio(m, cpu=True) for r in ran).text(digits=2, unit="x"),
            ]
        )
    header = [
        "method",
        "wall-clock to plain's best / plain's",
        "seeds reached",
        "seeds sooner",
        "the same in CPU seconds",
    ]
    return markdown_table(header, rows)


def per_trial_table(results: Sequence[SeedResult], methods: Sequence[str]) -> str:
    """Per trial: epochs trained, final accuracy, seconds per epoch vs plain, init parents."""
    rows = []
    for m in methods:
        epochs, finals, per_epoch, parents, distilled = [], [], [], [], []
        for r in results:
            plain = r.curves["plain"]
            for i, curve in enumerate(r.curves[m]):
                epochs.append(float(len(curve.accuracy)))
                finals.append(curve.final)
                mine = r.costs[m][i] / len(curve.accuracy)
                per_epoch.append(mine / (r.costs["plain"][i] / len(plain[i].accuracy)))
                parents.append(1.0 if curve.kd.get("init_parent") is not None else 0.0)
                distilled.append(1.0 if curve.kd.get("steps_distilled") else 0.0)
        n = len(parents)
        rows.append(
            [
                m,
                Summary.of_values(epochs).text(),
                pct(finals),
                Summary.of_values(per_epoch).text(digits=2, unit="x"),
                f"{int(sum(distilled))}/{n}",
                f"{int(sum(parents))}/{n}",
            ]
        )
    header = [
        "method",
        "epochs trained",
        "trial final accuracy",
        "seconds per epoch vs plain",
        "trials distilled",
        "trials warm-started",
    ]
    return markdown_table(header, rows)


@dataclass(frozen=True)
class Verdict:
    what: str
    measured: str
    met: bool

    def line(self) -> str:
        return f"- {'met' if self.met else 'MISSED'}: {self.what}: {self.measured}"


def mean_ratio(results: Sequence[SeedResult], method: str) -> float:
    """Mean ratio over seeds; a seed that never reached plain's best makes it infinite."""
    ratios = [r.ratio(method) for r in results]
    if any(x is None for x in ratios):
        return math.inf
    return sum(x for x in ratios if x is not None) / len(ratios)


def ranking(
    all_results: Mapping[str, Sequence[SeedResult]], methods: Sequence[str]
) -> list[tuple[str, int, int, float]]:
    """The KD modes, best first: (mode, targets met, targets, mean ratio on ``lr``).

    Most targets met first; then the lowest mean wall-clock ratio to plain's best on the
    ``lr`` sweep (else the first sweep), a seed that never reached it counting as infinite.
    """
    results = all_results.get("lr") or next(iter(all_results.values()))
    rows = []
    for m in methods:
        if METHODS[m].kd:
            got = verdicts(all_results, methods, m)
            rows.append((m, sum(v.met for v in got), len(got), mean_ratio(results, m)))
    return sorted(rows, key=lambda row: (-row[1], row[3]))


def verdicts(
    all_results: Mapping[str, Sequence[SeedResult]], methods: Sequence[str], mode: str
) -> list[Verdict]:
    """The issue's targets for ``mode``, each met or missed with the measured value."""
    out = []
    if "lr" in all_results:
        results = all_results["lr"]
        mean = mean_ratio(results, mode)
        shown = Summary.of_values(r.ratio(mode) for r in results).text(digits=2, unit="x")
        out.append(
            Verdict(
                f"`lr`: reaches plain's best at <= {TARGET_RATIO}x plain's wall-clock (mean)",
                shown,
                mean <= TARGET_RATIO,
            )
        )
        out.append(
            Verdict(f"`lr` (stretch): <= {STRETCH_RATIO}x (mean)", shown, mean <= STRETCH_RATIO)
        )
    for sweep, results in all_results.items():
        ratios = [r.ratio(mode) for r in results]
        sooner = sum(1 for x in ratios if x is not None and x < 1.0)
        need = math.ceil(TARGET_SEEDS * len(results) / 5)
        out.append(
            Verdict(
                f"`{sweep}`: sooner than plain in >= {need} of {len(results)} seeds",
                f"{sooner} of {len(results)} ({', '.join(ratio_text(x) for x in ratios)})",
                sooner >= need,
            )
        )
        mine = Summary.of_values(r.best_at(mode, 1.0) for r in results)
        plain = Summary.of_values(r.best_at("plain", 1.0) for r in results)
        if mine.mean is not None and plain.mean is not None:
            gain = mine.mean - plain.mean
            out.append(
                Verdict(
                    f"`{sweep}`: at 100% of plain's cost >= plain + {100 * TARGET_GAIN:.0f} point",
                    f"{mine.text(100.0)} vs plain {plain.text(100.0)} ({100 * gain:+.1f} points)",
                    gain >= TARGET_GAIN - 1e-9,
                )
            )
        if "warm-start" in methods:
            warm = Summary.of_values(r.best_at("warm-start", 1.0) for r in results)
            if mine.mean is not None and warm.mean is not None:
                gap = mine.mean - warm.mean
                out.append(
                    Verdict(
                        f"`{sweep}`: at 100% of plain's cost >= warm-start alone",
                        f"{mine.text(100.0)} vs warm-start {warm.text(100.0)} "
                        f"({100 * gap:+.1f} points)",
                        gap >= -1e-9,
                    )
                )
    return out


def targets_block(all_results: Mapping[str, Sequence[SeedResult]], methods: Sequence[str]) -> str:
    ranked = ranking(all_results, methods)
    if not ranked:
        return "## Targets (issue 13)\n\nNo KD mode ran: nothing to judge."
    mode = ranked[0][0]
    lines = [
        "## Targets (issue 13)",
        "",
        f"Best recycled mode: **{mode}** ({METHODS[mode].what}): the KD mode that meets the "
        "most targets, then the lowest mean wall-clock ratio to plain's best on the `lr` "
        "sweep (a seed that never reached it counts as infinite).",
        "",
    ]
    lines += [v.line() for v in verdicts(all_results, methods, mode)]
    others = ", ".join(
        f"{m} {met}/{of} ({'never' if math.isinf(r) else f'{r:.2f}x'})" for m, met, of, r in ranked
    )
    lines += ["", f"Targets met per KD mode (mean ratio on `lr`): {others}."]
    return "\n".join(lines)


def report(
    all_results: Mapping[str, list[SeedResult]], task: str, args: argparse.Namespace, took: str
) -> str:
    """The markdown report; ``task``: what was trained; ``took``: how long it ran."""
    methods = list(args.methods)
    sequential = [m for m in methods if m != "pbt"]
    seed_list = ", ".join(
        str(s) for s in sorted({r.seed for rs in all_results.values() for r in rs})
    )
    parts = [
        "# Sweep speed-up: plain vs recycled (KD, budgets, weight recycling) vs PBT",
        "",
        f"{task}; {args.trials} trials per sweep; seeds {seed_list}; total run {took}.",
        f"Machine: {machine_line(machine())}.",
        "Means ± standard deviation over seeds; `(n/N)`: only n of N seeds got there. "
        "Cost: each trial's whole wall-clock, teachers' loading and forwards included; PBT: "
        "its members' CPU seconds.",
        "",
        "Methods:",
        "",
        *(f"- `{m}`: {METHODS[m].what}" for m in methods),
        "",
        targets_block(all_results, methods),
    ]
    if args.quick:
        parts += [
            "",
            "(--quick: trials far too short for KD, budgets or init to pay; these verdicts only "
            "show the report's shape.)",
        ]
    for sweep, results in all_results.items():
        parts += [
            "",
            f"## Sweep `{sweep}`",
            "",
            "Wall-clock to reach the plain sweep's best final accuracy, as a ratio to plain's "
            "(below 1: sooner), per seed:",
            "",
            seed_table(results, methods),
            "",
            "Mean over seeds:",
            "",
            target_table(results, methods),
            "",
            "Best accuracy at equal wall-clock (teachers' cost included):",
            "",
            equal_cost_table(results, methods),
            "",
            "Best accuracy within plain's total cost, per seed:",
            "",
            seed_best_table(results, methods),
            "",
            "Per trial:",
            "",
            per_trial_table(results, sequential),
        ]
    return "\n".join(parts)


def seeds(args: argparse.Namespace) -> list[int]:
    first = args.first_seed or 0
    return list(range(first, first + (args.seeds or (2 if args.quick else 5))))


def mean_best_so_far(
    results: Sequence[SeedResult], method: str, grid: Sequence[float]
) -> tuple[list[float], list[float]]:
    """The mean over seeds of the best accuracy within each fraction of plain's total cost."""
    xs, ys = [], []
    for x in grid:
        got = [r.best_at(method, x) for r in having(results, method)]
        if got and all(v is not None for v in got):
            xs.append(x)
            ys.append(sum(v for v in got if v is not None) / len(got))
    return xs, ys


def _label(method: str, results: Sequence[SeedResult]) -> str:
    ran = len(having(results, method))
    return method if ran == len(results) else f"{method} ({ran} seed{'s' * (ran > 1)})"


def plot(all_results: Mapping[str, list[SeedResult]], path: Path) -> Path:
    """Per sweep, each method's best accuracy so far against the sweep's cost as a fraction of
    plain's total, averaged over seeds (a method that ended earlier stays at its best)."""
    grid = [i / 200 for i in range(1, 241)]
    panels = {
        f"sweep {sweep}: best accuracy so far (mean of {len(results)} seeds)": {
            _label(m, results): [mean_best_so_far(results, m, grid)]
            for m in METHODS
            if m in results[0].traces
        }
        for sweep, results in all_results.items()
    }
    finals = [
        y
        for series in panels.values()
        for lines in series.values()
        for _, ys in lines
        for y in ys[-1:]
    ]
    low = max(0.0, min(finals, default=0.8) - 0.08)
    return plot_lines(
        path,
        panels,
        xlabel="sweep wall-clock / plain sweep's total (teachers included)",
        ylim=(low, min(1.0, max(finals, default=1.0) + 0.02)),
    )


def warm_up(task: Task, workdir: Path, methods: Sequence[str]) -> None:
    """Untimed tiny trials, plain and recycled (KD, budget, init, cache): one-time process
    costs (imports, Optuna's first study, the first teacher load) fall in no sweep."""
    small = Task(task.name, task.data, task.build, 2, task.batch_size, task.device, task.augment)
    # one recycled method, the one that touches most of the library (KD, budget, init, cache)
    recycled = [m for m in methods if METHODS[m].kd]
    recycled.sort(key=lambda m: len(METHODS[m].options or {}), reverse=True)
    chosen = ["plain", *recycled[:1]]
    for name in chosen:
        method = Method(name, small, "lr", 0, workdir)
        method.step({"lr": 0.1})
        method.step({"lr": 0.1})


def main(argv: Sequence[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    add_common_args(ap, seeds=5, out="bench-results/sweep_speedup")
    ap.add_argument("--trials", type=int, default=None, help="trials per sweep (default 10)")
    ap.add_argument("--batch", type=int, default=None, help="MNIST-1D batch size (default 100)")
    ap.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, of {','.join(METHODS)} (plain is always run; default all "
        "but sp-kd)",
    )
    ap.add_argument(
        "--sweeps", default=None, help=f"comma-separated subset of {','.join(SWEEPS)} (default all)"
    )
    ap.add_argument(
        "--first-seed", type=int, default=None, help="seeds start here (default 0): runs in parts"
    )
    ap.add_argument("--no-pbt", action="store_true", help="leave Ray Tune PBT out")
    ap.add_argument(
        "--pbt-seeds", type=int, default=None, help="run PBT on the first N seeds (default all)"
    )
    ap.add_argument("--ray-ip", default="127.0.0.2", help="loopback address for Ray")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="train nothing: one report from the sweep_speedup.json of runs made apart "
        "(e.g. one process per sweep: --sweeps lr, --sweeps width-lr-wd)",
    )
    args = parse_common(ap, argv)
    if args.merge is not None:
        return merge(args.merge, args.out)
    args.trials = args.trials or (3 if args.quick else 10)
    if args.trials < 2:
        ap.error(f"--trials must be >= 2 (a sweep recycles earlier trials), got {args.trials}")
    if args.first_seed is not None and args.first_seed < 0:
        ap.error(f"--first-seed must be >= 0, got {args.first_seed}")
    for name in ("batch", "pbt_seeds"):
        if (value := getattr(args, name)) is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    # Ray's start-up per PBT run dominates --quick: PBT there on seed 0 only
    args.pbt_seeds = args.pbt_seeds or (1 if args.quick else len(seeds(args)))
    chosen = DEFAULT_METHODS if args.methods is None else args.methods.split(",")
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        ap.error(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(METHODS)}")
    args.methods = [m for m in METHODS if m in chosen or m == "plain"]
    if args.no_pbt:
        args.methods = [m for m in args.methods if m != "pbt"]
    wanted = list(SWEEPS) if args.sweeps is None else args.sweeps.split(",")
    if unknown := [s for s in wanted if s not in SWEEPS]:
        ap.error(f"--sweeps: unknown {', '.join(unknown)}; known: {', '.join(SWEEPS)}")
    args.sweeps = [s for s in SWEEPS if s in wanted]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = args.epochs or (6 if args.quick else 60)
    task = make_task(args, epochs=epochs, batch_size=args.batch or 100)
    progress = Progress()
    progress(task.describe())
    start = time.perf_counter()
    steps = math.ceil(len(task.data[0].y) / task.batch_size) * task.epochs
    described = f"{task.describe()} ({steps} steps per whole trial)"
    with tempfile.TemporaryDirectory(prefix="recycler-warm-") as scratch:
        warm_up(task, Path(scratch), args.methods)
    results: dict[str, list[SeedResult]] = {}
    partial = args.out / "sweep_speedup.partial.json"
    for sweep in args.sweeps:
        for seed in seeds(args):
            results.setdefault(sweep, []).append(run_seed(task, sweep, seed, args, progress))
            # every finished seed is kept: a run stopped midway can be --merge'd
            data = {
                "args": vars(args),
                "task": described,
                "seconds": time.perf_counter() - start,
                "results": results,
            }
            write_json(partial, data, indent=None)
    took = time.perf_counter() - start
    text = report(results, described, args, f"{took / 60:.1f} min")
    data = run_record(args, described, took, results=results)
    partial.unlink(missing_ok=True)
    return _write(args.out, text, data, results)


def merge(paths: Sequence[Path], out: Path) -> int:
    """One report from the JSON of several runs (their sweeps, or their seeds, joined)."""
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    results: dict[str, list[SeedResult]] = {}
    for run in runs:
        for sweep, seeds_of in run["results"].items():
            results.setdefault(sweep, []).extend(SeedResult.from_json(r) for r in seeds_of)
    ordered = {s: sorted(results[s], key=lambda r: r.seed) for s in SWEEPS if s in results}
    args = argparse.Namespace(**runs[0]["args"])
    args.sweeps = list(ordered)
    took = " + ".join(f"{run['seconds'] / 60:.1f}" for run in runs) + " min (runs merged)"
    text = report(ordered, runs[0]["task"], args, took)
    seconds = sum(run["seconds"] for run in runs)
    data = run_record(args, runs[0]["task"], seconds, merged=[str(p) for p in paths],
                      results=ordered)  # fmt: skip
    return _write(out, text, data, ordered)


def _write(
    out: Path, text: str, data: Mapping[str, Any], results: Mapping[str, list[SeedResult]]
) -> int:
    files = write_outputs(out, "sweep_speedup", text, data, indent=None)  # every curve: big
    files.append(plot(results, out / "sweep_speedup.png"))
    print(text)
    print("\nwrote " + ", ".join(map(str, files)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
