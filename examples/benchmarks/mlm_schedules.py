"""Blakeney et al. (2022) §5.2 at small scale: when to distil a BERT's masked-LM pretraining.

Teachers come from a learning-rate sweep of a tiny BERT (2 layers, hidden 64, a WordPiece
vocabulary of 1,000 trained here) pretrained with masked-LM on ``pydoc_data.topics`` (the
help text that ships with Python); each run goes through ``RecycleTrainer`` and the sweep's
models are registered as teachers. Students (the best teacher's learning rate, new seeds)
then train the same length four ways: no KD, KD on every step, and KD only in the first 25%
and the first 50% of training (``until 0.25dur``, ``until 0.5dur``), one teacher sampled per
step from the whole sweep (Blakeney's random sampling). Masked-LM accuracy on a fixed
held-out set (fixed masks) is recorded against the run's own wall-clock (evaluation time
left out; teacher forwards included).

    python examples/benchmarks/mlm_schedules.py            # 4 teachers, 3 seeds x 4 schedules
    python examples/benchmarks/mlm_schedules.py --quick    # 2 teachers, 2 seeds, 60 steps each

Outputs in ``--out``: mlm_schedules.md (the table and a verdict computed from the numbers),
mlm_schedules.json (every curve) and mlm_schedules.png (accuracy against wall-clock).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from _harness import (
    OneLineParser,
    Progress,
    Summary,
    machine,
    machine_line,
    markdown_table,
    plot_lines,
    write_outputs,
)
from transformers import (
    DataCollatorForLanguageModeling,
    PrinterCallback,
    TrainerCallback,
    TrainingArguments,
)

from recycler.demo import text
from recycler.integrations.transformers import RecycleTrainer

STEM = "mlm_schedules"
SCHEDULES = {
    "none": None,
    "always": "always",
    "first 25%": "until 0.25dur",
    "first 50%": "until 0.5dur",
}


@dataclass(frozen=True)
class Setup:
    """The sizes of a run (full or ``--quick``)."""

    vocab: int
    length: int
    hidden: int
    epochs: int
    batch: int
    lrs: tuple[float, ...]
    seeds: int
    limit: int | None
    evals: int

    @classmethod
    def of(cls, quick: bool, seeds: int | None, epochs: int | None) -> Setup:
        if quick:
            return cls(400, 32, 32, epochs or 1, 16, (5e-3, 1e-2), seeds or 2, 960, 2)
        lrs = (2e-3, 5e-3, 1e-2, 2e-2)
        return cls(500, 32, 64, epochs or 5, 32, lrs, seeds or 3, None, 8)


@dataclass
class Run:
    """One training run: masked-LM accuracy and training seconds at each evaluation."""

    label: str
    seed: int
    lr: float
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    kd: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> float:
        return self.accuracy[-1]

    @property
    def total(self) -> float:
        return self.seconds[-1]

    def at(self, seconds: float) -> float:
        """Accuracy at the last evaluation done by ``seconds`` of training."""
        done = [a for s, a in zip(self.seconds, self.accuracy, strict=True) if s <= seconds]
        return done[-1] if done else self.accuracy[0]

    def reaches(self, target: float) -> float | None:
        """Training seconds at the first evaluation at or above ``target``."""
        return next(
            (s for s, a in zip(self.seconds, self.accuracy, strict=True) if a >= target), None
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seed": self.seed,
            "lr": self.lr,
            "steps": self.steps,
            "seconds": self.seconds,
            "accuracy": self.accuracy,
            "kd": self.kd,
        }


class Recorder(TrainerCallback):  # type: ignore[misc]
    """Records each evaluation with the training seconds so far (evaluation time left out)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.start = time.perf_counter()
        self.evaluating = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start, self.evaluating = time.perf_counter(), 0.0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= state.max_steps:  # the curve ends at the last step
            control.should_evaluate = True
        return control

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> None:
        self.evaluating += float(metrics["eval_runtime"])
        self.run.steps.append(int(state.global_step))
        self.run.seconds.append(max(0.0, time.perf_counter() - self.start - self.evaluating))
        self.run.accuracy.append(float(metrics["eval_accuracy"]))


class Bench:
    """The data, the tokenizer and a registry in a temporary folder; trains runs."""

    def __init__(self, setup: Setup, root: Path) -> None:
        self.setup = setup
        self.root = root
        self.tokenizer = text.wordpiece_tokenizer(setup.vocab)
        self.train, evals = text.mlm_data(
            self.tokenizer, max_length=setup.length, limit=setup.limit, eval_fraction=0.06
        )
        self.evals = evals[:128]
        self.collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=0.15)
        steps = math.ceil(len(self.train) / setup.batch) * setup.epochs
        self.eval_steps = max(1, steps // setup.evals)

    def config(self, study: str, schedule: str | None, *, teach: bool) -> dict[str, Any]:
        return {
            "registry": f"sqlite:///{self.root / 'registry.db'}",
            "blobs": str(self.root / "teachers"),
            "study": study,
            "distill": {
                "weight": 0.0 if schedule is None else 1.0,
                "schedule": schedule or "always",
            },
            # recycler's default quality gate: for token logits, relative to the best teacher,
            # so a run of the sweep stuck at the unigram plateau (diverged) does not teach;
            # no retirement: the schedules are the experiment (KD exactly where they say)
            "teachers": {"studies": ["teachers"], "pool": 8, "seed": 0, "retire": False},
            "register": {"enabled": teach},
        }

    def run(self, label: str, lr: float, seed: int, cfg: dict[str, Any]) -> Run:
        s = self.setup
        torch.manual_seed(seed)
        model = text.tiny_bert(self.tokenizer, hidden=s.hidden, max_length=s.length)
        run = Run(label, seed, lr)
        args = TrainingArguments(
            output_dir=str(self.root / "runs"),
            per_device_train_batch_size=s.batch,
            per_device_eval_batch_size=128,
            num_train_epochs=s.epochs,
            learning_rate=lr,
            warmup_steps=0.06,
            weight_decay=0.01,
            eval_strategy="steps",
            eval_steps=self.eval_steps,
            eval_on_start=True,
            metric_for_best_model="accuracy",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            seed=seed,
            data_seed=seed,
        )
        trainer = RecycleTrainer(
            model=model,
            args=args,
            train_dataset=self.train,
            eval_dataset=self.evals,
            data_collator=self.collator,
            compute_metrics=text.mlm_accuracy,
            preprocess_logits_for_metrics=text.argmax_logits,
            callbacks=[Recorder(run)],
            recycle=cfg,
        )
        trainer.pop_callback(PrinterCallback)  # the progress lines say enough
        trainer.train()
        assert trainer.recycle_outcome is not None
        run.kd = dict(trainer.recycle_outcome.info)
        return run


# -- the comparison --------------------------------------------------------------------------


def paired(values: Sequence[float]) -> str:
    """Mean ± sd of per-seed differences, and whether the mean is beyond 2 standard errors."""
    s = Summary.of_values(values)
    if s.mean is None:
        return "—"
    se = (s.std or 0.0) / math.sqrt(max(1, s.n))
    clear = s.n > 1 and abs(s.mean) > 2 * se
    return f"{s.mean * 100:+.1f} ± {(s.std or 0.0) * 100:.1f}{' (clear)' if clear else ''}"


def report(teachers: list[Run], students: dict[str, list[Run]], setup: Setup) -> str:
    none = students["none"]
    budget = statistics.fmean(r.total for r in none)
    target = statistics.fmean(r.final for r in none)
    rows = []
    for label, runs in students.items():
        base = {r.seed: r for r in none}
        times = [r.total / base[r.seed].total for r in runs]
        reach = [r.reaches(target) for r in runs]
        rows.append(
            [
                label,
                f"{statistics.fmean(r.kd['steps_distilled'] for r in runs):.0f}",
                Summary.of_values(r.final for r in runs).text(100.0),
                paired([r.final - base[r.seed].final for r in runs]) if label != "none" else "",
                Summary.of_values(r.at(budget) for r in runs).text(100.0),
                paired([r.at(budget) - base[r.seed].at(budget) for r in runs])
                if label != "none"
                else "",
                Summary.of_values(r.total for r in runs).text(1.0, 1, " s"),
                Summary.of_values(times).text(1.0, 2, "x"),
                Summary.of_values(budget / t if t else None for t in reach).text(1.0, 2, "x"),
            ]
        )
    header = [
        "student",
        "KD steps",
        "final MLM acc %",
        "vs none",
        "acc at none's time %",
        "vs none",
        "train time",
        "x none",
        "speed-up to none's final",
    ]
    sweep = ", ".join(f"lr {r.lr:g}: {r.final * 100:.1f}%" for r in teachers)
    lines = [
        "# Blakeney et al. §5.2 at small scale: masked-LM KD, early phase or throughout",
        "",
        f"Teachers (the lr sweep, seed 0): {sweep}. Students: lr {none[0].lr:g}, "
        f"{setup.seeds} seeds, {setup.epochs} epoch(s) of batch {setup.batch}, one teacher of "
        f"the sweep sampled per distilled step. Differences are paired by seed (percentage "
        f"points), 'clear' when beyond two standard errors.",
        "",
        markdown_table(header, rows),
        "",
        verdict(students, budget),
    ]
    return "\n".join(lines)


def verdict(students: dict[str, list[Run]], budget: float) -> str:
    """What the numbers say about the paper's finding: yes, no, or within noise."""

    def diffs(label: str, other: str, at: float | None = None) -> list[float]:
        base = {r.seed: r for r in students[other]}
        if at is None:
            return [r.final - base[r.seed].final for r in students[label]]
        return [r.at(at) - base[r.seed].at(at) for r in students[label]]

    def judged(values: list[float]) -> tuple[float, bool]:
        s = Summary.of_values(values)
        mean, std = s.mean or 0.0, s.std or 0.0
        return mean, s.n > 1 and abs(mean) > 2 * std / math.sqrt(s.n)

    early = max(("first 25%", "first 50%"), key=lambda k: statistics.fmean(diffs(k, "always")))
    vs_always, clear_always = judged(diffs(early, "always"))
    if clear_always and vs_always > 0:
        answer = "yes"
    elif clear_always:
        answer = "no"
    else:
        answer = "within noise"
    finding = (
        "**Paper's finding:** distilling BERT only in the first 20-50% of pretraining is best; "
        "distilling throughout can hurt efficiency."
    )
    here = (
        f"**Here:** the better early schedule, {early}, ends {paired(diffs(early, 'always'))} "
        f"points from KD throughout, and is {paired(diffs(early, 'none', budget))} points from "
        "no KD at no KD's wall-clock."
    )
    return f"{finding}\n\n{here} Early-phase KD better than KD throughout: **{answer}**."


def main(argv: Sequence[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="a small run (seconds), e.g. for tests")
    ap.add_argument("--seeds", type=int, default=None, help="student seeds (default 3)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default 5)")
    ap.add_argument("--out", type=Path, default=Path(f"bench-results/{STEM}"), help="output folder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings)")
    args = ap.parse_args(argv)
    for name in ("seeds", "epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name} must be >= 1, got {value}")
    torch.set_num_threads(args.threads)
    setup = Setup.of(args.quick, args.seeds, args.epochs)
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="recycler-mlm-") as tmp:
        bench = Bench(setup, Path(tmp))
        progress(f"{len(bench.train)} training and {len(bench.evals)} held-out sequences")
        teachers = []
        for i, lr in enumerate(setup.lrs):
            run = bench.run(f"teacher {i}", lr, 0, bench.config("teachers", None, teach=True))
            teachers.append(run)
            progress(f"teacher lr {lr:g}: MLM accuracy {run.final:.3f} in {run.total:.1f} s")
        lr = max(teachers, key=lambda r: r.final).lr
        students: dict[str, list[Run]] = {label: [] for label in SCHEDULES}
        for seed in range(1, setup.seeds + 1):
            for label, schedule in SCHEDULES.items():  # interleaved: the machine's moods alike
                run = bench.run(label, lr, seed, bench.config("students", schedule, teach=False))
                students[label].append(run)
                progress(
                    f"seed {seed} {label:>9}: {run.final:.3f} in {run.total:.1f} s, "
                    f"{run.kd['steps_distilled']} of {run.kd['steps']} steps distilled"
                )
    markdown = report(teachers, students, setup)
    info = machine()
    markdown += f"\n\nMachine: {machine_line(info)}.\n"
    data = {
        "setup": setup.__dict__,
        "machine": info,
        "teachers": teachers,
        "students": students,
        "argv": sys.argv[1:] if argv is None else list(argv),
    }
    paths = write_outputs(args.out, STEM, markdown, data)
    panels = {
        "masked-LM accuracy": {
            label: [(r.seconds, [a * 100 for a in r.accuracy]) for r in runs]
            for label, runs in students.items()
        }
    }
    paths.append(
        plot_lines(
            args.out / f"{STEM}.png",
            panels,
            xlabel="training wall-clock (s)",
            ylabel="masked-LM accuracy %",
        )
    )
    print(markdown)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
