"""The demo's sweeps: one learning-rate sweep on MNIST-1D with Optuna, plain and recycled.

Both sweeps train the same CNN on the same learning rates, in the same order, with the same
seeds (``study.enqueue_trial``); the recycled one wraps its objective with
:func:`recycler.integrations.optuna.recycle`, so each trial distils from the earlier ones.

Example:
    >>> opts = DemoOptions(epochs=2, trials=2, n_train=200, n_test=200)
    >>> [round(lr, 3) for lr in opts.lrs]
    [0.01, 0.3]
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from .._storage import LocalBlobStore, Registry, SchemaError, StorageError
from ..config import BudgetConfig, DistillConfig, InitConfig, RecycleConfig, TeachersConfig
from ..distiller import Distiller
from ..integrations.optuna import ATTR_KEY, recycle
from .task import ConvNet1D, Split, load_mnist1d
from .train import train

Progress = Callable[[str], None]
DB_NAME = "demo.db"
TEACHERS = "teachers"
PLOT = "sweep.png"
LEFTOVERS = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", PLOT)
#: The file a demo leaves in its folder: only a folder holding it is ever cleaned.
MARKER = ".recycler-demo"
STUDIES = {"plain": "demo-plain", "recycled": "demo-recycled"}
#: The recycled sweep's budget and init (``sweep_speedup.py``'s ``sp-kd-auto``).
RECYCLED_BUDGET: dict[str, Any] = {"scale": "auto", "min": 0.25, "max": 0.5}
RECYCLED_INIT: dict[str, Any] = {"source": "best", "shrink": 0.5, "perturb": 0.1}


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs; the defaults are ``make demo``'s (``--quick`` is smaller).

    Example:
        >>> DemoOptions().epochs, DemoOptions.quick().epochs
        (60, 20)
    """

    epochs: int = 60
    trials: int = 5
    out: Path = Path("recycler-demo")
    n_train: int = 1000
    n_test: int = 1000
    channels: int = 32
    lr_range: tuple[float, float] = (0.01, 0.3)
    threads: int = 1
    seed: int = 0  # trial i trains with seed + i in both sweeps; also seeds teacher sampling

    @classmethod
    def quick(cls, **changes: Any) -> DemoOptions:
        """A smaller run (about a tenth of the time), e.g. for tests."""
        return cls(**{"epochs": 20, "trials": 3, "n_train": 500, "n_test": 500, **changes})

    @property
    def lrs(self) -> list[float]:
        """The sweep's learning rates: log-spaced over ``lr_range``, smallest first."""
        lo, hi = self.lr_range
        if self.trials == 1:
            return [math.sqrt(lo * hi)]
        step = (math.log(hi) - math.log(lo)) / (self.trials - 1)
        grid = [math.exp(math.log(lo) + i * step) for i in range(self.trials)]
        return [min(hi, max(lo, float(f"{lr:.3g}"))) for lr in grid]

    @property
    def url(self) -> str:
        """The SQLite database shared by both Optuna studies and the teacher registry."""
        return f"sqlite:///{self.out.resolve() / DB_NAME}"

    @property
    def blobs(self) -> Path:
        return self.out / TEACHERS

    def config(self, registry: str | None = None, blobs: str | None = None) -> RecycleConfig:
        """The recycled sweep's configuration: the best mode ``sweep_speedup.py`` measured.

        The defaults (KD from the 5 best earlier trials, one sampled per step), plus
        shrink-and-perturb from the best earlier trial (``init``), a budget chosen from the
        sweep's own evidence within a quarter and a half of the plan (``budget: auto``), the
        teacher-logit cache (exact here: fixed sample ids, no augmentation) and seeded teacher
        sampling. The library's defaults stay as they are (whole plans, fresh starts).
        """
        return RecycleConfig(
            registry=registry or self.url,
            blobs=blobs or str(self.blobs.resolve()),
            distill=DistillConfig(cache=True),
            teachers=TeachersConfig(seed=self.seed),
            budget=BudgetConfig(**RECYCLED_BUDGET),
            init=InitConfig(**RECYCLED_INIT),
        )


@dataclass
class TrialRun:
    """One trial of a sweep: its curve on the sweep's clock and its KD accounting."""

    number: int
    lr: float
    accuracy: list[float] = field(default_factory=list)  # test accuracy after each epoch
    at: list[float] = field(default_factory=list)  # sweep seconds at each epoch's end
    started: float = 0.0  # sweep seconds
    ended: float = 0.0
    kd: dict[str, Any] = field(default_factory=dict)  # trial.user_attrs["recycler"]

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def final(self) -> float:
        return self.accuracy[-1]

    def points(self) -> list[tuple[float, float]]:
        """(sweep seconds, accuracy) after each epoch."""
        return list(zip(self.at, self.accuracy, strict=True))

    def epochs_to(self, target: float) -> int | None:
        return next((i + 1 for i, a in enumerate(self.accuracy) if a >= target), None)


@dataclass
class Sweep:
    """A finished sweep: its trials in order and its total wall-clock."""

    name: str
    trials: list[TrialRun]
    seconds: float


def clean(out: Path, url: str) -> list[str]:
    """Remove what an earlier demo left in ``out`` (only the demo's own files); their names.

    Only a folder an earlier demo marked (``MARKER``) is cleaned, and in ``teachers/`` only the
    blobs the demo's own registry registered (never one another registry references): a
    folder that holds a real registry, or any file the demo did not make, is left alone.
    Files of the demo's names in an unmarked folder raise ``ValueError``; nothing is removed.
    """
    # registry engines are cached per process and URL: one still open on the old file would
    # keep reading it after the unlink (a second demo in one Python process)
    Registry(url, out / TEACHERS).close()
    found = [name for name in (*LEFTOVERS, TEACHERS) if (out / name).exists()]
    if not (out / MARKER).is_file():
        if found:
            raise ValueError(
                f"{out} holds {', '.join(found)}, which no earlier demo made there (it has no "
                f"{MARKER} file): pick another --out; nothing was removed"
            )
        return []
    blobs = _remove_demo_blobs(out, url)
    removed = []
    for name in LEFTOVERS:
        if (out / name).exists():
            (out / name).unlink()
            removed.append(name)
    (out / MARKER).unlink()
    return [*removed, TEACHERS + "/"] if blobs else removed


def _remove_demo_blobs(out: Path, url: str) -> bool:
    """Delete the blobs the demo's registry holds (none another registry uses); True if any."""
    if not (out / DB_NAME).is_file():
        return False
    registry = Registry(url, out / TEACHERS, create=False)
    try:
        try:
            records = registry.query(status=None)
        except SchemaError:  # an older demo's schema: it is ours, upgrade to read it
            registry.upgrade()
            records = registry.query(status=None)
        keys = {r.blob_key for r in records}
        removed = False
        store = registry.blobs
        owner = registry.registry_id()
        for key in sorted(keys):
            if not isinstance(store, LocalBlobStore) or store.ref_owners(key) - {owner}:
                continue  # another registry references it: not the demo's alone
            if store.exists(key):
                store.delete(key)
                removed = True
            store.drop_ref(owner, key)
        store.remove_stale_temp(time.time())
    except StorageError:
        return False
    finally:
        registry.close()
    _prune_empty(out / TEACHERS)
    return removed


def _prune_empty(folder: Path) -> None:
    """Remove the empty folders under ``folder`` (and it, if empty); files are never touched."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for sub in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if sub.is_dir() and not sub.is_symlink():
            with contextlib.suppress(OSError):
                sub.rmdir()  # only empty ones go
    with contextlib.suppress(OSError):
        folder.rmdir()


class SweepRunner:
    """The ``plain`` or ``recycled`` sweep as an Optuna study, run one trial at a time.

    The sweep's clock runs only while one of its own trials does, so two sweeps run
    alternately (trial by trial) each see the machine's load of the same moments.
    """

    def __init__(
        self,
        kind: str,
        opts: DemoOptions,
        data: tuple[Split, Split],
        storage: optuna.storages.BaseStorage,
        progress: Progress,
    ) -> None:
        self.kind, self.opts, self.data, self.progress = kind, opts, data, progress
        self.study = optuna.create_study(
            study_name=STUDIES[kind],
            storage=storage,
            direction="maximize",
            pruner=optuna.pruners.NopPruner(),
        )
        for lr in opts.lrs:  # both sweeps: the same learning rates in the same order
            self.study.enqueue_trial({"lr": lr})
        self.runs: dict[int, TrialRun] = {}
        self._spent = 0.0  # seconds of finished trials
        self._since: float | None = None
        self._objective: Callable[[optuna.Trial], Any] = (
            recycle(self._train, config=opts.config(), metric="accuracy")
            if kind == "recycled"
            else lambda trial: self._train(trial, None)
        )

    def clock(self) -> float:
        """Seconds this sweep has run."""
        running = 0.0 if self._since is None else time.perf_counter() - self._since
        return self._spent + running

    def step(self) -> TrialRun:
        """Run the sweep's next trial."""
        self._since = time.perf_counter()
        try:
            self.study.optimize(self._timed, n_trials=1)
        finally:
            self._spent, self._since = self.clock(), None
        return self.runs[max(self.runs)]

    def result(self) -> Sweep:
        return Sweep(self.kind, [self.runs[n] for n in sorted(self.runs)], self._spent)

    def _timed(self, trial: optuna.Trial) -> Any:
        try:
            return self._objective(trial)
        finally:
            run = self.runs[trial.number]
            run.ended = self.clock()
            run.kd = dict(trial.user_attrs.get(ATTR_KEY, {}))
            self.progress(_trial_line(self.kind, run, self.opts))

    def _train(self, trial: optuna.Trial, kd: Distiller | None) -> float:
        opts = self.opts
        lr = trial.suggest_float("lr", *opts.lr_range, log=True)
        run = self.runs[trial.number] = TrialRun(trial.number, lr, started=self.clock())

        def on_epoch(epoch: int, acc: float) -> bool:
            run.accuracy.append(acc)
            run.at.append(self.clock())
            trial.report(acc, epoch)
            return False

        seed = opts.seed + trial.number
        torch.manual_seed(seed)
        model = ConvNet1D(opts.channels)
        result = train(
            model, self.data, lr=lr, epochs=opts.epochs, seed=seed, kd=kd, on_epoch=on_epoch
        )
        return result.final


def _trial_line(kind: str, run: TrialRun, opts: DemoOptions) -> str:
    teachers = f", {len(run.kd.get('teachers_used', []))} teachers" if kind == "recycled" else ""
    if run.kd.get("init_parent") is not None:
        teachers += f", from teacher {run.kd['init_parent']}"
    done = f"accuracy {run.final:.3f}" if run.accuracy else "failed"
    return (
        f"  {kind:<8} trial {run.number + 1}/{opts.trials}  lr {run.lr:.4f}{teachers}: "
        f"{done} after {len(run.accuracy)} epochs, {run.seconds:.1f} s"
    )


def warm_up(data: tuple[Split, Split], opts: DemoOptions) -> None:
    """Two tiny untimed trials, plain-style then with a teacher, on a scratch registry.

    One-time costs of the process (imports, Optuna's first trial, the first teacher load)
    then fall in neither sweep.
    """
    train_split, test_split = data
    small = (Split(train_split.x[:64], train_split.y[:64], train_split.ids[:64]), test_split)

    def tiny(trial: optuna.Trial, kd: Distiller) -> float:
        lr = trial.suggest_float("lr", *opts.lr_range, log=True)
        return train(ConvNet1D(opts.channels), small, lr=lr, epochs=1, kd=kd).final

    quiet = logging.getLogger("recycler")  # the scratch trials' own log lines say nothing
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="recycler-demo-warm-up-") as scratch:
            cfg = opts.config(f"sqlite:///{scratch}/r.db", f"{scratch}/b")
            study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
            study.optimize(recycle(tiny, config=cfg), n_trials=2)
    finally:
        quiet.setLevel(level)


def run_demo(opts: DemoOptions, progress: Progress = print) -> tuple[Sweep, Sweep]:
    """Both sweeps, trial by trial, on a clean ``opts.out``; returns (plain, recycled)."""
    opts.out.mkdir(parents=True, exist_ok=True)
    removed = clean(opts.out, opts.url)
    if removed:
        progress(f"removed the previous demo run from {opts.out}/: {', '.join(removed)}")
    (opts.out / MARKER).write_text("made by `recycler demo`: it cleans only its own files\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(opts.threads)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(opts.url)
    try:
        begin = time.perf_counter()
        data = load_mnist1d(opts.n_train, opts.n_test, seed=42)
        progress(
            f"MNIST-1D generated locally: {opts.n_train} training, {opts.n_test} test samples "
            f"({time.perf_counter() - begin:.1f} s, not counted in the sweeps)"
        )
        warm_up(data, opts)
        plain = SweepRunner("plain", opts, data, storage, progress)
        recycled = SweepRunner("recycled", opts, data, storage, progress)
        for _ in opts.lrs:  # alternately, so that both sweeps share the machine's moods
            plain.step()
            recycled.step()
    finally:
        storage.remove_session()
        storage.engine.dispose()
        optuna.logging.set_verbosity(level)
        torch.set_num_threads(threads)
    return plain.result(), recycled.result()
