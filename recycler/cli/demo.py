"""``recycler demo``: a learning-rate sweep on MNIST-1D, plain and recycled, on the CPU.

The demo's code (and Optuna, torch's training) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ._base import Parser, Subparsers, non_negative_int, positive_int


def add(sub: Subparsers, common: Parser) -> None:
    """Add ``demo`` to the command's subparsers."""
    p = sub.add_parser(
        "demo",
        help="run a learning-rate sweep twice, plain and recycled, and compare (CPU, about 1 min)",
        description="Run a 5-point learning-rate sweep on MNIST-1D (generated locally) twice "
        "with Optuna: plain, then recycled (each trial starts from the best earlier trial's "
        "weights, shrunk and perturbed, distils from the earlier trials and trains a budget "
        "chosen from the sweep's evidence). Prints a table per trial, a summary with the "
        "sweep-level speed-up and the commands to inspect the registry it filled; writes "
        "a plot. Its SQLite database (both studies and the registry) and teacher blobs live in "
        "--out, which is cleaned of an earlier demo's files first.",
    )
    p.add_argument("--epochs", type=positive_int, help="epochs per trial (default 60; quick 20)")
    p.add_argument("--trials", type=positive_int, help="learning rates (default 5; quick 3)")
    p.add_argument(
        "--out", type=Path, default=Path("recycler-demo"), help="folder (default ./recycler-demo)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smaller run: 3 learning rates, 20 epochs, 500 samples (about 15 s)",
    )
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="trial i uses seed+i (default 0)"
    )
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from ..demo.report import plot, summarize, summary_text, trial_table
    from ..demo.sweep import PLOT, STUDIES, DemoOptions, run_demo

    changes = {"out": args.out, "threads": args.threads, "seed": args.seed}
    changes.update({k: v for k in ("epochs", "trials") if (v := getattr(args, k)) is not None})
    opts = DemoOptions.quick(**changes) if args.quick else DemoOptions(**changes)
    lrs = ", ".join(f"{lr:.4f}" for lr in opts.lrs)
    print(
        f"recycler demo: MNIST-1D, {opts.n_train} training samples, Conv1d+BatchNorm CNN "
        f"({opts.channels} channels), SGD + cosine, {opts.epochs} epochs, learning rates {lrs}, "
        f"swept twice (plain, then recycled); CPU, torch threads: {opts.threads}"
    )
    print(
        "recycled sweep: the best mode of sweep_speedup.py: RecycleConfig defaults (KD: mse on "
        "standardised logits, weight 1, every step; pool: the best 5 earlier trials, 1 sampled "
        "per step) plus init: {from: best, shrink: 0.5, perturb: 0.1} (shrink-and-perturb "
        "from the best earlier trial), budget: {scale: auto, min: 0.25, max: 0.5} (a trial "
        "with teachers trains a quarter to a half of its plan, chosen from when earlier "
        "recycled trials reached their best teacher), distill.cache: true (exact here: no "
        "augmentation) and teachers.seed"
    )
    begin = time.perf_counter()
    plain, recycled = run_demo(opts, progress=_progress)
    summary = summarize(plain, recycled)
    print()
    print(trial_table(plain, recycled, summary.target))
    print()
    print(summary_text(summary, opts.trials))
    print()
    print(f"plot: {plot(plain, recycled, summary.target, opts.out / PLOT)}")
    print(f"demo wall-clock: {time.perf_counter() - begin:.0f} s")
    _print_commands(opts.out, STUDIES["recycled"])
    return 0


def _progress(line: str) -> None:
    print(line, flush=True)


def _print_commands(out: Path, study: str) -> None:
    storage = shlex.quote(f"sqlite:///{out / 'demo.db'}")
    where = f"--registry {storage} --blobs {shlex.quote(str(out / 'teachers'))}"
    print("\ninspect the registry it filled:")
    for cmd in (
        f"recycler {where} teachers list --study {study}",
        f"recycler {where} lineage {study}",
        f"recycler {where} teachers verify",
    ):
        print(f"  {cmd}")
    print(f"the Optuna studies demo-plain and {study} are in the same file: {storage}")
    sys.stdout.flush()
