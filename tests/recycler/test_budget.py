"""Budgets and weight recycling: the plan a trial with a pool trains, and where it starts."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest
import torch
from _kd_helpers import SIG, batch, fill, make_net

from recycler.config import BudgetConfig, RecycleConfig
from recycler.distiller import Distiller
from recycler.distiller._budget import decide, effective, evidence_of, reached_tag
from recycler.integrations.optuna import recycle
from recycler.integrations.ray_tune import kd_metrics
from storage import Direction, Registry


def config(tmp_path: Path, **sections: object) -> RecycleConfig:
    return RecycleConfig.from_dict(
        {"registry": f"sqlite:///{tmp_path / 'r.db'}", "blobs": str(tmp_path / "blobs"), **sections}
    )


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")


def distiller(reg: Registry, cfg: RecycleConfig, seed: int = 1) -> Distiller:
    return Distiller(
        cfg, study="s", trial_number=9, registry=reg, model=make_net(seed=seed),
        background_refresh=False,
    )  # fmt: skip


def test_budget_arithmetic() -> None:
    half = BudgetConfig(scale=0.5)
    assert decide(half, has_pool=True, evidence=[]).fraction == 0.5
    assert decide(half, has_pool=False, evidence=[]).fraction == 1.0
    assert [effective(n, 0.5) for n in (60, 7, 1, None)] == [30, 4, 1, None]
    assert effective(60, 1.0) == 60 and effective(3, 0.01) == 1
    auto = BudgetConfig(scale="auto", min=0.3, max=0.9, margin=0.1)
    assert decide(auto, has_pool=True, evidence=[]).fraction == 0.9  # no evidence: max
    assert decide(auto, has_pool=True, evidence=[0.2, 0.6, 0.4]).fraction == 0.5  # 0.4 + 0.1
    assert decide(auto, has_pool=True, evidence=[0.05]).fraction == 0.3  # bounded below
    assert decide(auto, has_pool=True, evidence=[0.95, 1.0]).fraction == 0.9  # and above
    assert "median of 3" in decide(auto, has_pool=True, evidence=[0.2, 0.6, 0.4]).why
    # init asked for a parent and found none: budget.fresh, whatever scale and evidence say
    orphan = decide(BudgetConfig(scale="auto", fresh=0.8), has_pool=True, evidence=[0.2],
                    parent=False)  # fmt: skip
    assert (orphan.fraction, orphan.why) == (0.8, "init found no parent: budget.fresh 0.8")
    assert decide(half, has_pool=True, evidence=[], parent=False).fraction == 1.0  # default
    assert decide(half, has_pool=True, evidence=[], parent=True).fraction == 0.5
    assert decide(half, has_pool=False, evidence=[], parent=False).fraction == 1.0


def test_reached_tag() -> None:
    history = [(10, 0.5), (20, 0.7), (30, 0.9)]
    assert reached_tag(history, 0.7, Direction.MAXIMIZE, 40) == "0.5"
    assert reached_tag(history, 0.95, Direction.MAXIMIZE, 40) == "never"
    assert reached_tag([(10, 2.0), (20, 1.0)], 1.5, Direction.MINIMIZE, 40) == "0.5"
    assert reached_tag(history, None, Direction.MAXIMIZE, 40) is None


def test_auto_reads_the_studys_evidence_from_a_registry(reg: Registry, tmp_path: Path) -> None:
    net = make_net()
    for number, reached in enumerate(["0.3", "0.5", "never", "0.4"]):
        reg.register(net.state_dict(), study="s", trial_number=number, metric_name="accuracy",
                     metric_value=0.6, output_signature=SIG, tags={"reached": reached})  # fmt: skip
    cfg = config(tmp_path, budget={"scale": "auto", "margin": 0.1, "evidence": 3})
    kd = distiller(reg, cfg)
    kd.plan(epochs=20, steps_per_epoch=5)
    # the 3 newest: 0.4, never (= budget.max 1.0), 0.5 -> median 0.5, + 0.1 = 0.6
    assert kd.stats()["budget"]["evidence"] == [0.4, 1.0, 0.5]
    assert kd.stats()["budget"]["fraction"] == 0.6
    assert (kd.epochs, kd.steps) == (12, 60)
    assert evidence_of([], cfg.budget) == []


def test_auto_after_a_warm_start_reads_only_warm_started_trials(
    reg: Registry, tmp_path: Path
) -> None:
    net = make_net()
    tags = [{"reached": "0.9"}, {"reached": "0.2", "init_parent": "1"}, {"reached": "never"},
            {"reached": "0.3", "init_parent": "2"}]  # fmt: skip
    for number, tag in enumerate(tags):
        reg.register(net.state_dict(), study="s", trial_number=number, metric_name="accuracy",
                     metric_value=0.5 + number / 10, output_signature=SIG, tags=tag)  # fmt: skip
    budget = BudgetConfig(scale="auto", margin=0.1, max=0.8)
    records = reg.query()
    assert evidence_of(records, budget, parented=True) == [0.3, 0.2]
    assert evidence_of(records, budget) == [0.3, 0.8, 0.2, 0.9]  # "never" counts as max
    cfg = config(tmp_path, budget={"scale": "auto", "margin": 0.1, "max": 0.8},
                 init={"from": "best"})  # fmt: skip
    kd = distiller(reg, cfg)
    kd.plan(epochs=20, steps_per_epoch=5)
    stats = kd.stats()
    # warm-started from the best (trial 3): median of 0.3 and 0.2 = 0.25, + 0.1
    assert stats["init_parent"] is not None and stats["budget"]["evidence"] == [0.3, 0.2]
    assert stats["budget"]["fraction"] == 0.35 and kd.epochs == 7


def test_a_trial_init_could_not_warm_start_trains_budget_fresh(
    reg: Registry, tmp_path: Path
) -> None:
    fill(reg, 2, width=4)  # another width: no compatible parent
    for fresh, epochs in ((None, 10), (0.7, 7)):
        budget = {"scale": 0.3} if fresh is None else {"scale": 0.3, "fresh": fresh}
        kd = distiller(reg, config(tmp_path, budget=budget, init={"from": "best"}))
        kd.plan(epochs=10, steps_per_epoch=4)
        assert kd.stats()["init_parent"] is None and kd.epochs == epochs
        assert kd.stats()["budget"]["why"].startswith("init found no parent: budget.fresh")
    same = make_net()  # the student's own shapes in the registry: a parent, and the budget
    reg.register(same.state_dict(), study="s", trial_number=5, metric_name="accuracy",
                 metric_value=0.9, output_signature=SIG)  # fmt: skip
    kd = distiller(reg, config(tmp_path, budget={"scale": 0.3}, init={"from": "best"}))
    kd.plan(epochs=10, steps_per_epoch=4)
    assert kd.stats()["init_parent"] is not None and kd.epochs == 3


def test_a_trial_with_a_pool_trains_its_budget(reg: Registry, tmp_path: Path) -> None:
    cfg = config(tmp_path, budget={"scale": 0.5})
    alone = distiller(reg, cfg)
    alone.plan(epochs=10, steps_per_epoch=4)
    assert (alone.epochs, alone.steps) == (10, 40)  # no pool: the whole plan
    assert alone.stats()["budget"]["why"] == "no pool: the whole plan"
    fill(reg, 2)
    kd = distiller(reg, cfg)
    kd.plan(epochs=10, steps_per_epoch=4)
    stats = kd.stats()
    assert (kd.epochs, kd.steps) == (5, 20)
    assert (stats["planned_epochs"], stats["planned_steps"]) == (10, 40)
    assert (stats["effective_epochs"], stats["effective_steps"]) == (5, 20)
    steps_only = distiller(reg, cfg)
    steps_only.plan(steps=33)
    assert (steps_only.epochs, steps_only.steps) == (None, 17)


def test_dur_schedules_use_the_effective_plan(reg: Registry, tmp_path: Path) -> None:
    fill(reg, 1)
    cfg = config(tmp_path, budget={"scale": 0.5}, distill={"schedule": "until 0.5dur"})
    kd = distiller(reg, cfg)
    kd.plan(epochs=8, steps_per_epoch=5)  # effective 4 epochs = 20 steps: KD on the first 10
    net = kd.model
    assert net is not None
    x, y = batch()
    for _ in range(kd.steps or 0):
        kd.loss(net(x), y, x)
    assert kd.stats()["steps_distilled"] == 10


def test_an_lr_schedule_follows_kd_epochs(reg: Registry, tmp_path: Path) -> None:
    fill(reg, 1)
    kd = distiller(reg, config(tmp_path, budget={"scale": 0.25}))
    net = kd.model
    assert net is not None
    kd.plan(epochs=12, steps_per_epoch=2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    assert kd.epochs == 3
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=kd.epochs)
    lrs = []
    x, y = batch()
    for _ in range(kd.epochs):
        for _ in range(2):
            opt.zero_grad()
            kd.loss(net(x), y, x).backward()
            opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and kd.step == kd.steps == 6


def test_init_is_shrink_teacher_plus_perturb_fresh_bitwise(reg: Registry, tmp_path: Path) -> None:
    ids = fill(reg, 3)  # metrics 0.5, 0.6, 0.7: the best is the last
    teacher = dict(reg.load(ids[-1]).tensors)
    cfg = config(tmp_path, init={"from": "best", "shrink": 0.5, "perturb": 0.1})
    kd = distiller(reg, cfg, seed=4)
    fresh = {k: v.clone() for k, v in make_net(seed=4).state_dict().items()}
    kd.plan(epochs=2, steps_per_epoch=2)
    net = kd.model
    assert net is not None
    for name, value in net.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, teacher[name] * 0.5 + fresh[name] * 0.1), name
        else:
            assert torch.equal(value, teacher[name]), name
    assert kd.stats()["init_parent"] == ids[-1]
    warm = distiller(reg, config(tmp_path, init={"from": "best"}), seed=4)
    warm.plan(epochs=2, steps_per_epoch=2)
    assert warm.model is not None
    assert all(torch.equal(v, teacher[k]) for k, v in warm.model.state_dict().items())


def test_init_falls_back_to_fresh_weights_with_one_message(
    reg: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(reg, 1, width=4)  # another width: other shapes
    kd = distiller(reg, config(tmp_path, init={"from": "best"}), seed=4)
    fresh = {k: v.clone() for k, v in make_net(seed=4).state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="recycler"):
        kd.plan(epochs=2, steps_per_epoch=2)
    messages = [r.getMessage() for r in caplog.records if "fresh weights" in r.getMessage()]
    assert len(messages) == 1 and "is not compatible: 0.weight has shape" in messages[0]
    assert kd.model is not None
    assert all(torch.equal(v, fresh[k]) for k, v in kd.model.state_dict().items())
    assert kd.stats()["init_parent"] is None and kd.stats()["init"].startswith("fresh start")
    kd.finish("complete", 0.5)
    assert [r for r in reg.lineage("s", 9) if r.kind == "init"] == []  # no parent, no init row


def test_lineage_records_the_init_parent_beside_the_kd_teachers(
    reg: Registry, tmp_path: Path
) -> None:
    ids = fill(reg, 3)  # metrics 0.5, 0.6, 0.7: the best (the init parent) is the last
    cfg = config(
        tmp_path, init={"from": "best"}, teachers={"pool": 2, "per_step": "all", "seed": 0}
    )
    kd = distiller(reg, cfg, seed=4)
    kd.plan(epochs=2, steps_per_epoch=3)
    net, (x, y) = kd.model, batch()
    assert net is not None
    for _ in range(6):
        kd.loss(net(x), y, x)
    outcome = kd.finish("complete", 0.8)
    kd.write_lineage()  # again (Ray's report, then its end): the same rows
    rows = reg.lineage("s", 9)
    assert [(r.teacher_id, r.kind, r.steps_distilled, r.weight) for r in rows] == [
        (ids[1], "kd", 6, 1.0),
        (ids[2], "init", 0, 1.0),
        (ids[2], "kd", 6, 1.0),
    ]
    assert {(r.run, r.trial_id) for r in rows} == {(kd.identity.run, None)}
    assert [r.overhead for r in rows if r.kind == "init"] == [None]
    assert outcome.info["init_parent"] == ids[2] and outcome.info["steps_distilled"] == 6
    assert [(r.trial_number, r.kind) for r in reg.taught(ids[2])] == [(9, "init"), (9, "kd")]


def test_optuna_attrs_and_ray_metrics_carry_the_plan(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, budget={"scale": 0.5}, init={"from": "best"}, teachers={"studies": ["old"]}
    )
    reg = Registry(cfg.registry, cfg.blobs)
    (parent,) = fill(reg, 1, study="old")

    @recycle(config=cfg, metric="accuracy")
    def objective(trial: optuna.Trial, kd: Distiller) -> float:
        net = make_net(seed=trial.number)
        kd.attach(net).plan(epochs=4, steps_per_epoch=2)
        x, y = batch()
        for epoch in range(kd.epochs or 0):
            for _ in range(2):
                kd.loss(net(x), y, x)
            trial.report(0.9, epoch)
        assert kd_metrics(kd)["kd_effective_steps"] == 4
        assert kd_metrics(kd)["kd_budget"] == 0.5 and kd_metrics(kd)["kd_init_parent"] == parent
        return 0.9

    study = optuna.create_study(direction="maximize", study_name="s")
    study.optimize(objective, n_trials=1)
    attrs = study.trials[0].user_attrs["recycler"]
    assert (attrs["planned_epochs"], attrs["effective_epochs"]) == (4, 2)
    assert (attrs["planned_steps"], attrs["effective_steps"]) == (8, 4)
    assert attrs["init_parent"] == parent and attrs["budget"]["fraction"] == 0.5
    # it distilled and reached its best teacher (0.5) at its first report: 2 of 8 planned steps
    mine = reg.get(attrs["teacher_id"])
    assert mine.tags["reached"] == "0.25" and mine.tags["init_parent"] == str(parent)
    lineage = [(r.teacher_id, r.kind, r.steps_distilled) for r in reg.lineage("s", 0)]
    assert lineage == [(parent, "init", 0), (parent, "kd", 4)]
