"""The trial lifecycle in the core: register policy, intermediate checkpoints, finish, resume."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from _kd_helpers import batch, fill, make_net

from recycler.config import RecycleConfig
from recycler.distiller import Distiller, checkpoint_due, not_registered
from recycler.integrations.optuna import recycle
from recycler.time import Clock, Time
from storage import Registry, Status, TeacherQuery


def config(tmp_path: Path, **sections: object) -> RecycleConfig:
    return RecycleConfig.from_dict(
        {"registry": f"sqlite:///{tmp_path / 'r.db'}", "blobs": str(tmp_path / "blobs"), **sections}
    )


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")


def own(reg: Registry, study: str = "s", number: int = 9) -> list[tuple[bool, str, int | None]]:
    rows = reg.query(TeacherQuery(study=study))
    return sorted((r.final, r.trial_state, r.step) for r in rows if r.trial_number == number)


def test_register_policy_names_why() -> None:
    assert not_registered(RecycleConfig(), "complete") is None
    assert not_registered(RecycleConfig(), "pruned") is None
    only = RecycleConfig(register={"on": ["complete"]})
    assert not_registered(only, "pruned") == "register.on does not include pruned"
    assert not_registered(only, "running") is None  # intermediate checkpoints
    off = RecycleConfig(register={"enabled": False})
    assert not_registered(off, "complete") == "register.enabled is false"
    assert not_registered(RecycleConfig(), "fail") == "the trial failed"


def test_register_honours_the_config(reg: Registry, tmp_path: Path) -> None:
    net = make_net()
    off = Distiller(config(tmp_path, register={"enabled": False}), study="s", trial_number=9,
                    registry=reg, model=net)  # fmt: skip
    assert off.register(metric=0.7) is None
    only = Distiller(config(tmp_path, register={"on": ["complete"]}), study="s", trial_number=9,
                     registry=reg, model=net)  # fmt: skip
    assert only.register(metric=0.7, state="pruned") is None
    assert own(reg) == []
    assert only.register(metric=0.7) is not None
    assert own(reg) == [(True, "complete", 0)]


def test_checkpoint_due_rule() -> None:
    clock = Clock(step=30, epoch=3, steps_per_epoch=10)
    assert checkpoint_due(Time.parse("2ep"), clock, 10)
    assert not checkpoint_due(Time.parse("2ep"), clock, 15)
    assert not checkpoint_due(None, clock, 0)
    assert not checkpoint_due(Time.parse("1ep"), Clock(step=30, epoch=3, steps_per_epoch=10,
                                                       planned_epochs=3), 10)  # fmt: skip
    assert checkpoint_due(Time.parse("2ep"), None, 0)  # no clock: every checkpoint counts


def test_intermediate_checkpoints_then_finish(reg: Registry, tmp_path: Path) -> None:
    net = make_net()
    kd = Distiller(config(tmp_path, register={"every": "2ep"}), study="s", trial_number=9,
                   registry=reg, model=net)  # fmt: skip
    kd.plan(epochs=6, steps_per_epoch=2)
    x, y = batch()
    made = []
    for _ in range(6):
        for _ in range(2):
            kd.loss(net(x), y, x)
        made.append(kd.report(metric=0.5))
    assert [r is not None for r in made] == [False, True, False, True, False, False]
    outcome = kd.finish("complete", 0.8)
    assert outcome.info["registered"] and outcome.teacher_id is not None
    assert outcome.info["intermediate_teachers"] == [r.id for r in made if r is not None]
    assert own(reg) == [(False, "running", 4), (False, "running", 8), (True, "complete", 12)]


def test_a_failed_trial_keeps_no_teacher(reg: Registry, tmp_path: Path) -> None:
    net = make_net()
    kd = Distiller(config(tmp_path, register={"every": "1ep"}), study="s", trial_number=9,
                   registry=reg, model=net)  # fmt: skip
    kd.plan(epochs=3, steps_per_epoch=1)
    x, y = batch()
    kd.loss(net(x), y, x)
    rec = kd.report(metric=0.5)
    assert rec is not None
    outcome = kd.finish("fail", why="ValueError: boom")
    assert outcome.reason == "ValueError: boom" and not outcome.info["registered"]
    assert own(reg) == []
    assert reg.get(rec.id).status is Status.DELETED


def test_finish_without_a_model_says_so(reg: Registry, tmp_path: Path) -> None:
    kd = Distiller(config(tmp_path), study="s", trial_number=9, registry=reg)
    with pytest.warns(
        RuntimeWarning, match="trial 9 not registered: register\\(\\) needs the model"
    ):
        outcome = kd.finish("complete", 0.5)
    assert outcome.record is None and "needs the model" in str(outcome.reason)


def test_optuna_registers_intermediate_teachers_on_register_every(tmp_path: Path) -> None:
    cfg = config(tmp_path, register={"every": "2ep"})

    @recycle(config=cfg, metric="accuracy")
    def objective(trial: optuna.Trial, kd: Distiller) -> float:
        net = make_net(seed=trial.number)
        kd.attach(net).plan(epochs=4, steps_per_epoch=1)
        x, y = batch()
        for epoch in range(4):
            kd.loss(net(x), y, x)
            trial.report(0.1 * epoch, epoch)
        return 0.5

    study = optuna.create_study(direction="maximize", study_name="s")
    study.optimize(objective, n_trials=1)
    reg = Registry(cfg.registry, cfg.blobs)
    assert own(reg, number=0) == [(False, "running", 2), (True, "complete", 4)]
    attrs = study.trials[0].user_attrs["recycler"]
    assert len(attrs["intermediate_teachers"]) == 1 and attrs["registered"]


def test_state_dict_resume_equals_an_uninterrupted_twin(reg: Registry, tmp_path: Path) -> None:
    fill(reg, 3)
    cfg = config(
        tmp_path,
        teachers={"seed": 5, "pool": 3},
        distill={"schedule": "every 4ba for 2ba"},
        register={"enabled": False},
    )
    x, y = batch()

    def run(kd: Distiller, steps: int) -> list[bool]:
        net = kd.model
        assert net is not None
        out = []
        for _ in range(steps):
            before = kd.stats()["steps_distilled"]
            kd.loss(net(x), y, x)
            out.append(kd.stats()["steps_distilled"] > before)
        return out

    def distiller() -> Distiller:
        kd = Distiller(cfg, study="s", trial_number=9, registry=reg, model=make_net(seed=1),
                       background_refresh=False)  # fmt: skip
        return kd.plan(epochs=4, steps_per_epoch=6)

    twin = distiller()
    whole = run(twin, 24)
    first = distiller()
    halves = run(first, 11)
    saved = first.state_dict()
    resumed = distiller()
    resumed.load_state_dict(saved)
    halves += run(resumed, 13)
    assert halves == whole and sum(whole) == 12
    assert resumed.accounting.used == twin.accounting.used
    assert resumed.stats()["steps_distilled"] == twin.stats()["steps_distilled"] == 12
    assert resumed.step == 24 and resumed.accounting.teacher_s >= saved["accounting"]["teacher_s"]
    with pytest.raises(ValueError, match="not a Distiller state"):
        resumed.load_state_dict({"version": 99})


def test_lineage_after_resume_counts_every_step(reg: Registry, tmp_path: Path) -> None:
    (tid,) = fill(reg, 1)
    cfg = config(tmp_path, register={"enabled": False})
    x, y = batch()
    first = Distiller(cfg, study="s", trial_number=9, registry=reg, model=make_net())
    for _ in range(5):
        first.loss(make_net()(x), y, x)
    first.write_lineage()
    again = Distiller(cfg, study="s", trial_number=9, registry=reg, model=make_net())
    again.load_state_dict(first.state_dict())
    for _ in range(3):
        again.loss(make_net()(x), y, x)
    again.finish("complete", 0.5)
    assert [(r.teacher_id, r.steps_distilled) for r in reg.lineage("s", 9)] == [(tid, 8)]
    assert torch.is_tensor(x)
