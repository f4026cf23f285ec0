"""Does recycling save wall-clock on a whole sweep? Five ways to run the same sweep, side by side.

Two sweeps on MNIST-1D (generated locally) with the demo's CNN, on the CPU, one trial at a time:
``lr`` (learning rate) and ``width-lr-wd`` (width, learning rate, weight decay). Per seed, the
trials' hyperparameters are drawn once by Optuna's RandomSampler and every method runs those
same trials in the same order, each as a real Optuna study:

  plain      each trial from scratch
  sample-1   recycled: every step distils one teacher sampled from a pool of the 5 best earlier
             trials (Liu 2022 §4 sampling)
  periodic   recycled: the 5 teachers' ensemble, on 2 epochs of every 10 (Liu 2022 Table 7)
  warm-start each trial starts from the weights of the best earlier trial of its width
             (the papers' fine-tuning baseline)
  pbt        Ray Tune Population Based Training over the same population (its members keep
             width 32: PBT cannot change an architecture mid-run)

The methods' trials are interleaved (trial 1 of each, then trial 2 of each, ...) so the machine's
moods hit all alike. Cost is wall-clock seconds of the trials themselves, teacher loading,
teacher forwards and registration included. Reported, as means ± standard deviation over seeds:
the best accuracy at equal total cost (the lead view), the cost to reach the plain sweep's best
accuracy, per trial the epochs and seconds to reach the best earlier trial's accuracy, and the
KD overhead. Outputs: sweep_speedup.md, .json and .png (accuracy against wall-clock).

    python examples/benchmarks/sweep_speedup.py           # 5 seeds: 13.4-14.9 min measured here
    python examples/benchmarks/sweep_speedup.py --quick   # 2 seeds, 6-epoch trials: ~3 min

(on this project's 2-core CPU machine; most of --quick is Ray starting PBT's members.)
"""

from __future__ import annotations

import argparse
import math
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
    add_common_args,
    machine,
    machine_line,
    make_task,
    markdown_table,
    parse_common,
    pct,
    plot_lines,
    train_curve,
    write_outputs,
)

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from recycler.integrations.optuna import recycle

Trace = list[tuple[float, float]]  # (cumulative sweep seconds, test accuracy) per epoch
METHODS = ("plain", "sample-1", "periodic", "warm-start", "pbt")
SEQUENTIAL = METHODS[:4]
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


def recycle_config(method: str, seed: int, workdir: Path) -> RecycleConfig:
    """The recycled methods' configuration (one registry for the whole benchmark run)."""
    teachers: dict[str, Any] = {"pool": 5, "policy": "best", "seed": seed}
    distill: dict[str, Any] = {}
    if method == "periodic":
        teachers["per_step"] = "all"
        distill["schedule"] = "every 10ep for 2ep"
    return RecycleConfig.from_dict(
        {
            "registry": f"sqlite:///{workdir / 'registry.db'}",
            "blobs": str(workdir / "teachers"),
            "teachers": teachers,
            "distill": distill,
        }
    )


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

    def __post_init__(self) -> None:
        self.study = optuna.create_study(
            study_name=f"{self.sweep}-{self.name}-s{self.seed}",
            direction="maximize",
            sampler=optuna.samplers.RandomSampler(seed=self.seed),
        )
        self.objective: Callable[[optuna.Trial], Any] = (
            recycle(self._train, config=recycle_config(self.name, self.seed, self.workdir))
            if self.name in ("sample-1", "periodic")
            else lambda trial: self._train(trial, None)
        )

    def step(self, params: Params) -> Curve:
        self.study.enqueue_trial(params)
        start = time.perf_counter()
        self.study.optimize(self.objective, n_trials=1)
        self.costs.append(time.perf_counter() - start)
        return self.curves[-1]

    def _train(self, trial: optuna.Trial, kd: Distiller | None) -> float:
        params = SWEEPS[self.sweep](trial)
        init = self._warm_start(params) if self.name == "warm-start" else None
        seed = 1000 * self.seed + trial.number
        curve = train_curve(self.task, params, seed=seed, label=self.name, kd=kd, init=init)
        self.curves.append(curve)
        return curve.final

    def _warm_start(self, params: Params) -> dict[str, torch.Tensor] | None:
        width = params.get("channels", 32)
        same = [c for c in self.curves if c.params.get("channels", 32) == width]
        if not same:
            return None
        best = max(same, key=lambda c: c.final)
        assert best.model is not None
        return {k: v.clone() for k, v in best.model.state_dict().items()}

    def trace(self) -> Trace:
        out, offset = [], 0.0
        for curve, cost in zip(self.curves, self.costs, strict=True):
            out += [(offset + s, a) for s, a in zip(curve.seconds, curve.accuracy, strict=True)]
            offset += cost
        return out


def run_pbt(task: Task, trials: list[Params], seed: int, workdir: Path) -> Trace:
    from _pbt import pbt_sweep

    population = [
        {
            "lr": p["lr"],
            "weight_decay": p.get("weight_decay", 5e-4),
            "channels": 32,
            "seed": 1000 * seed + i,
        }
        for i, p in enumerate(trials)
    ]
    return pbt_sweep(
        population,
        task,
        bounds={"lr": LR, "weight_decay": WD},
        seed=seed,
        workdir=workdir,
    )


# -- measures over traces and curves --------------------------------------------------------


def best_within(trace: Trace, budget: float) -> float | None:
    """Best accuracy reported within ``budget`` seconds of the sweep's cost."""
    got = [a for s, a in trace if s <= budget]
    return max(got) if got else None


def cost_to(trace: Trace, target: float) -> float | None:
    """The sweep's cost when an accuracy first reached ``target``."""
    return next((s for s, a in trace if a >= target), None)


def best_so_far(trace: Trace) -> tuple[list[float], list[float]]:
    xs, ys, best = [], [], -math.inf
    for s, a in trace:
        best = max(best, a)
        xs.append(s)
        ys.append(best)
    return xs, ys


@dataclass
class SeedResult:
    """One seed of one sweep: each method's trace, and the sequential methods' curves."""

    sweep: str
    seed: int
    params: list[Params]
    traces: dict[str, Trace]
    curves: dict[str, list[Curve]]

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "seed": self.seed,
            "params": self.params,
            "traces": self.traces,
            "curves": {m: [c.to_json() for c in cs] for m, cs in self.curves.items()},
        }


def run_seed(
    task: Task, sweep: str, seed: int, args: argparse.Namespace, progress: Progress
) -> SeedResult:
    trials = draw(sweep, seed, args.trials)
    with tempfile.TemporaryDirectory(prefix="recycler-sweep-") as scratch:
        work = Path(scratch)
        methods = {m: Method(m, task, sweep, seed, work) for m in SEQUENTIAL}
        for i, params in enumerate(trials):
            for method in methods.values():  # interleaved: trial i of every method
                curve = method.step(params)
                progress(
                    f"{sweep} seed {seed} trial {i + 1}/{len(trials)} {method.name:<10} "
                    f"{curve.final:.3f} in {method.costs[-1]:.1f} s"
                )
        traces = {m: method.trace() for m, method in methods.items()}
        if not args.no_pbt:
            traces["pbt"] = run_pbt(task, trials, seed, work)
            progress(f"{sweep} seed {seed} pbt        best {max(a for _, a in traces['pbt']):.3f}")
    curves = {m: method.curves for m, method in methods.items()}
    for cs in curves.values():
        for c in cs:
            c.model = None
    return SeedResult(sweep, seed, trials, traces, curves)


# -- the report ---------------------------------------------------------------------------


def equal_cost_table(results: Sequence[SeedResult], methods: Sequence[str]) -> str:
    """Best accuracy within fractions of the plain sweep's total cost, per method."""
    rows = []
    for m in methods:
        cells = [
            pct(best_within(r.traces[m], f * r.traces["plain"][-1][0]) for r in results)
            for f in BUDGETS
        ]
        total = Summary.of_values(r.traces[m][-1][0] / r.traces["plain"][-1][0] for r in results)
        rows.append([m, *cells, total.text(digits=2, unit="x")])
    header = ["method", *(f"best at {f:.0%} of plain's cost" for f in BUDGETS), "total cost"]
    return markdown_table(header, rows)


def target_table(results: Sequence[SeedResult], methods: Sequence[str]) -> str:
    """Cost to reach the plain sweep's best accuracy, and the speed-up over plain."""
    rows = []
    for m in methods:
        costs, speedups = [], []
        for r in results:
            target = max(a for _, a in r.traces["plain"])
            cost = cost_to(r.traces[m], target)
            plain = cost_to(r.traces["plain"], target)
            costs.append(cost)
            speedups.append(None if cost is None or plain is None else plain / cost)
        rows.append(
            [
                m,
                Summary.of_values(costs).text(unit=" s"),
                Summary.of_values(speedups).text(digits=2, unit="x"),
            ]
        )
    return markdown_table(["method", "cost to plain's best", "speed-up vs plain"], rows)


def per_trial_table(results: Sequence[SeedResult]) -> str:
    """Per trial after the first: epochs and seconds to the best earlier (plain) trial's accuracy.

    The target of trial i is the best final accuracy among plain trials 1..i-1 of the same seed;
    all methods' trial i share it (same hyperparameters, same seed).
    """
    rows = []
    for m in SEQUENTIAL:
        epochs, seconds, finals, overhead = [], [], [], []
        for r in results:
            plain = r.curves["plain"]
            for i, curve in enumerate(r.curves[m]):
                finals.append(curve.final)
                overhead.append(
                    (curve.total_seconds / len(curve.seconds))
                    / (plain[i].total_seconds / len(plain[i].seconds))
                )
                if i == 0:
                    continue
                target = max(c.final for c in plain[:i])
                epochs.append(curve.epochs_to(target))
                seconds.append(curve.seconds_to(target))
        rows.append(
            [
                m,
                Summary.of_values(epochs).text(),
                Summary.of_values(seconds).text(unit=" s"),
                pct(finals),
                Summary.of_values(overhead).text(digits=2, unit="x"),
            ]
        )
    header = [
        "method",
        "epochs to best earlier trial",
        "seconds to it",
        "trial final accuracy",
        "seconds per epoch vs plain",
    ]
    return markdown_table(header, rows)


def report(
    all_results: Mapping[str, list[SeedResult]], task: Task, args: argparse.Namespace, took: float
) -> str:
    methods = [m for m in METHODS if m != "pbt" or not args.no_pbt]
    seed_list = ", ".join(map(str, seeds(args)))
    parts = [
        "# Sweep speed-up: plain vs recycled vs warm-start vs PBT",
        "",
        f"{task.describe()}; {args.trials} trials per sweep; seeds {seed_list}; "
        f"total run {took / 60:.1f} min.",
        f"Machine: {machine_line(machine())}.",
        "Means ± standard deviation over seeds; `(n/N)`: only n of N seeds got there.",
    ]
    for sweep, results in all_results.items():
        parts += [
            "",
            f"## Sweep `{sweep}`",
            "",
            "Best accuracy at equal wall-clock (teachers' cost included):",
            "",
            equal_cost_table(results, methods),
            "",
            "Wall-clock to reach the plain sweep's best accuracy:",
            "",
            target_table(results, methods),
            "",
            "Per trial (trials 2 on), against the best earlier trial's final accuracy:",
            "",
            per_trial_table(results),
        ]
    return "\n".join(parts)


def seeds(args: argparse.Namespace) -> list[int]:
    return list(range(args.seeds or (2 if args.quick else 5)))


def plot(all_results: Mapping[str, list[SeedResult]], path: Path) -> Path:
    panels = {
        f"sweep {sweep}: best accuracy so far": {
            m: [best_so_far(r.traces[m]) for r in results] for m in results[0].traces
        }
        for sweep, results in all_results.items()
    }
    return plot_lines(path, panels, xlabel="sweep wall-clock (s), teachers included")


def warm_up(task: Task, workdir: Path) -> None:
    """An untimed tiny trial of each kind: one-time process costs fall in no sweep."""
    small = Task(task.name, task.data, task.build, 1, task.batch_size, task.device, task.augment)
    for name in SEQUENTIAL:
        method = Method(name, small, "lr", 0, workdir)
        method.step({"lr": 0.1})
        method.step({"lr": 0.1})


def main(argv: Sequence[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    add_common_args(ap, seeds=5, out="bench-results/sweep_speedup")
    ap.add_argument("--trials", type=int, default=None, help="trials per sweep (default 7)")
    ap.add_argument("--no-pbt", action="store_true", help="leave Ray Tune PBT out")
    ap.add_argument("--ray-ip", default="127.0.0.2", help="loopback address for Ray")
    args = parse_common(ap, argv)
    args.trials = args.trials or (6 if args.quick else 7)
    if args.trials < 2:
        ap.error(f"--trials must be >= 2 (a sweep recycles earlier trials), got {args.trials}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = make_task(args, epochs=args.epochs or (6 if args.quick else 20))
    progress = Progress()
    progress(task.describe())
    temp = None if args.no_pbt else _start_ray(args.ray_ip)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="recycler-warm-") as scratch:
            warm_up(task, Path(scratch))
        results = {
            sweep: [run_seed(task, sweep, s, args, progress) for s in seeds(args)]
            for sweep in SWEEPS
        }
    finally:
        if temp is not None:
            from _pbt import stop_ray

            stop_ray(temp)
    took = time.perf_counter() - start
    text = report(results, task, args, took)
    data = {"args": vars(args), "machine": machine(), "seconds": took, "results": results}
    files = write_outputs(args.out, "sweep_speedup", text, data)
    files.append(plot(results, args.out / "sweep_speedup.png"))
    print(text)
    print("\nwrote " + ", ".join(map(str, files)))
    return 0


def _start_ray(ip: str) -> str:
    from _pbt import start_ray

    return start_ray(ip)


if __name__ == "__main__":
    raise SystemExit(main())
