"""A Ray Tune learning-rate sweep with recycler, compared with the same sweep without it.

Both sweeps train the same 1-D CNN on MNIST-1D (generated locally, no download) over the same
learning rates and seeds, two trials at a time on the CPU. In the recycled sweep each trial
distils from the trials that finished before it (a pool of the best 5, one sampled per step),
and RegistryCallback makes each finished trial a teacher. Prints both sweeps' best and median
accuracy and wall-clock. Takes a few minutes on 2 CPUs:

    python examples/ray_tune_sweep.py [--trials 10] [--epochs 8] [--workdir DIR]

On a cluster, point ``--registry`` at PostgreSQL and ``--blobs`` at storage every node sees
(see the README's "Ray Tune" section).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from recycler.demo.task import ConvNet1D, Split, load_mnist1d
from recycler.demo.train import train
from recycler.distiller import Distiller
from recycler.integrations.ray_tune import RegistryCallback, recycled, report
from storage import Registry

Data = tuple[Split, Split]
LRS = [0.2, 0.1, 0.05, 0.3, 0.02, 0.15, 0.01, 0.07, 0.03, 0.005, 0.5, 0.002]


def train_plain(config: dict[str, Any], data: Data) -> None:
    """The sweep as one would write it without recycler."""
    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])
    model = ConvNet1D(config["channels"])

    def on_epoch(epoch: int, accuracy: float) -> None:
        tune.report({"accuracy": accuracy, "epoch": epoch + 1})

    train(
        model,
        data,
        lr=config["lr"],
        epochs=config["epochs"],
        seed=config["seed"],
        on_epoch=on_epoch,
    )


def train_recycled(config: dict[str, Any], kd: Distiller, data: Data) -> None:
    """The same loop, with the trial's Distiller and recycler's report (KD metrics, weights)."""
    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])
    model = ConvNet1D(config["channels"])

    def on_epoch(epoch: int, accuracy: float) -> None:
        report({"accuracy": accuracy, "epoch": epoch + 1}, model=model)

    train(
        model,
        data,
        lr=config["lr"],
        epochs=config["epochs"],
        seed=config["seed"],
        kd=kd,
        on_epoch=on_epoch,
    )


def sweep(
    name: str, trainable: Any, args: argparse.Namespace, callbacks: list[Any]
) -> dict[str, Any]:
    """Run one sweep; its trials' final results and its wall-clock seconds."""
    space = {
        "lr": tune.grid_search(LRS[: args.trials]),
        "epochs": args.epochs,
        "seed": 0,
        "channels": 32,
    }
    start = time.perf_counter()
    results = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="accuracy", mode="max", max_concurrent_trials=args.concurrent, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(args.workdir / "ray_results"),
            callbacks=callbacks,
            verbose=0,
        ),
    ).fit()
    seconds = time.perf_counter() - start
    if results.errors:
        raise SystemExit(f"{name}: {len(results.errors)} trials failed: {results.errors[0]}")
    trials = sorted((r.metrics for r in results), key=lambda m: LRS.index(m["config"]["lr"]))
    return {"trials": trials, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="learning rates to try (<= 12)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once (1 CPU each)")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--registry", default=None, help="default: SQLite in the workdir")
    parser.add_argument("--blobs", default=None, help="default: a folder in the workdir")
    args = parser.parse_args()
    args.workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="recycler-ray-"))).resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    config = {
        "registry": args.registry or f"sqlite:///{args.workdir / 'registry.db'}",
        "blobs": args.blobs or str(args.workdir / "teachers"),
        "teachers": {"seed": 0},
    }

    ray.init(num_cpus=args.concurrent, include_dashboard=False, log_to_driver=False)
    try:
        data = load_mnist1d(args.train_size, 1000)
        plain = sweep("plain", tune.with_parameters(train_plain, data=data), args, [])
        trainable = recycled(train_recycled, config, metric="accuracy", mode="max")
        recycled_run = sweep(
            "recycled",
            tune.with_parameters(trainable, data=data),
            args,
            [RegistryCallback(config)],
        )
    finally:
        ray.shutdown()
    show(plain, recycled_run, Registry(config["registry"], config["blobs"]), args)


def show(
    plain: dict[str, Any], rec: dict[str, Any], registry: Registry, args: argparse.Namespace
) -> None:
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.concurrent} at a time, CPU")
    header = ("lr", "plain", "recycled", "teachers", "KD steps", "overhead")
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, (7, 6, 8, 8, 8, 8), strict=True)))
    for p, r in zip(plain["trials"], rec["trials"], strict=True):
        print(
            f"{p['config']['lr']:>7g}  {p['accuracy']:>6.3f}  {r['accuracy']:>8.3f}  "
            f"{r['kd_teachers']:>8}  {r['kd_steps_distilled']:>8}  {r['kd_overhead']:>8.2f}"
        )
    print(f"\n{'sweep':<9} {'best acc':>8} {'median acc':>10} {'wall-clock':>10}")
    for name, run in (("plain", plain), ("recycled", rec)):
        accs = [m["accuracy"] for m in run["trials"]]
        print(
            f"{name:<9} {max(accs):>8.3f} {statistics.median(accs):>10.3f} {run['seconds']:>9.1f}s"
        )
    teachers = registry.query(study="recycled", final=True)
    print(f"\nregistry: {len(teachers)} teachers in {registry.url}; outputs in {args.workdir}")


if __name__ == "__main__":
    main()
