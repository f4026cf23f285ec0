"""Each experiment of Liu et al. (2022) and Blakeney et al. (2022) at small scale: one table each.

Per seed, ten teachers are trained and registered: A0-A4 (lr 0.1, seeds differ) and B0-B4 (Liu's
learning-rate sweep 0.5, 0.2, 0.1, 0.05, 0.01). Students (lr 0.1, one student seed per replicate)
then distil from them through a Distiller and a SQLite registry in a temporary folder, in every
setup of the papers: 1-5 identical teachers (Liu Tables 1-2), all five diverse teachers against
fine-tuning the best one and a wider model (Tables 3-4), sampling 1-3 teachers per step (Tables
5-6), 10% of the epochs placed six ways (Table 7), schedules with sampling (Table 8), the best vs
the worst teacher (App. A, Blakeney 5.3), distilling only where the teachers are right (App. B)
and MSE vs KL at full and half length (Blakeney 5.1). A run used by several tables trains once.

    python examples/benchmarks/paper_tables.py            # 5 seeds x 30 epochs: 8 min 13 s
    python examples/benchmarks/paper_tables.py --quick    # 2 seeds x 6 epochs: 30 s

(measured on this project's 2-core CPU machine under shared load: MNIST-1D, 1 torch thread,
39 runs per seed.) At 30 epochs "2 of every 20" is capped (``until 21ep``) so that every Table 7
schedule distils the same 3 epochs; ``--epochs 40`` makes all six exact without a cap.
Outputs in ``--out``: paper_tables.md (the tables, each with the paper's finding and a verdict
computed from the numbers), paper_tables.json (every curve, every cell) and paper_tables.png.
"""

from __future__ import annotations

import math
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from _harness import (
    Curve,
    OneLineParser,
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
from _paper_results import (
    Results,
    verdict_diverse,
    verdict_good_bad,
    verdict_identical,
    verdict_losses,
    verdict_only_correct,
    verdict_sampling,
    verdict_schedule_sampling,
    verdict_schedules,
)

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from recycler.schedule import Clock, Schedule
from storage import Registry

STEM = "paper_tables"
LRS = (0.5, 0.2, 0.1, 0.05, 0.01)  # Liu's B0-B4
TEACHER_LR = STUDENT_LR = 0.1
CHANNELS = 32
OFFSETS = (-0.02, -0.01, 0.0, 0.01)  # epochs-to-reach thresholds around the best teacher
BASELINE = ("baseline (no KD)", "baseline")


# -- what is trained ------------------------------------------------------------------------


@dataclass(frozen=True)
class KD:
    """A distillation setup; ``teachers`` names one of a seed's teacher sets (Cohort.studies)."""

    teachers: str  # "A", "B", "best", "worst" or "both" (best and worst B)
    pool: int = 5
    per_step: int | str = "all"
    schedule: str = "always"
    loss: str = "mse"
    only_correct: bool = False


@dataclass(frozen=True)
class Student:
    """A student run: lr 0.1 and the replicate's student seed; the rest as given here."""

    name: str
    kd: KD | None = None
    channels: int = CHANNELS
    epochs: int | None = None  # None: the task's epochs
    finetune: bool = False  # start from the best B teacher's weights

    @property
    def key(self) -> Student:
        """The configuration without the name: equal keys train once per seed."""
        return replace(self, name="")


def kd_epochs(spec: str, epochs: int) -> list[int]:
    """The epochs (0-based) of ``epochs`` in which schedule ``spec`` distils."""
    schedule = Schedule.parse(spec)
    return [e for e in range(epochs) if schedule.active(Clock(epoch=e))]


def capped(spec: str, epochs: int, budget: int) -> str:
    """``spec``, bounded with ``until`` when it would distil more than ``budget`` epochs."""
    on = kd_epochs(spec, epochs)
    return spec if len(on) <= budget else f"{spec} until {on[budget - 1] + 1}ep"


def schedules(epochs: int) -> dict[str, tuple[str, str]]:
    """Liu's Table 7: 10% of the epochs placed six ways, as ``key: (label, schedule)``."""
    k = max(1, round(epochs / 10))
    mid, head = (epochs - k) // 2, -(-k // 2)
    tail, period = max(1, k - head), max(1, epochs // k)
    return {
        "first": (f"first {k} ep", f"until {k}ep"),
        "middle": (f"middle {k} ep", f"from {mid}ep until {mid + k}ep"),
        "last": (f"last {k} ep", f"from {epochs - k}ep"),
        "first+last": ("first + last", f"until {head}ep, from {epochs - tail}ep"),
        "every": (f"1 ep of every {period}", capped(f"every {period}ep for 1ep", epochs, k)),
        "every2": (
            f"2 ep of every {2 * period}",
            capped(f"every {2 * period}ep for 2ep", epochs, k),
        ),
    }


def half(epochs: int) -> int:
    """The shorter training length of Blakeney's comparison."""
    return max(1, epochs // 2)


def students(epochs: int) -> list[Student]:
    """Every student of every table, each configuration once."""
    scheds, short = schedules(epochs), half(epochs)
    out = [
        Student("baseline"),
        Student(f"baseline {short}ep", epochs=short),
        Student("wide (64 ch)", channels=2 * CHANNELS),
        Student("fine-tune best B", finetune=True),
    ]
    out += [Student(f"KD A best {k}", KD("A", pool=k)) for k in range(1, 6)]
    out += [Student("KD B all 5", KD("B"))]
    out += [Student(f"KD B sample {k}", KD("B", per_step=k)) for k in (1, 2, 3)]
    out += [Student(f"KD B {key}", KD("B", schedule=spec)) for key, (_, spec) in scheds.items()]
    out += [
        Student(f"KD B {key} sample 1", KD("B", per_step=1, schedule=scheds[key][1]))
        for key in ("first+last", "every")
    ]
    out += [
        Student("KD best", KD("best", pool=1)),
        Student("KD worst", KD("worst", pool=1)),
        Student("KD both sample 1", KD("both", pool=2, per_step=1)),
        Student("KD both", KD("both", pool=2)),
        Student("KD both only correct", KD("both", pool=2, only_correct=True)),
        Student("KD best kl", KD("best", pool=1, loss="kl")),
    ]
    out += [
        Student(f"KD best {loss} {short}ep", KD("best", pool=1, loss=loss), epochs=short)
        for loss in ("mse", "kl")
    ]
    return out


# -- training -------------------------------------------------------------------------------


@dataclass
class Cohort:
    """One seed's teachers: their curves (with the trained models) and registry studies."""

    seed: int
    a: list[Curve]
    b: list[Curve]

    @property
    def best(self) -> int:
        return max(range(len(self.b)), key=lambda i: self.b[i].final)

    @property
    def worst(self) -> int:
        return min(range(len(self.b)), key=lambda i: self.b[i].final)

    def studies(self, teachers: str) -> tuple[str, ...]:
        """Registry studies of a teacher set (each B teacher also has a study of its own)."""
        s, best, worst = self.seed, f"B{self.best}-{self.seed}", f"B{self.worst}-{self.seed}"
        sets = {"A": (f"A-{s}",), "B": (f"B-{s}",), "best": (best,), "worst": (worst,)}
        return {**sets, "both": (best, worst)}[teachers]


class Bench:
    """The task, the registry and the training of teachers and students."""

    def __init__(self, task: Task, root: Path, progress: Progress) -> None:
        self.task, self.progress = task, progress
        self.url, self.blobs = f"sqlite:///{root / 'registry.db'}", root / "blobs"
        self.registry = Registry(self.url, self.blobs)
        self.signature = f"logits/2d/{task.classes}"

    def warm_up(self) -> None:
        """One untimed epoch, plain and distilled: a process's first runs are slower."""
        teacher = train_curve(self.task, {"lr": TEACHER_LR}, seed=0, epochs=1)
        self.register(teacher, ("warm-up",), 0)
        kd = self.distiller(KD("warm-up"), ("warm-up",), seed=0)
        train_curve(self.task, {"lr": STUDENT_LR}, seed=0, kd=kd, epochs=1)
        kd.close()

    def register(self, curve: Curve, studies: Sequence[str], trial: int) -> None:
        """Register the trained model as trial ``trial`` of each study."""
        assert curve.model is not None
        for study in studies:
            self.registry.register(
                curve.model.state_dict(),
                study=study,
                trial_number=trial,
                metric_name="accuracy",
                metric_value=curve.final,
                output_signature=self.signature,
                params=curve.params,
            )

    def teachers(self, seed: int, results: Results) -> Cohort:
        """A0-A4 and B0-B4 of one seed, trained and registered."""
        cohort = Cohort(seed, [], [])
        for i in range(5):
            a = self.teacher(f"A{i}", TEACHER_LR, 1000 * seed + i)
            b = self.teacher(f"B{i}", LRS[i], 1000 * seed + 100 + i)
            self.register(a, [f"A-{seed}"], i)
            self.register(b, [f"B-{seed}", f"B{i}-{seed}"], i)
            for curve in (a, b):
                self.record(results, curve.label, curve, seed, {"role": "teacher"})
            cohort.a.append(a)
            cohort.b.append(b)
        return cohort

    def teacher(self, name: str, lr: float, seed: int) -> Curve:
        return train_curve(self.task, {"lr": lr, "channels": CHANNELS}, seed=seed, label=name)

    def distiller(self, kd: KD, studies: tuple[str, ...], seed: int) -> Distiller:
        teachers = {"studies": studies, "pool": kd.pool, "per_step": kd.per_step, "seed": seed}
        distill = {"loss": kd.loss, "schedule": kd.schedule, "only_correct": kd.only_correct}
        config = RecycleConfig.from_dict(
            {
                "registry": self.url,
                "blobs": str(self.blobs),
                # the papers' method as published: a student distils from its teachers all
                # the way (Liu's "KD worst" is the experiment), none retires when outgrown
                "teachers": {**teachers, "policy": "best", "refresh": None, "retire": False},
                "distill": distill,
            }
        )
        return Distiller(
            config,
            study=f"student-{seed}",  # empty: students never register
            trial_number=0,
            registry=self.registry,
            metric_name="accuracy",
        )

    def student(self, spec: Student, cohort: Cohort) -> tuple[Curve, dict[str, Any]]:
        """Train one student of ``cohort``'s seed; its curve and its configuration."""
        seed = 1000 * cohort.seed + 999
        config: dict[str, Any] = {"role": "student", **asdict(spec)}
        kd = init = None
        if spec.kd is not None:
            studies = cohort.studies(spec.kd.teachers)
            kd = self.distiller(spec.kd, studies, cohort.seed)
            config["kd"]["studies"] = list(studies)
        if spec.finetune:
            best = cohort.b[cohort.best]
            assert best.model is not None
            init, config["init"] = best.model.state_dict(), best.label
        params = {"lr": STUDENT_LR, "channels": spec.channels}
        curve = train_curve(
            self.task, params, seed=seed, label=spec.name, kd=kd, init=init, epochs=spec.epochs
        )
        if kd is not None:
            kd.close()
        curve.model = None
        return curve, config

    def record(
        self, results: Results, name: str, curve: Curve, replicate: int, config: dict[str, Any]
    ) -> None:
        results.add(name, curve, replicate, config)
        self.progress(f"seed {replicate}: {name}: {curve.final:.1%} in {curve.total_seconds:.1f} s")

    def replicate(self, seed: int, specs: Sequence[Student], results: Results) -> None:
        """Every run of one seed; a configuration seen before is reused, not retrained."""
        cohort = self.teachers(seed, results)
        for group, curves in (("A", cohort.a), ("B", cohort.b)):
            results.curves.setdefault(f"best {group}", []).append(max(curves, key=_final))
        done: dict[Student, tuple[Curve, dict[str, Any]]] = {}
        for spec in specs:
            if spec.key not in done:
                done[spec.key] = self.student(spec, cohort)
            curve, config = done[spec.key]
            self.record(results, spec.name, replace(curve, label=spec.name), seed, config)


def _final(curve: Curve) -> float:
    return curve.final


# -- tables ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """One table: its rows (label, run name), the paper's finding and a computed verdict."""

    title: str
    finding: str
    teachers: str  # "A" or "B": the set whose per-seed best final accuracy sets the thresholds
    rows: tuple[tuple[str, str], ...]
    verdict: Callable[[Results], str]

    def cells(self, results: Results) -> list[list[str]]:
        targets = [c.final for c in results.curves[f"best {self.teachers}"]]
        out = []
        for label, name in self.rows:
            curves = results.curves[name]
            reach = [
                Summary.of_values(
                    c.epochs_to(t + off) for c, t in zip(curves, targets, strict=True)
                ).text()
                for off in OFFSETS
            ]
            ratio = Summary.of_values(results.time_ratio(name)).text(digits=2, unit="x")
            out.append([label, pct(c.final for c in curves), *reach, ratio])
        return out


HEADER = ("run", "final acc. (%)", "epochs to T-2", "T-1", "T", "T+1", "time ÷ baseline")


def teacher_rows(group: str) -> tuple[tuple[str, str], ...]:
    lr = {"A": [TEACHER_LR] * 5, "B": list(LRS)}[group]
    return tuple((f"Teacher {group}{i} (lr {lr[i]})", f"{group}{i}") for i in range(5))


def tables(epochs: int) -> list[Table]:
    """The eight tables for runs of ``epochs`` epochs."""
    scheds, short = schedules(epochs), half(epochs)

    def sched_row(key: str, suffix: str = "") -> tuple[str, str]:
        label, spec = scheds[key]
        n = len(kd_epochs(spec, epochs))
        return f"{label}{suffix}: `{spec}` ({n} of {epochs} ep)", f"KD B {key}{suffix}"

    every_epoch = ("every epoch, all 5", "KD B all 5")
    return [
        Table(
            "1. Liu et al. Tables 1-2: identical teachers A0-A4, KD from the best 1-5",
            "more teachers give a higher accuracy, with diminishing returns (69.2% → 72.2%); "
            "≥3 teachers reach the best teacher's accuracy in <30% of its epochs.",
            "A",
            (
                *teacher_rows("A"),
                BASELINE,
                *((f"KD ({k} teacher{'s' * (k > 1)})", f"KD A best {k}") for k in range(1, 6)),
            ),
            verdict_identical,
        ),
        Table(
            "2. Liu et al. Tables 3-4: learning-rate sweep B0-B4, KD from all 5 vs alternatives",
            "KD from all 5 diverse teachers (72.5%) beats fine-tuning the best teacher (70.5%) "
            "and a bigger model (ResNet-110, 71.4%), and learns faster than both.",
            "B",
            (
                *teacher_rows("B"),
                ("KD (all 5, every step)", "KD B all 5"),
                ("fine-tune the best B teacher (lr 0.1)", "fine-tune best B"),
                (f"wider model ({2 * CHANNELS} channels), no KD", "wide (64 ch)"),
                BASELINE,
            ),
            verdict_diverse,
        ),
        Table(
            "3. Liu et al. Tables 5-6: all 5 B teachers vs sampling 1, 2 or 3 per step",
            "sampling 1 teacher per step loses only 0.4 pts (72.1% vs 72.5%) and learns ~30% "
            "slower, at a fifth of the distillation overhead.",
            "B",
            (
                ("all 5 every step", "KD B all 5"),
                *((f"sample {k} per step", f"KD B sample {k}") for k in (1, 2, 3)),
                BASELINE,
            ),
            verdict_sampling,
        ),
        Table(
            "4. Liu et al. Table 7: KD on 10% of the epochs, placed six ways (all 5 B teachers)",
            "periodic schedules (1 of every 10: 70.4%, 2 of every 20: 70.8%) beat one or two "
            "blocks (68.9-69.8%); none matches every epoch (72.5%).",
            "B",
            (every_epoch, *(sched_row(key) for key in scheds), BASELINE),
            verdict_schedules,
        ),
        Table(
            "5. Liu et al. Table 8: schedules combined with sampling 1 of 5",
            "sampling 1 helps first+last (69.8% → 70.3%) but hurts 1 of every 10 (70.4% → 69.7%).",
            "B",
            (
                every_epoch,
                sched_row("first+last"),
                sched_row("first+last", " sample 1"),
                sched_row("every"),
                sched_row("every", " sample 1"),
                BASELINE,
            ),
            verdict_schedule_sampling,
        ),
        Table(
            "6. Liu et al. App. A / Blakeney et al. §5.3: the best vs the worst B teacher",
            "Liu: the worst teacher gives a worse student than the best; both (every step or "
            "sampled) is best. Blakeney: even sub-optimal teachers beat no distillation.",
            "B",
            (
                ("best B teacher only", "KD best"),
                ("worst B teacher only", "KD worst"),
                ("best + worst, sample 1 per step", "KD both sample 1"),
                ("best + worst, both every step", "KD both"),
                BASELINE,
            ),
            verdict_good_bad,
        ),
        Table(
            "7. Liu et al. App. B: distilling only where the teachers are right",
            "ignoring the teachers where their mean is wrong costs 0.4 pts (71.4% vs 71.8%).",
            "B",
            (
                ("best + worst, every sample", "KD both"),
                ("best + worst, only_correct", "KD both only correct"),
                BASELINE,
            ),
            verdict_only_correct,
        ),
        Table(
            f"8. Blakeney et al. §5.1: MSE vs KL from the best B teacher, {epochs} and {short} "
            "epochs",
            "MSE beats KL for short training and is slightly worse for long training; with KD "
            "a shorter run reaches the quality of a longer plain one.",
            "B",
            (
                (f"MSE, {epochs} ep", "KD best"),
                (f"KL, {epochs} ep", "KD best kl"),
                (f"MSE, {short} ep", f"KD best mse {short}ep"),
                (f"KL, {short} ep", f"KD best kl {short}ep"),
                (f"no KD, {epochs} ep", "baseline"),
                (f"no KD, {short} ep", f"baseline {short}ep"),
            ),
            verdict_losses,
        ),
    ]


# -- outputs --------------------------------------------------------------------------------


def report(
    task: Task, seeds: int, argv: Sequence[str], done: Sequence[Table], results: Results
) -> tuple[str, list[dict[str, Any]]]:
    """The markdown and the tables' JSON."""
    command = shlex.join(["python", "examples/benchmarks/paper_tables.py", *argv])
    lines = [
        "# The papers' experiments at small scale (Liu et al. 2022, Blakeney et al. 2022)",
        "",
        f"- machine: {machine_line(machine())}",
        f"- task: {task.describe()}",
        f"- seeds: {seeds} (mean ± std over seeds; teachers 1000·s+i, students 1000·s+999)",
        f"- command: `{command}`",
        "- T: the seed's best teacher's final accuracy (of the table's teacher set, A or B); "
        "'epochs to T-2' is the first epoch at T - 2 points, averaged over the seeds that got "
        "there ((n/N) when not all did, — when none did)",
        "- time ÷ baseline: the run's wall-clock over the no-KD run's (same seed, full length)",
        "- verdicts: paired differences over seeds, mean ± std; 'no clear difference' when "
        "within two standard errors",
    ]
    data = []
    for table in done:
        cells = table.cells(results)
        verdict = table.verdict(results)
        lines += ["", f"## {table.title}", "", f"**Paper's finding:** {table.finding}", ""]
        lines += [f"**Here:** {verdict}", "", markdown_table(HEADER, cells)]
        data.append({"title": table.title, "verdict": verdict, "header": HEADER, "rows": cells})
    return "\n".join(lines), data


def plot(path: Path, done: Sequence[Table], results: Results) -> Path:
    """Test accuracy per epoch for the rows of tables 1 and 3."""
    panels = {
        table.title.split(":")[0]: {
            label: [(range(1, len(c.accuracy) + 1), c.accuracy) for c in results.curves[name]]
            for label, name in table.rows
        }
        for table in (done[0], done[2])
    }
    return plot_lines(path, panels, xlabel="epoch")


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    add_common_args(ap, seeds=5, out=f"bench-results/{STEM}")
    args = parse_common(ap, argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    start = time.perf_counter()
    epochs = args.epochs or (6 if args.quick else 30)
    seeds = args.seeds or (2 if args.quick else 5)
    task = make_task(args, epochs=epochs)
    specs, done, results = students(epochs), tables(epochs), Results()
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(task, Path(tmp), Progress())
        bench.warm_up()
        for seed in range(seeds):
            bench.replicate(seed, specs, results)
        bench.registry.close()
    markdown, cells = report(task, seeds, argv, done, results)
    total = time.perf_counter() - start
    markdown += f"\n\nWall-clock total: {total:.0f} s.\n"
    data = {
        "args": vars(args),
        "machine": machine(),
        "task": task.describe(),
        "epochs": epochs,
        "seeds": seeds,
        "steps_per_epoch": math.ceil(len(task.data[0].y) / task.batch_size),
        "runs": results.runs,
        "tables": cells,
        "total_seconds": total,
    }
    write_outputs(args.out, STEM, markdown, data)
    plot(args.out / f"{STEM}.png", done, results)
    print(markdown)
    print(f"total {total:.0f} s; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
