"""The README's Ray Tune recipe runs without Tune's experiment-snapshot warnings.

``report(..., model=net)`` checkpoints at every report. With ``CheckpointConfig(num_to_keep=N)``
Tune forces an experiment-state snapshot after every N checkpoints of a trial, and warns
("Experiment state snapshotting has been triggered multiple times ...") whenever two forced
snapshots come within ``TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S`` (5 s) of
each other: once a report on a small model. The recipe leaves ``num_to_keep`` out, and Tune
snapshots on its own period. The other Ray modules hide the warning (the variable at 0,
``_local_ray``); here Tune's default threshold applies.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

ray = pytest.importorskip("ray")
from _local_ray import local_ray as start_local_ray  # noqa: E402
from ray import tune  # noqa: E402

from recycler.distiller import Distiller  # noqa: E402
from recycler.integrations.ray_tune import RegistryCallback, recycled, report  # noqa: E402
from storage import Registry  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import it

THRESHOLD = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
WARNING = "snapshotting has been triggered multiple times"
BATCH = 64


def digits() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def train(config: dict[str, Any], kd: Distiller, data: tuple[torch.Tensor, ...]) -> None:
    """The recipe's loop: KD at every step, one report with a checkpoint per epoch."""
    torch.set_num_threads(1)
    x, y, x_test, y_test = data
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(net.parameters(), lr=float(config["lr"]), momentum=0.9)
    kd.attach(net).plan(epochs=config["epochs"], steps_per_epoch=math.ceil(len(y) / BATCH))
    for _ in range(config["epochs"]):
        for i in range(0, len(y), BATCH):
            xb, yb = x[i : i + BATCH], y[i : i + BATCH]
            loss = kd.loss(net(xb), yb, xb)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        with torch.inference_mode():
            accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
        report({"accuracy": accuracy}, model=net)


class Lines(logging.Handler):
    """The warnings Tune's experiment-state manager logs on the driver."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    with start_local_ray("rq"):
        yield


def sweep(tmp_path: Path, name: str, **run_options: Any) -> tuple[list[str], int]:
    """A 4-trial, 8-epoch sweep, 2 trials at a time: its snapshot warnings and its teachers."""
    cfg = {"registry": f"sqlite:///{tmp_path / 'registry.db'}", "blobs": str(tmp_path / "b")}
    lines = Lines()
    logger = logging.getLogger("ray.tune.execution.experiment_state")
    logger.addHandler(lines)
    try:
        tune.Tuner(
            tune.with_resources(
                tune.with_parameters(
                    recycled(train, cfg, metric="accuracy", mode="max"), data=digits()
                ),
                {"cpu": 1},
            ),
            param_space={"lr": tune.grid_search([0.3, 0.1, 0.03, 0.01]), "epochs": 8},
            tune_config=tune.TuneConfig(metric="accuracy", mode="max"),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(tmp_path / "ray_results"),
                callbacks=[RegistryCallback(cfg)],
                verbose=0,
                **run_options,
            ),
        ).fit()
    finally:
        logger.removeHandler(lines)
    teachers = Registry(cfg["registry"], cfg["blobs"]).query(study=name, final=True)
    return [m for m in lines.messages if WARNING in m], len(teachers)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_the_recipe_sweeps_without_snapshot_warnings(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(THRESHOLD, raising=False)  # Tune's default threshold, 5 s
    warned, teachers = sweep(tmp_path / "recipe", "quiet")
    assert teachers == 4
    assert warned == []
    # the same sweep with num_to_keep=1: the warning this test would catch, once per report or so
    warned, teachers = sweep(
        tmp_path / "keep1", "noisy", checkpoint_config=tune.CheckpointConfig(num_to_keep=1)
    )
    assert teachers == 4
    assert len(warned) >= 5, warned


def train_without_model(config: dict[str, Any], kd: Distiller) -> None:
    """Three reports without model=: the trial says once that it will be no teacher."""
    import warnings

    net = nn.Linear(64, 10)
    kd.attach(net)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for epoch in range(3):
            said = [str(w.message) for w in seen if "got no model=" in str(w.message)]
            report({"accuracy": 0.5, "epoch": epoch, "said": " | ".join(said)})


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_report_without_a_model_says_once_that_the_trial_is_no_teacher(
    local_ray: None, tmp_path: Path
) -> None:
    cfg = {"registry": f"sqlite:///{tmp_path / 'registry.db'}", "blobs": str(tmp_path / "b")}
    results = tune.Tuner(
        tune.with_resources(recycled(train_without_model, cfg, metric="accuracy"), {"cpu": 1}),
        run_config=tune.RunConfig(
            name="no-model",
            storage_path=str(tmp_path / "ray_results"),
            callbacks=[RegistryCallback(cfg)],
            verbose=0,
        ),
    ).fit()
    (result,) = list(results)
    assert result.error is None
    # said at the first report, once: the later reports see the same single warning
    said = result.metrics["said"].split(" | ")
    assert len(said) == 1 and said[0].startswith("recycler: trial 0 of 'no-model': ")
    assert said[0].endswith(
        "report() got no model=, so this trial's model will not become a teacher: pass "
        "report(metrics, model=net) (or register.enabled: false to silence this)"
    )
    assert Registry(cfg["registry"], cfg["blobs"]).query(study="no-model") == []
