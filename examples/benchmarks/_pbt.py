"""Ray Tune Population Based Training as a sweep baseline for ``sweep_speedup.py``.

Each member trains with :class:`recycler.demo.train.Run`; at every perturbation interval it
writes its state (weights, momentum, epochs done) as safetensors, and PBT copies the better
members' states into the worse ones with perturbed learning rate and weight decay. Every
reported epoch carries the seconds the member spent on it (training, evaluation and any
checkpoint write or restore). The whole population runs at once (PBT compares members as
they go), more processes than cores, so a member's seconds are its CPU time
(``time.process_time``): on one torch thread that is the wall-clock the member would take
alone. The sweep's cost is the sum over members, as for a sweep run one trial after another;
Ray's own start-up and scheduling are left out.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _harness import Task
from safetensors.torch import load_file, save_file

from recycler.demo.task import Split
from recycler.demo.train import Run

STATE_FILE = "run.safetensors"
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


def member(config: Mapping[str, Any], task: Task, interval: int, events: str) -> None:
    """One PBT member: trains epoch by epoch, reporting accuracy to Ray Tune.

    Each epoch's accuracy and seconds also go to the ``events`` file (one JSON line, appended),
    so epochs whose results PBT discards (a member exploited meanwhile) still count as cost.
    """
    from ray import tune

    torch.set_num_threads(1)
    torch.manual_seed(int(config["seed"]))
    epochs = task.epochs
    run = Run(
        task.build(config).to(task.device),
        on_device(task.data, task.device),
        lr=float(config["lr"]),
        weight_decay=float(config["weight_decay"]),
        epochs=epochs,
        batch_size=task.batch_size,
        seed=int(config["seed"]),
        augment=task.augment,
    )
    start = time.process_time()
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a restart, or PBT's exploit: continue from that state
        with checkpoint.as_directory() as folder:
            run.load_state(load_file(str(Path(folder) / STATE_FILE)))
    while run.epochs_done < epochs:
        accuracy = run.epoch()
        metrics = {"accuracy": accuracy, "epoch": run.epochs_done}
        if run.epochs_done % interval and run.epochs_done < epochs:
            _log(events, accuracy, start)
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory(prefix="pbt-") as folder:
                save_file(run.state(), str(Path(folder) / STATE_FILE))
                _log(events, accuracy, start)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        start = time.process_time()


def _log(events: str, accuracy: float, start: float) -> None:
    line = {"at": time.time(), "seconds": time.process_time() - start, "accuracy": accuracy}
    with open(events, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def read_trace(path: Path) -> list[tuple[float, float]]:
    """(cumulative member seconds, accuracy) of every epoch any member trained, in time order."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    out, spent = [], 0.0
    for row in sorted(rows, key=lambda r: r["at"]):
        spent += row["seconds"]
        out.append((spent, row["accuracy"]))
    return out


def start_ray(ip: str, cpus: int = 2) -> str:
    """A local Ray on loopback address ``ip``; its temporary folder (remove it after)."""
    import ray

    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_AUTH_TOKEN", uuid.uuid4().hex * 2)  # never read ~/.ray
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Ray's socket paths are bounded
    here = str(Path(__file__).resolve().parent)
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        _node_ip_address=ip,
        _temp_dir=temp,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": here}},
    )
    return temp


def stop_ray(temp: str) -> None:
    import ray

    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def on_device(data: tuple[Split, Split], device: str) -> tuple[Split, Split]:
    """The splits' tensors on ``device``."""
    train, test = (Split(s.x.to(device), s.y.to(device), s.ids.to(device)) for s in data)
    return train, test


def pbt_sweep(
    population: Sequence[Mapping[str, Any]],
    task: Task,
    *,
    bounds: Mapping[str, tuple[float, float]],
    seed: int,
    workdir: Path,
    cpus: int = 2,
) -> list[tuple[float, float]]:
    """Run PBT from ``population`` (configs with lr, weight_decay, channels, seed); its trace.

    ``bounds``: the log-uniform ranges PBT resamples ``lr`` and ``weight_decay`` from.
    """
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # no line per exploit
    random.seed(seed)  # PBT's explore and exploit draw from Python's random module
    interval = max(1, task.epochs // 5)
    share = {"cpu": cpus / len(population)}  # all members at once
    if task.device.startswith("cuda"):
        share["gpu"] = 1 / len(population)
    space = {key: tune.loguniform(*bounds[key]) for key in ("lr", "weight_decay")}
    pbt = PopulationBasedTraining(
        time_attr="epoch",
        perturbation_interval=interval,
        hyperparam_mutations=space,
        quantile_fraction=0.25,
    )
    events = workdir / f"pbt-events-{uuid.uuid4().hex[:8]}.jsonl"
    events.touch()
    trainable = tune.with_resources(
        tune.with_parameters(
            member,
            task=replace(task, data=on_device(task.data, "cpu")),  # sent through Ray's store
            interval=interval,
            events=str(events),
        ),
        share,
    )
    grid = tune.Tuner(
        trainable,
        param_space={**space, "channels": tune.choice([32]), "seed": tune.randint(0, 10**9)},
        tune_config=tune.TuneConfig(
            metric="accuracy",
            mode="max",
            scheduler=pbt,
            num_samples=len(population),
            search_alg=BasicVariantGenerator(points_to_evaluate=[dict(p) for p in population]),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"pbt-{uuid.uuid4().hex[:8]}",
            storage_path=str(workdir),
            verbose=0,
        ),
    ).fit()
    if grid.errors:
        raise RuntimeError(f"PBT: {len(grid.errors)} members failed: {grid.errors[0]}")
    return read_trace(events)
