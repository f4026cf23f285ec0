"""What the evidence benchmarks share: tasks, timed training runs, statistics and outputs.

``sweep_speedup.py`` and ``paper_tables.py`` import this module (it sits beside them). A
*task* is data plus a model builder; a *curve* is one training run's test accuracy and
wall-clock after every epoch. Times are ``time.perf_counter`` seconds of the run itself,
teacher loading and teacher forwards included (they happen inside the run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from recycler.demo.task import ConvNet1D, Split, load_mnist1d
from recycler.demo.train import Augment, TrainResult, train
from recycler.distiller import Distiller

Params = dict[str, Any]
Build = Callable[[Mapping[str, Any]], nn.Module]


@dataclass
class Task:
    """Data, a model builder and the defaults a benchmark trains with."""

    name: str
    data: tuple[Split, Split]
    build: Build
    epochs: int
    batch_size: int
    device: str = "cpu"
    augment: Augment | None = None
    classes: int = 10

    @property
    def chance(self) -> float:
        return 1.0 / self.classes

    def describe(self) -> str:
        train_split, test_split = self.data
        return (
            f"{self.name}: {len(train_split.y)} training / {len(test_split.y)} test samples, "
            f"{self.epochs} epochs, batch {self.batch_size}, {self.device}"
        )


def mnist1d_task(*, n_train: int, n_test: int, epochs: int, batch_size: int = 64) -> Task:
    """MNIST-1D generated locally (no download) and the demo's 3-layer Conv1d net."""

    def build(params: Mapping[str, Any]) -> nn.Module:
        return ConvNet1D(int(params.get("channels", 32)))

    data = load_mnist1d(n_train, n_test, seed=42)
    return Task("MNIST-1D", data, build, epochs, batch_size)


def make_task(args: argparse.Namespace, *, epochs: int, batch_size: int = 64) -> Task:
    """The task the command line asks for: MNIST-1D on the CPU or CIFAR-100 (``--data``).

    ``batch_size`` is MNIST-1D's (CIFAR-100 keeps its own, 128).
    """
    if args.task == "cifar100":
        from _cifar import cifar100_task

        return cifar100_task(args.data, device=args.device, epochs=epochs, limit=args.limit)
    n_train, n_test = (500, 500) if args.quick else (1000, 1000)
    return mnist1d_task(n_train=n_train, n_test=n_test, epochs=epochs, batch_size=batch_size)


@dataclass
class Curve(TrainResult):
    """One training run: test accuracy and cumulative seconds after each epoch, and its setup."""

    label: str = ""
    seed: int = 0
    params: Params = field(default_factory=dict)
    kd: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)  # the trained model (not saved)
    at: list[float] = field(default_factory=list)  # seconds since the trial began, per epoch

    @property
    def total_seconds(self) -> float:
        return self.seconds[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seed": self.seed,
            "params": self.params,
            "accuracy": self.accuracy,
            "seconds": self.seconds,
            "at": self.at,
            "kd": self.kd,
        }


def train_curve(
    task: Task,
    params: Params,
    *,
    seed: int,
    label: str = "",
    kd: Distiller | None = None,
    init: Mapping[str, torch.Tensor] | None = None,
    epochs: int | None = None,
    on_epoch: Callable[[int, float], bool | None] | None = None,
) -> Curve:
    """Train ``task.build(params)`` from seed ``seed`` (or from ``init``'s weights); its curve.

    ``params``: ``lr`` and optionally ``weight_decay`` and the builder's (``channels``).
    With ``kd``, the loop trains ``kd.epochs`` (its ``budget``) and ``kd.plan`` may set the
    weights (its ``init``). ``on_epoch(epoch, accuracy)`` runs after each epoch (e.g. to
    report it to Optuna, which feeds the Distiller's ``budget: auto`` evidence).
    """
    torch.manual_seed(seed)
    model = task.build(params).to(task.device)
    if init is not None:
        model.load_state_dict(dict(init))
    if kd is not None:
        kd.attach(model, task.build)
    result = train(
        model,
        task.data,
        lr=float(params["lr"]),
        weight_decay=float(params.get("weight_decay", 5e-4)),
        epochs=epochs or task.epochs,
        batch_size=task.batch_size,
        seed=seed,
        kd=kd,
        on_epoch=on_epoch,
        augment=task.augment,
    )
    stats = kd.stats() if kd is not None else {}
    return Curve(result.accuracy, result.seconds, label, seed, dict(params), stats, model)


# -- statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and count of some per-seed numbers (None = missing)."""

    mean: float | None
    std: float | None
    n: int
    of: int

    @classmethod
    def of_values(cls, values: Iterable[float | None]) -> Summary:
        values = list(values)
        got = [v for v in values if v is not None and math.isfinite(v)]
        mean = statistics.fmean(got) if got else None
        std = statistics.stdev(got) if len(got) > 1 else (0.0 if got else None)
        return cls(mean, std, len(got), len(values))

    def text(self, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        """``"83.2 ± 1.1"``, with ``(3/5)`` when only some seeds have a value, ``—`` for none."""
        if self.mean is None:
            return "—"
        std = self.std or 0.0
        out = f"{self.mean * scale:.{digits}f} ± {std * scale:.{digits}f}{unit}"
        return out if self.n == self.of else f"{out} ({self.n}/{self.of})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pct(values: Iterable[float | None]) -> str:
    """Accuracies (0-1) as ``mean ± std`` percentage points."""
    return Summary.of_values(values).text(100.0)


# -- output -------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    import platform

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def run_record(args: argparse.Namespace, task: str, seconds: float, **more: Any) -> dict[str, Any]:
    """What a benchmark's JSON starts with: its arguments, task, machine and duration."""
    return {"args": vars(args), "task": task, "machine": machine(), "seconds": seconds, **more}


def machine_line(info: Mapping[str, Any]) -> str:
    """One line naming the machine of :func:`machine`."""
    gpu = f", {info['cuda']}" if info["cuda"] else ""
    return (
        f"{info['processor']}, {info['cpus']} CPUs, {info['torch_threads']} torch thread(s){gpu}; "
        f"torch {info['torch']}, Python {info['python']}, {info['platform']}"
    )


def write_outputs(
    out: Path, stem: str, markdown: str, data: Mapping[str, Any], *, indent: int | None = 1
) -> list[Path]:
    """``<stem>.md`` and ``<stem>.json`` in ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{stem}.md", out / f"{stem}.json"
    md.write_text(markdown + "\n", encoding="utf-8")
    write_json(js, data, indent=indent)
    return [md, js]


def write_json(path: Path, data: Mapping[str, Any], *, indent: int | None = 1) -> Path:
    """``data`` as JSON at ``path`` (written whole, then renamed: never half a file).

    ``indent=None``: one line, for big files.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(data, indent=indent, sort_keys=True, default=_jsonable) + "\n")
    temp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def plot_lines(
    path: Path,
    panels: Mapping[str, Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]]],
    *,
    xlabel: str,
    ylabel: str = "test accuracy",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One panel per key; in each, one colour per label and one thin line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items(), strict=True):
        for colour, (label, lines) in enumerate(series.items()):
            for i, (xs, ys) in enumerate(lines):
                ax.plot(
                    xs,
                    ys,
                    color=f"C{colour}",
                    alpha=0.8,
                    linewidth=1.2,
                    label=label if i == 0 else None,
                )
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- command line -------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit code 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_common_args(ap: argparse.ArgumentParser, *, seeds: int, out: str) -> None:
    ap.add_argument("--quick", action="store_true", help="a small run (minutes), e.g. for tests")
    ap.add_argument("--seeds", type=int, default=None, help=f"replicates (default {seeds})")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (task default)")
    ap.add_argument("--out", type=Path, default=Path(out), help=f"output folder ({out})")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda: CIFAR-100 by default)")
    ap.add_argument(
        "--task",
        choices=("mnist1d", "cifar100"),
        default=None,
        help="mnist1d (generated locally) or cifar100 (needs --data)",
    )
    ap.add_argument(
        "--data", type=Path, default=None, help="folder holding cifar-100-python/ (CIFAR-100)"
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="CIFAR-100: use only this many training images"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings)")


def parse_common(ap: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check the arguments; bad ones end the program with one line and exit 2."""
    args = ap.parse_args(argv)
    if args.task is None:
        args.task = "cifar100" if args.device.startswith("cuda") else "mnist1d"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    if args.task == "cifar100" and args.data is None:
        ap.error(
            "--task cifar100 needs --data DIR, a folder holding cifar-100-python/ "
            "(nothing is downloaded: fetch CIFAR-100 once where there is internet)"
        )
    for name in ("seeds", "epochs", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name} must be >= 1, got {value}")
    torch.set_num_threads(args.threads)
    return args


class Progress:
    """Prints a line per finished run with the elapsed time, flushed at once."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, line: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.0f} s] {line}", flush=True)
        sys.stdout.flush()
