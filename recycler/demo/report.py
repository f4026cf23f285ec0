"""The demo's report: a table per trial, the sweep-level summary, and the plot.

Accuracy is test accuracy after each epoch; a sweep's *best so far* at a moment is the best
accuracy any of its trials had reached by then, on the sweep's own wall-clock (trials run one
after another; the teachers' cost is part of the recycled sweep's clock).

Example:
    >>> run = TrialRun(0, 0.1, accuracy=[0.5, 0.7], at=[1.0, 2.0], ended=2.1)
    >>> best_so_far(Sweep("plain", [run], 2.1), 1.5)
    0.5
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._imports import require
from .sweep import Sweep, TrialRun


@dataclass(frozen=True)
class Summary:
    """The sweep-level comparison of a plain and a recycled sweep."""

    target: float  # the plain sweep's best final accuracy
    plain_s: float  # each sweep's total wall-clock
    recycled_s: float
    plain_to_target_s: float | None  # sweep seconds until an epoch first reached the target
    recycled_to_target_s: float | None
    plain_to_target_ep: int | None  # sweep epochs (all trials so far) until then
    recycled_to_target_ep: int | None
    equal_s: float  # the shorter sweep's wall-clock
    plain_at_equal: float  # best so far at equal_s
    recycled_at_equal: float
    plain_best_final: float
    recycled_best_final: float
    plain_new_best: int  # trials after the first that ended above every earlier trial
    recycled_new_best: int
    taught_s: float  # wall-clock of the recycled trials that had teachers
    twins_s: float  # wall-clock of their plain twins (same learning rate and seed)


def best_so_far(sweep: Sweep, seconds: float) -> float:
    """The best epoch accuracy any trial of ``sweep`` had reached ``seconds`` into it."""
    reached = [acc for run in sweep.trials for at, acc in run.points() if at <= seconds]
    return max(reached, default=0.0)


def time_to(sweep: Sweep, target: float) -> tuple[float | None, int | None]:
    """Sweep seconds and sweep epochs until an epoch first reached ``target`` (None: never)."""
    epochs = 0
    for run in sweep.trials:
        for at, acc in run.points():
            epochs += 1
            if acc >= target:
                return at, epochs
    return None, None


def new_bests(sweep: Sweep) -> int:
    """How many trials after the first finished above every earlier trial's final accuracy."""
    count, best = 0, None
    for run in sweep.trials:
        if best is not None and run.final > best:
            count += 1
        best = run.final if best is None else max(best, run.final)
    return count


def summarize(plain: Sweep, recycled: Sweep) -> Summary:
    """Compare the sweeps at the plain sweep's best accuracy and at equal wall-clock."""
    target = max(run.final for run in plain.trials)
    plain_t, plain_ep = time_to(plain, target)
    rec_t, rec_ep = time_to(recycled, target)
    equal = min(plain.seconds, recycled.seconds)
    taught = [i for i, run in enumerate(recycled.trials) if run.kd.get("teachers_used")]
    return Summary(
        target=target,
        plain_s=plain.seconds,
        recycled_s=recycled.seconds,
        plain_to_target_s=plain_t,
        recycled_to_target_s=rec_t,
        plain_to_target_ep=plain_ep,
        recycled_to_target_ep=rec_ep,
        equal_s=equal,
        plain_at_equal=best_so_far(plain, equal),
        recycled_at_equal=best_so_far(recycled, equal),
        plain_best_final=target,
        recycled_best_final=max(run.final for run in recycled.trials),
        plain_new_best=new_bests(plain),
        recycled_new_best=new_bests(recycled),
        taught_s=sum(recycled.trials[i].seconds for i in taught),
        twins_s=sum(plain.trials[i].seconds for i in taught if i < len(plain.trials)),
    )


def trial_table(plain: Sweep, recycled: Sweep, target: float) -> str:
    """One row per trial of both sweeps."""
    head = (
        "sweep", "trial", "lr", "teachers", "start", "epochs", f"epochs to {target:.3f}",
        "final acc", "wall-clock", "teacher fwd",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [head]
    for sweep in (plain, recycled):
        for run in sweep.trials:
            rows.append(_row(sweep.name, run, target))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _row(name: str, run: TrialRun, target: float) -> tuple[str, ...]:
    reached = run.epochs_to(target)
    kd = run.kd
    overhead = "-" if not kd else f"{100 * kd.get('overhead', 0.0):.0f}%"
    parent = kd.get("init_parent")
    return (
        name,
        str(run.number),
        f"{run.lr:.4f}",
        "-" if not kd else str(len(kd.get("teachers_used", []))),
        "fresh" if parent is None else f"#{parent}",
        str(len(run.accuracy)),
        "-" if reached is None else str(reached),
        f"{run.final:.3f}",
        f"{run.seconds:.1f} s",
        overhead,
    )


def summary_text(s: Summary, trials: int) -> str:
    """The summary as a few plain sentences."""

    def reach(seconds: float | None, epochs: int | None) -> str:
        return "never" if seconds is None else f"after {seconds:.1f} s ({epochs} epochs)"

    return "\n".join(
        [
            f"target: the plain sweep's best final accuracy, {s.target:.3f}",
            f"  plain sweep reached it    {reach(s.plain_to_target_s, s.plain_to_target_ep)}",
            f"  recycled sweep reached it {reach(s.recycled_to_target_s, s.recycled_to_target_ep)}",
            speedup_text(s),
            f"best accuracy at equal wall-clock ({s.equal_s:.1f} s): "
            f"plain {s.plain_at_equal:.3f}, recycled {s.recycled_at_equal:.3f}",
            f"best final accuracy: plain {s.plain_best_final:.3f}, "
            f"recycled {s.recycled_best_final:.3f}",
            f"trials that finished above every earlier trial of their sweep: "
            f"plain {s.plain_new_best} of {trials - 1}, recycled {s.recycled_new_best} of "
            f"{trials - 1}",
            f"sweep wall-clock: plain {s.plain_s:.1f} s, recycled {s.recycled_s:.1f} s "
            f"(teachers, KD loss and registry included)",
            f"cost of KD: the recycled trials with teachers took {s.taught_s:.1f} s, their plain "
            f"twins {s.twins_s:.1f} s ({_percent(s.taught_s, s.twins_s)}); 'teacher fwd' is "
            "only the teachers' share of the step time",
        ]
    )


def speedup_text(s: Summary) -> str:
    """The sweep-level speed-up: the recycled sweep's time to the target over the plain's."""
    if s.recycled_to_target_s is None:
        return "sweep-level speed-up: none, the recycled sweep never reached the target"
    if not s.plain_to_target_s:
        return "sweep-level speed-up: n/a"
    ratio = s.recycled_to_target_s / s.plain_to_target_s
    how = f"{1 / ratio:.2f}x sooner" if ratio <= 1 else f"{ratio:.2f}x later"
    return (
        f"sweep-level speed-up: the recycled sweep reached the target in {ratio:.2f}x the plain "
        f"sweep's wall-clock ({how})"
    )


def _percent(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.0f}%" if old > 0 else "n/a"


def plot(plain: Sweep, recycled: Sweep, target: float, path: Path) -> Path:
    """Best-so-far accuracy against wall-clock for both sweeps, as a PNG (Agg, no display)."""
    figures = require("matplotlib.figure", "demo", feature="the demo's plot")
    fig = figures.Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for sweep, color in ((plain, "tab:gray"), (recycled, "tab:green")):
        times, best, top = [0.0], [0.0], 0.0
        for run in sweep.trials:
            for at, acc in run.points():
                top = max(top, acc)
                times.append(at)
                best.append(top)
        ax.step(times, best, where="post", color=color, label=f"{sweep.name} sweep")
        ends = [run.ended for run in sweep.trials]
        ax.plot(ends, [best_so_far(sweep, t) for t in ends], "o", color=color, markersize=4)
    ax.axhline(
        target, color="tab:gray", linestyle=":", linewidth=1, label="plain sweep's best final"
    )
    ax.set_ylim(max(0.0, target - 0.25), min(1.0, target + 0.08))
    ax.set_xlabel("sweep wall-clock (s); dots: a trial ends")
    ax.set_ylabel("best test accuracy so far")
    ax.set_title("MNIST-1D learning-rate sweep: plain vs recycled")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=110)
    return path
