"""Resume that loses nothing: a Ray Tune trial interrupted and restored with ``Tuner.restore``
ends with the same lineage and the same schedule decisions as an uninterrupted twin.

Three READY teachers of another study form a fixed pool (the students register nothing), so
every difference between the twins comes from what the checkpoint carried. Both twins run in
one experiment (trial numbers 0 and 1 of one study); the schedule distils epochs 0, 2 and 4 of
6, one teacher drawn per step. The interrupted twin raises right after reporting epoch 3, so
it resumes into an epoch without KD (where a lost "distilled at the previous report" would
show) and its sampler must go on drawing where it stopped two epochs earlier.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

ray = pytest.importorskip("ray")
from _local_ray import local_ray as start_local_ray  # noqa: E402
from ray import tune  # noqa: E402
from test_ray_tune import digits, mlp, recycle_config  # noqa: E402

from recycler.distiller import Distiller  # noqa: E402
from recycler.integrations._ray_common import read_meta, read_weights  # noqa: E402
from recycler.integrations.ray_tune import (  # noqa: E402
    RegistryCallback,
    recycled,
    report,
    resume,
    trial_number_of,
)
from storage import Registry  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

EPOCHS, STEPS, BATCH = 6, 4, 64
CRASH_AFTER = 3  # reports before the interrupted twin raises
SCHEDULE = "every 2ep for 1ep"  # epochs 0, 2, 4 distil
DISTILLED = 3 * STEPS
# what decides and counts KD. Left out: kd_overhead and the teacher seconds (wall-clock), and
# kd_teachers, the pool loaded now: a resumed trial loads it at its next distilled step, so it
# reads 0 at a report of an epoch without KD right after the resume
DECISIONS = ("kd_active", "kd_steps", "kd_steps_distilled", "kd_teachers_used")


def train(config: dict[str, Any], kd: Distiller) -> None:
    """Plain SGD (no optimizer state to lose) on a fixed batch order per epoch."""
    torch.set_num_threads(1)
    x, y, x_test, y_test = digits()
    x, y = x[: STEPS * BATCH], y[: STEPS * BATCH]
    torch.manual_seed(0)
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    kd.attach(net).plan(epochs=EPOCHS, steps_per_epoch=STEPS)
    start = resume(net, kd)
    for epoch in range(start, EPOCHS):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for i in range(STEPS):
            idx = order[i * BATCH : (i + 1) * BATCH]
            loss = kd.loss(net(x[idx]), y[idx], x[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        with torch.inference_mode():
            acc = float((net(x_test).argmax(1) == y_test).float().mean())
        report({"accuracy": acc, "epoch": epoch + 1, "start_epoch": start}, model=net)
        marker = Path(str(config["crash_marker"])) if config["crash_marker"] else None
        if marker is not None and epoch + 1 == CRASH_AFTER and not marker.exists():
            marker.touch()
            raise RuntimeError("interrupted after epoch 3 (first run only)")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray of 2 CPUs on loopback for this module, as in test_ray_tune.py."""
    with start_local_ray("rr"):
        yield


def fill_teachers(registry: Registry, study: str) -> list[int]:
    """Three READY teachers with the student's architecture, in their own study."""
    ids = []
    for i in range(3):
        torch.manual_seed(100 + i)
        rec = registry.register(
            mlp().state_dict(),
            study=study,
            trial_number=i,
            metric_name="accuracy",
            metric_value=0.5 + 0.1 * i,
            output_signature="logits/2d/10",
        )
        ids.append(rec.id)
    return ids


def last_weights(result: Any) -> dict[str, torch.Tensor]:
    with result.checkpoint.as_directory() as folder:
        loaded = read_weights(folder, read_meta(folder))
    assert loaded is not None
    return loaded[0]


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_restored_trial_ends_with_the_lineage_and_schedule_of_its_uninterrupted_twin(
    local_ray: None, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    teacher_study, study = f"teachers-{tag}", f"resume-{tag}"
    cfg = recycle_config(
        tmp_path,
        distill={"schedule": SCHEDULE},
        teachers={"seed": 7, "pool": 3, "per_step": 1, "studies": [teacher_study]},
        register={"enabled": False},  # the pool stays the same three teachers throughout
    )
    registry = Registry(cfg["registry"], cfg["blobs"])
    teachers = fill_teachers(registry, teacher_study)
    marker = tmp_path / "interrupted"
    fn = tune.with_resources(recycled(train, cfg, metric="accuracy", mode="max"), {"cpu": 1})
    run_config = tune.RunConfig(
        name=study,
        storage_path=str(tmp_path / "ray_results"),
        callbacks=[RegistryCallback(cfg)],
        verbose=0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
    )
    first = tune.Tuner(
        fn,
        param_space={"crash_marker": tune.grid_search(["", str(marker)])},
        tune_config=tune.TuneConfig(metric="accuracy", mode="max", max_concurrent_trials=2),
        run_config=run_config,
    ).fit()
    assert marker.exists() and len(first.errors) == 1
    crashed = next(r for r in first if r.error is not None).metrics["trial_id"]
    # the lineage so far: epochs 0 and 2 distilled before the interrupt
    partial = registry.lineage(study, trial_number_of(crashed))
    assert sum(r.steps_distilled for r in partial) == 2 * STEPS

    restored = tune.Tuner.restore(str(tmp_path / "ray_results" / study), fn, resume_errored=True)
    results = restored.fit()
    assert not results.errors
    by_id = {r.metrics["trial_id"]: r for r in results}
    assert len(by_id) == 2
    (twin,) = (r for t, r in by_id.items() if t != crashed)
    again = by_id[crashed]

    # the restored trial went on from its checkpoint: epochs 4-6 started at epoch 3
    history = again.metrics_dataframe
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))
    assert list(history["start_epoch"]) == [0] * CRASH_AFTER + [CRASH_AFTER] * (EPOCHS - 3)
    assert list(twin.metrics_dataframe["start_epoch"]) == [0] * EPOCHS

    # the same schedule decisions, report by report
    expected = twin.metrics_dataframe[list(DECISIONS)].to_dict("records")
    assert again.metrics_dataframe[list(DECISIONS)].to_dict("records") == expected
    assert [row["kd_active"] for row in expected] == [1, 0, 1, 0, 1, 0]
    assert [row["kd_steps_distilled"] for row in expected] == [4, 4, 8, 8, 12, 12]

    # the same lineage: each teacher, and how many steps it taught
    rows = {
        trial_id: [
            (r.teacher_id, r.steps_distilled)
            for r in registry.lineage(study, trial_number_of(trial_id))
        ]
        for trial_id in by_id
    }
    assert rows[crashed] == rows[twin.metrics["trial_id"]]
    assert sum(steps for _, steps in rows[crashed]) == DISTILLED
    assert {tid for tid, _ in rows[crashed]} <= set(teachers)
    assert len(rows[crashed]) >= 2  # the draws really mixed teachers

    # nothing lost in the weights either, and the pool never changed
    assert again.metrics["accuracy"] == twin.metrics["accuracy"]
    ours, theirs = last_weights(again), last_weights(twin)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert sorted(r.id for r in registry.query(study=teacher_study)) == teachers
    assert registry.query(study=study, status=None) == []
