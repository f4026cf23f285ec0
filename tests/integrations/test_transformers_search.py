"""``Trainer.hyperparameter_search`` recycled: the optuna backend on SQLite, the ray backend.

Topic classification (4 help topics of ``pydoc_data.topics``) with a 2-layer BERT of hidden
32; each trial trains 2 epochs of 6 steps and evaluates after each.
"""

from __future__ import annotations

import collections
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _hf_helpers
import optuna
import pytest
from _hf_helpers import args, bert, one_thread, recycle_config, topics
from _local_ray import local_ray as start_local_ray

from recycler.demo import text
from recycler.integrations.transformers import OBJECTIVE, RecycleTrainer
from storage import Registry, Status, TeacherRecord

__all__ = ["one_thread"]  # the autouse fixture


def model_init(trial: Any) -> Any:
    return bert(num_labels=4, seed=0)


def trainer_for(cfg: dict[str, Any], out: Path) -> RecycleTrainer:
    train, test = topics()
    return RecycleTrainer(
        model_init=model_init,
        args=args(out, num_train_epochs=2, eval_strategy="epoch"),
        train_dataset=train,
        eval_dataset=test,
        compute_metrics=text.accuracy,
        recycle=cfg,
    )


def finals(registry: Registry, study: str) -> dict[int, TeacherRecord]:
    records = registry.query(study=study, final=True, status=None)
    counts = collections.Counter(r.trial_number for r in records)
    assert all(n == 1 for n in counts.values()), counts  # one teacher per trial
    return {r.trial_number: r for r in records}


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes one trial (by number) at its first report."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == self.number


def lr_space(trial: optuna.Trial) -> dict[str, float]:
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-2, log=True)}


def test_optuna_search_on_sqlite_recycles_every_later_trial(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweep.db'}"  # Optuna's study and the registry, one file
    cfg = {"registry": url, "blobs": str(tmp_path / "teachers"), "teachers": {"seed": 0}}
    trainer = trainer_for(cfg, tmp_path / "runs")
    best = trainer.hyperparameter_search(
        hp_space=lr_space,
        n_trials=4,
        direction="maximize",
        backend="optuna",
        storage=url,
        study_name="hf-lr",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=PruneTrial(2),
    )
    study = optuna.load_study(study_name="hf-lr", storage=url)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert best.run_id in {"0", "1", "3"}

    registry = Registry(url, cfg["blobs"])
    teachers = finals(registry, "hf-lr")
    assert sorted(teachers) == [0, 1, 2, 3]
    for trial in study.trials:
        attrs = trial.user_attrs["recycler"]
        rec = teachers[trial.number]
        expected = "pruned" if trial.number == 2 else "complete"
        assert (attrs["state"], rec.trial_state, rec.status) == (expected, expected, Status.READY)
        assert attrs["registered"] and attrs["teacher_id"] == rec.id
        assert attrs["kd"] is (trial.number > 0)  # every trial after the first distils
        assert (attrs["steps_distilled"] > 0) is (trial.number > 0)
        assert (rec.framework, rec.metric_name, rec.direction.value) == (
            "transformers",
            OBJECTIVE,
            "maximize",
        )
        assert rec.params == {"learning_rate": trial.params["learning_rate"]}
        assert rec.trial_id == str(trial._trial_id)
        if trial.state.name == "COMPLETE":
            assert rec.metric_value == pytest.approx(trial.value)  # the objective: accuracy
        else:
            assert rec.metric_value == pytest.approx(trial.intermediate_values[6])
            assert attrs["steps"] == 6  # pruned at its first evaluation
    assert teachers[2].trial_state == "pruned"  # not "complete"

    lineage = registry.lineage("hf-lr")
    assert {row.trial_number for row in lineage} == {1, 2, 3}
    for row in lineage:  # only earlier trials teach
        assert registry.get(row.teacher_id).trial_number < row.trial_number
    # the runs' folders are the Trainer's own: output_dir/run-{trial number}
    assert not (tmp_path / "runs").exists() or all(
        p.name.startswith("run-") for p in (tmp_path / "runs").iterdir()
    )


# -- the ray backend ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A local Ray (2 CPUs, loopback, its own temp folder); always shut down."""
    pytest.importorskip("ray.tune")
    # Ray's workers cannot import the test modules: ship their functions by value
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(_hf_helpers)
    with start_local_ray("rt") as ray:
        yield ray


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_ray_search_registers_every_trial_from_inside_and_later_trials_distil(
    local_ray: Any, tmp_path: Path
) -> None:
    from ray import tune

    cfg = recycle_config(tmp_path)
    study = f"hf-ray-{uuid.uuid4().hex[:6]}"
    trainer = trainer_for(cfg, tmp_path / "runs")
    best = trainer.hyperparameter_search(
        hp_space=lambda _: {"learning_rate": tune.loguniform(1e-3, 1e-2)},
        n_trials=3,
        direction="maximize",
        backend="ray",
        resources_per_trial={"cpu": 1},
        storage_path=str(tmp_path / "ray_results"),
        name=study,
        max_concurrent_trials=1,
        reuse_actors=True,
        verbose=0,
    )
    trials = best.run_summary.trials
    assert len(trials) == 3 and all(t.status == "TERMINATED" for t in trials)
    registry = Registry(cfg["registry"], cfg["blobs"])
    teachers = {r.trial_id: r for r in finals(registry, study).values()}
    assert set(teachers) == {t.trial_id for t in trials}
    for t in trials:
        rec, last = teachers[t.trial_id], t.last_result
        assert (rec.framework, rec.trial_state, rec.status) == (
            "transformers",
            "complete",
            Status.READY,
        )
        assert rec.metric_value == pytest.approx(last["objective"])
        assert rec.params["learning_rate"] == pytest.approx(t.config["learning_rate"])
        for key in ("kd_active", "kd_teachers", "kd_steps_distilled", "kd_overhead"):
            assert key in last
    # trials ran one at a time: the second and third distilled from the earlier ones
    taught = [t for t in trials if t.last_result["kd_steps_distilled"] > 0]
    assert len(taught) == 2, [t.last_result["kd_teachers"] for t in trials]
    students = {row.trial_number for row in registry.lineage(study)}
    assert students == {teachers[t.trial_id].trial_number for t in taught}
