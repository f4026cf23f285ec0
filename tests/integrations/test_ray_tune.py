"""Ray Tune integration on a real local Ray: sweeps, ASHA, OptunaSearch, errors, Tuner.restore.

One Ray instance (2 CPUs, loopback only) serves the module; each trial takes 1 CPU, so two
trials run at once. The task is a 2-layer MLP on scikit-learn's digits (shipped, no download).
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

ray = pytest.importorskip("ray")
from _local_ray import LOOPBACK  # noqa: E402
from _local_ray import local_ray as start_local_ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from recycler.distiller import Distiller  # noqa: E402
from recycler.integrations.ray_tune import (  # noqa: E402
    RegistryCallback,
    recycled,
    report,
    resume,
    trial_number_of,
)
from storage import Registry, Status, TeacherRecord  # noqa: E402

# Ray's workers cannot import this test module (pytest puts its folder on sys.path only in
# this process): ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

BATCH = 64
HERE = Path(__file__).parent


# -- the task, run inside Ray's workers ----------------------------------------------------


def digits() -> tuple[torch.Tensor, ...]:
    """scikit-learn's 8x8 digits: 1400 training and 397 test samples."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def mlp(width: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((net(x).argmax(1) == y).float().mean())


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.2)


def choreography(config: dict[str, Any], epoch: int, kd: Distiller) -> None:
    """What some tests' trials do at the start of an epoch, to order events between trials."""
    marker = str(config.get("marker", ""))
    if config.get("fail_at") == epoch and not os.path.exists(marker):
        raise RuntimeError("this trial fails until the marker file exists")
    if config.get("hold_at") == epoch:
        wait_until(lambda: os.path.exists(marker), "the marker file")
    if config.get("start_after"):
        wait_until(lambda: os.path.exists(config["start_after"]), "the other trial's report")
    if config.get("wait_for_teacher") and epoch == 1:
        wait_until(lambda: kd.registry.count_finished_trials(kd.study) > 0, "a teacher")


def train_digits(config: dict[str, Any], kd: Distiller, data: tuple[torch.Tensor, ...]) -> None:
    """A plain SGD loop with KD; one report (and checkpoint) per epoch."""
    torch.set_num_threads(1)
    x, y, x_test, y_test = data
    torch.manual_seed(int(config.get("seed", 0)))
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=float(config["lr"]), momentum=0.9)
    epochs = int(config.get("epochs", 3))
    kd.attach(net).plan(epochs=epochs, steps_per_epoch=math.ceil(len(y) / BATCH))
    gen = torch.Generator().manual_seed(int(config.get("seed", 0)))
    for epoch in range(resume(net, kd), epochs):
        choreography(config, epoch, kd)
        net.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), BATCH):
            idx = order[i : i + BATCH]
            loss = kd.loss(net(x[idx]), y[idx], x[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        node = ray.get_runtime_context().get_node_id()
        metrics = {"accuracy": accuracy(net, x_test, y_test), "epoch": epoch + 1, "node": node}
        report(metrics, model=net)
        if config.get("touch_after_first"):
            Path(config["touch_after_first"]).touch()


def train_case(config: dict[str, Any], kd: Distiller, data: tuple[torch.Tensor, ...]) -> None:
    train_digits({**config, **config["case"]}, kd, data)


def trainable_case(cfg: dict[str, Any], data: tuple[torch.Tensor, ...]) -> Any:
    fn = recycled(train_case, cfg, metric="accuracy", mode="max")
    return tune.with_resources(tune.with_parameters(fn, data=data), {"cpu": 1})


def interrupted_sweep(args_json: str) -> None:
    """A driver process for the restore test: a sweep that the test interrupts with Ctrl+C."""
    args = json.loads(args_json)
    ray.init(address=args["address"], _node_ip_address=LOOPBACK, log_to_driver=False)
    tune.Tuner(
        trainable_case(args["cfg"], digits()),
        param_space={"case": tune.grid_search(args["cases"])},
        tune_config=tune.TuneConfig(metric="accuracy", mode="max", max_concurrent_trials=2),
        run_config=run_config(Path(args["tmp"]), args["study"], [RegistryCallback(args["cfg"])]),
    ).fit()


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs, loopback, its own temp folder) for the module; always shut down."""
    with start_local_ray("rt"):
        yield


@pytest.fixture
def data() -> tuple[torch.Tensor, ...]:
    return digits()


def recycle_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "registry": f"sqlite:///{tmp_path / 'registry.db'}",
        "blobs": str(tmp_path / "teachers"),
        "teachers": {"seed": 0},
        **extra,
    }


def run_config(tmp_path: Path, name: str, callbacks: list[Any], **extra: Any) -> Any:
    return tune.RunConfig(
        name=name,
        storage_path=str(tmp_path / "ray_results"),
        callbacks=callbacks,
        verbose=0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        **extra,
    )


def trainable(cfg: dict[str, Any], data: tuple[torch.Tensor, ...]) -> Any:
    fn = recycled(train_digits, cfg, metric="accuracy", mode="max")
    return tune.with_resources(tune.with_parameters(fn, data=data), {"cpu": 1})


def finals(registry: Registry, study: str) -> list[TeacherRecord]:
    return registry.query(study=study, final=True)


def once_per_trial(records: list[TeacherRecord]) -> dict[str, TeacherRecord]:
    counts = collections.Counter(r.trial_id for r in records)
    assert all(n == 1 for n in counts.values()), counts
    return {str(r.trial_id): r for r in records}


# -- sweeps on a local Ray -----------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_sweep_registers_every_trial_once_and_later_trials_distil(
    local_ray: None, data: tuple[torch.Tensor, ...], tmp_path: Path
) -> None:
    cfg = recycle_config(tmp_path)
    study = f"sweep-{uuid.uuid4().hex[:6]}"
    tuner = tune.Tuner(
        trainable(cfg, data),
        param_space={"lr": tune.grid_search([0.3, 0.1, 0.05, 0.03, 0.01, 0.2])},
        tune_config=tune.TuneConfig(
            metric="accuracy",
            mode="max",
            max_concurrent_trials=2,
            reuse_actors=True,
            time_budget_s=200,
        ),
        run_config=run_config(tmp_path, study, [RegistryCallback(cfg)]),
    )
    results = tuner.fit()
    assert not results.errors
    last = {r.metrics["trial_id"]: r.metrics for r in results}
    assert len(last) == 6

    registry = Registry(cfg["registry"], cfg["blobs"])
    teachers = once_per_trial(finals(registry, study))
    assert set(teachers) == set(last)
    for trial_id, rec in teachers.items():
        assert rec.trial_number == trial_number_of(trial_id)
        assert (rec.framework, rec.trial_state, rec.metric_name) == ("ray", "complete", "accuracy")
        assert rec.metric_value == pytest.approx(last[trial_id]["accuracy"])
        assert rec.params["lr"] == last[trial_id]["config"]["lr"]
        assert rec.output_signature == "logits/2d/10" and rec.step == 66 and rec.epoch == 3
    for metrics in last.values():
        for key in ("kd_active", "kd_teachers", "kd_steps_distilled", "kd_overhead"):
            assert key in metrics
    taught = [m for m in last.values() if m["kd_teachers"] > 0 and m["kd_steps_distilled"] > 0]
    assert len(taught) >= 3, [(m["kd_teachers"], m["kd_steps_distilled"]) for m in last.values()]
    students = {r.trial_number for r in registry.lineage(study)}
    assert {trial_number_of(m["trial_id"]) for m in taught} <= students

    # the teachers live in the registry's blobs, not in Ray's checkpoint folders
    shutil.rmtree(tmp_path / "ray_results")
    report_ = registry.verify()
    assert report_.checked == 6 and report_.ok == 6
    x_test, y_test = data[2], data[3]
    for trial_id, rec in teachers.items():
        net = mlp()
        net.load_state_dict(dict(registry.load(rec).tensors))
        assert accuracy(net, x_test, y_test) == pytest.approx(last[trial_id]["accuracy"])


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_a_running_trial_picks_up_a_teacher_that_finished_meanwhile(
    local_ray: None, data: tuple[torch.Tensor, ...], tmp_path: Path
) -> None:
    cfg = recycle_config(tmp_path, teachers={"seed": 0, "refresh": "5ba"})
    study = f"midrun-{uuid.uuid4().hex[:6]}"
    reported = str(tmp_path / "long-reported")
    cases = [
        {"lr": 0.1, "epochs": 1, "start_after": reported},
        {"lr": 0.05, "epochs": 4, "wait_for_teacher": True, "touch_after_first": reported},
    ]
    results = tune.Tuner(
        trainable_case(cfg, data),
        param_space={"case": tune.grid_search(cases)},
        tune_config=tune.TuneConfig(max_concurrent_trials=2, time_budget_s=150),
        run_config=run_config(tmp_path, study, [RegistryCallback(cfg, metric="accuracy")]),
    ).fit()
    assert not results.errors
    long = next(r for r in results if r.metrics["config"]["case"]["epochs"] == 4)
    history = long.metrics_dataframe
    assert int(history["kd_teachers"].iloc[0]) == 0  # alone at first
    # the short trial joined its pool (and may have retired from it once outgrown)
    assert int(history["kd_teachers"].max()) == 1
    assert int(history["kd_steps_distilled"].iloc[-1]) > 0
    assert len(once_per_trial(finals(Registry(cfg["registry"], cfg["blobs"]), study))) == 2


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_asha_with_optuna_search_registers_pruned_trials_only_when_configured(
    local_ray: None, data: tuple[torch.Tensor, ...], tmp_path: Path
) -> None:
    base = recycle_config(tmp_path)
    tag = uuid.uuid4().hex[:6]
    with_pruned = {**base, "study": f"asha-all-{tag}"}  # register.on: [complete, pruned]
    complete_only = {**base, "study": f"asha-complete-{tag}", "register": {"on": ["complete"]}}
    # known first points (Optuna then samples the rest): good rates reach each rung first,
    # so the poor ones are below ASHA's cutoff when they get there
    points = [{"lr": v} for v in (0.3, 0.1, 0.0003, 0.0001, 0.0002, 0.05)]
    results = tune.Tuner(
        trainable(with_pruned, data),
        param_space={"lr": tune.loguniform(1e-4, 0.5), "epochs": 4},
        tune_config=tune.TuneConfig(
            metric="accuracy",
            mode="max",
            num_samples=6,
            max_concurrent_trials=2,
            reuse_actors=True,
            search_alg=OptunaSearch(points_to_evaluate=points, seed=0),
            scheduler=ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2),
            time_budget_s=200,
        ),
        # two callbacks, two studies: the same trials registered under both policies
        run_config=run_config(
            tmp_path,
            f"asha-{tag}",
            [RegistryCallback(with_pruned), RegistryCallback(complete_only)],
        ),
    ).fit()
    assert not results.errors
    iterations = {r.metrics["trial_id"]: r.metrics["training_iteration"] for r in results}
    stopped = {t for t, n in iterations.items() if n < 4}
    full = set(iterations) - stopped
    assert stopped and full, iterations

    registry = Registry(base["registry"], base["blobs"])
    everyone = once_per_trial(finals(registry, with_pruned["study"]))
    assert set(everyone) == set(iterations)
    assert {t for t, r in everyone.items() if r.trial_state == "pruned"} == stopped
    assert {t for t, r in everyone.items() if r.trial_state == "complete"} == full
    assert all(everyone[t].step == 22 * iterations[t] for t in everyone)
    assert set(once_per_trial(finals(registry, complete_only["study"]))) == full
    # OptunaSearch names trials with hex ids: their numbers are hashes, distinct here
    assert len({r.trial_number for r in everyone.values()}) == 6


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_errored_trial_keeps_no_teacher_and_restore_adds_no_duplicate(
    local_ray: None, data: tuple[torch.Tensor, ...], tmp_path: Path
) -> None:
    cfg = recycle_config(tmp_path, register={"every": "1ep"})
    study = f"restore-{uuid.uuid4().hex[:6]}"
    marker = str(tmp_path / "fixed")
    cases = [
        {"lr": 0.1, "epochs": 3},
        {"lr": 0.05, "epochs": 3, "fail_at": 2, "marker": marker},  # errors after 2 checkpoints
        {"lr": 0.2, "epochs": 3},
        {"lr": 0.03, "epochs": 4, "hold_at": 2, "marker": marker},  # running when interrupted
    ]
    # a real driver process, interrupted with Ctrl+C (SIGINT) once two trials are teachers
    args = {"address": ray.get_runtime_context().gcs_address, "cfg": cfg, "cases": cases}
    args.update(study=study, tmp=str(tmp_path))
    registry = Registry(cfg["registry"], cfg["blobs"])
    log = tmp_path / "driver.log"
    with log.open("wb") as out:
        driver = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import test_ray_tune as t; t.interrupted_sweep({json.dumps(args)!r})",
            ],
            cwd=HERE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 150
            while registry.count_finished_trials(study) < 2:
                assert driver.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            driver.send_signal(signal.SIGINT)
            assert driver.wait(timeout=90) == 0, log.read_text()[-3000:]
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    assert "Experiment has been interrupted" in log.read_text()
    results = tune.Tuner.restore(
        str(tmp_path / "ray_results" / study), trainable_case(cfg, data), resume_errored=True
    ).get_results()
    failed = next(r for r in results if r.error is not None).metrics["trial_id"]
    everything = registry.query(study=study, status=None)
    assert not [r for r in everything if r.trial_id == failed and r.status is Status.READY]
    assert [r for r in everything if r.trial_id == failed and r.status is Status.DELETED]
    before = once_per_trial(finals(registry, study))
    # the two trials that completed before the interrupt; the held one had not
    assert sorted(r.params["case"]["lr"] for r in before.values()) == [0.1, 0.2]

    Path(marker).touch()
    restored = tune.Tuner.restore(
        str(tmp_path / "ray_results" / study), trainable_case(cfg, data), resume_errored=True
    ).fit()
    assert not restored.errors
    after = once_per_trial(finals(registry, study))
    assert set(after) == {r.metrics["trial_id"] for r in restored} and len(after) == 4
    assert {t: r.id for t, r in before.items()} == {t: after[t].id for t in before}
    # the failed trial went on from the checkpoint it filed before raising, clock included
    # (the held one from its latest filed checkpoint, or afresh if Tune had filed none)
    by_id = {r.metrics["trial_id"]: r for r in restored}
    assert list(by_id[failed].metrics_dataframe["epoch"]) == [1, 2, 3]
    for trial_id, result in by_id.items():
        epochs = result.metrics["config"]["case"]["epochs"]
        assert result.metrics["epoch"] == epochs and after[trial_id].step == 22 * epochs
    ready = registry.query(study=study)
    steps = collections.Counter((r.trial_id, r.step) for r in ready)
    assert all(n == 1 for n in steps.values()), steps
    assert registry.verify().ok == len(ready)
