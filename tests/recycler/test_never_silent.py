"""Recycling never silently does nothing: each case works, or says so once with what to do."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from _kd_helpers import SIG, batch, fill, make_net

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from recycler.errors import ConfigError
from recycler.integrations.optuna import recycle, register_trial
from storage import Registry


def config(tmp_path: Path, **sections: object) -> RecycleConfig:
    return RecycleConfig.from_dict(
        {"registry": f"sqlite:///{tmp_path / 'r.db'}", "blobs": str(tmp_path / "blobs"), **sections}
    )


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")


def distiller(reg: Registry, cfg: RecycleConfig) -> Distiller:
    return Distiller(cfg, study="s", trial_number=9, registry=reg, model=make_net(seed=1),
                     metric_name="accuracy", background_refresh=False)  # fmt: skip


def test_a_loss_without_inputs_says_so_once(reg: Registry, tmp_path: Path) -> None:
    fill(reg, 2)
    kd = distiller(reg, config(tmp_path))
    net = kd.model
    assert net is not None
    x, y = batch()
    with pytest.warns(RuntimeWarning) as seen:
        for _ in range(3):
            kd.loss(net(x), y)
    said = [str(w.message) for w in seen if "no inputs" in str(w.message)]
    assert said == [
        "recycler: trial 9 of 's': kd.loss() got no inputs, so no teacher can run and this "
        "trial trains without KD: pass what the student got, kd.loss(logits, y, x)"
    ]
    assert "recycling off (kd.loss() got no inputs)" in kd.summary()


def test_a_schedule_that_never_fires_says_so_at_plan(reg: Registry, tmp_path: Path) -> None:
    kd = distiller(reg, config(tmp_path, distill={"schedule": "from 40ep"}))
    with pytest.warns(RuntimeWarning, match="'from 40ep' never distils within this trial's plan "
                      "of 3 epochs, so it trains without KD"):  # fmt: skip
        kd.plan(epochs=3, steps_per_epoch=2)
    assert "the schedule never distils within the plan" in kd.summary()


def test_a_dur_schedule_without_a_plan_names_the_fix(reg: Registry, tmp_path: Path) -> None:
    fill(reg, 1)
    kd = distiller(reg, config(tmp_path, distill={"schedule": "until 0.3dur"}))
    net = kd.model
    assert net is not None
    x, y = batch()
    with pytest.raises(ConfigError, match=r"no planned length: call kd.plan\(epochs=\.\.\."):
        kd.loss(net(x), y, x)


def test_the_summary_line(reg: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tid,) = fill(reg, 1)
    kd = distiller(reg, config(tmp_path))
    kd.plan(epochs=2, steps_per_epoch=2)
    net = kd.model
    assert net is not None
    x, y = batch()
    for _ in range(4):
        kd.loss(net(x), y, x)
    with caplog.at_level(logging.INFO, logger="recycler"):
        outcome = kd.finish("complete", 0.7)
    line = outcome.info["summary"]
    assert line.startswith(f"trial 9 of 's': pool [{tid}], 1 teacher(s) used; distilled 4/4 steps")
    assert line.endswith(f"registered teacher {outcome.teacher_id}")
    assert [r.getMessage() for r in caplog.records if r.name == "recycler"] == [line]
    alone = Distiller(config(tmp_path, summary=False), study="empty", trial_number=0,
                      registry=reg, model=make_net())  # fmt: skip
    alone.loss(make_net()(x), y, x)
    quiet = alone.finish("complete", 0.5)
    assert "summary" not in quiet.info
    assert "recycling off (no eligible teacher in 'empty' yet)" in alone.summary()


def test_recycle_an_existing_sweep(tmp_path: Path) -> None:
    """A plain Optuna sweep registered with register_trial teaches a new study's trials."""
    old = config(tmp_path)
    plain = optuna.create_study(direction="maximize", study_name="plain-sweep")
    x, y = batch()
    for _ in range(3):
        trial = plain.ask()
        net = make_net(seed=trial.number)
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        register_trial(trial, net, value=0.5 + trial.number / 10, config=old)
        plain.tell(trial, 0.5 + trial.number / 10)
    reg = Registry(old.registry, old.blobs)
    assert [r.output_signature for r in reg.query(study="plain-sweep")] == ["", "", ""]
    new = config(tmp_path, teachers={"studies": ["plain-sweep"], "pool": 3})

    @recycle(config=new, metric="accuracy")
    def objective(trial: optuna.Trial, kd: Distiller) -> float:
        net = make_net(seed=10 + trial.number)
        kd.attach(net).plan(epochs=1, steps_per_epoch=3)
        for _ in range(3):
            kd.loss(net(x), y, x)
        return 0.6

    study = optuna.create_study(direction="maximize", study_name="recycled")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        study.optimize(objective, n_trials=1)
    attrs = study.trials[0].user_attrs["recycler"]
    assert attrs["kd"] and attrs["steps_distilled"] == 3 and len(attrs["pool"]) == 3
    assert SIG == "logits/2d/10" and torch.is_tensor(x)


def test_an_unsigned_teacher_of_another_shape_leaves_the_pool(
    reg: Registry, tmp_path: Path
) -> None:
    wrong = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 7))
    reg.register(wrong.state_dict(), study="s", trial_number=0, metric_name="accuracy",
                 metric_value=0.9, output_signature="")  # fmt: skip
    kd = Distiller(config(tmp_path), study="s", trial_number=9, registry=reg, model=wrong,
                   metric_name="accuracy", background_refresh=False)  # fmt: skip
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 10))
    kd.attach(student, build=lambda params: torch.nn.Sequential(*wrong))
    x, y = batch()
    with pytest.warns(RuntimeWarning, match=r"dropped: its logits have shape \(16, 7\), the "
                      r"student's \(16, 10\)"):  # fmt: skip
        kd.loss(student(x), y, x)
    assert kd.teachers == [] and kd.stats()["steps_distilled"] == 0


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        ("sqlite://bad.db", "registry: registry URL 'sqlite://bad.db' puts 'bad.db' where SQLite"),
        ("sqlite:////no/such/folder/r.db", "the SQLite file's folder '/no/such/folder' does not"),
        ("mysql://u@h/db", "names backend 'mysql'; recycler supports sqlite and postgresql"),
    ],
)
def test_a_registry_that_can_never_work_fails_at_the_decorator(registry: str, message: str) -> None:
    from recycler.integrations.ray_tune import recycled

    cfg = {"registry": registry}
    if "folder" not in message:  # a folder may still be made after decorating: checked at open
        with pytest.raises(ConfigError, match=re.escape(message)):
            recycle(config=cfg)
        with pytest.raises(ConfigError, match=re.escape(message)):
            recycled(lambda config, kd: None, cfg)
    else:
        assert recycle(config=cfg) is not None
        with pytest.raises(ConfigError, match=re.escape(message)):
            recycle(config=cfg)(lambda trial, kd: 0.0).registry  # noqa: B018
    with pytest.raises(ConfigError, match=re.escape(message)):
        Distiller(RecycleConfig.from_dict(cfg), study="s", trial_number=0)


def test_a_reused_study_name_keeps_each_runs_lineage_and_teachers(tmp_path: Path) -> None:
    """An in-memory study run twice under one name: trial numbers repeat, nothing is lost."""
    cfg = config(tmp_path, teachers={"pool": 5})
    x, y = batch()

    def objective_of(steps: int):  # type: ignore[no-untyped-def]
        @recycle(config=cfg, metric="accuracy")
        def objective(trial: optuna.Trial, kd: Distiller) -> float:
            net = make_net(seed=trial.number)
            kd.attach(net).plan(epochs=1, steps_per_epoch=steps)
            for _ in range(steps):
                kd.loss(net(x), y, x)
            return 0.5 + trial.number / 10

        return objective

    first = optuna.create_study(direction="maximize", study_name="again")
    first.optimize(objective_of(30), n_trials=2)
    reg = Registry(cfg.registry, cfg.blobs)
    before = reg.lineage("again")
    assert [(r.trial_number, r.steps_distilled) for r in before] == [(1, 30)]
    again = optuna.create_study(direction="maximize", study_name="again")
    again.optimize(objective_of(4), n_trials=1)
    # trial 0 of the second run learns from both teachers of the first, trial 0's included
    attrs = again.trials[0].user_attrs["recycler"]
    first_ids = [t.user_attrs["recycler"]["teacher_id"] for t in first.trials]
    assert sorted(attrs["pool"]) == sorted(first_ids)
    after = reg.lineage("again")
    kept = [r for r in after if r.run != attrs["run"]]
    assert kept == before  # the first run's row, untouched (30 steps stay 30)
    new = [r for r in after if r.run == attrs["run"]]
    assert {r.trial_number for r in new} == {0} and sum(r.steps_distilled for r in new) == 4
    assert before[0].run not in ("", attrs["run"])
    # the attrs name the registry their teacher ids belong to
    assert attrs["registry_id"] == reg.registry_id()
    assert first.trials[0].user_attrs["recycler"]["registry_id"] == reg.registry_id()


def test_a_recreated_registry_has_another_id(tmp_path: Path) -> None:
    """Ids restart in a recreated registry; the registry id in the attrs tells them apart."""
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    (first,) = fill(reg, 1)
    old_id = reg.registry_id()
    reg.close()
    (tmp_path / "r.db").unlink()
    fresh = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    (again,) = fill(fresh, 1)
    assert again == first  # ids restart at 1 ...
    assert fresh.registry_id() != old_id  # ... in a registry that says it is another one


def test_a_blob_folder_that_cannot_be_written_says_so_and_leaves_no_pending_rows(
    tmp_path: Path,
) -> None:
    """Every trial still completes, each says once why it is no teacher; nothing is left half."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "sha256").write_text("a file where the blob folders go")  # root ignores chmod
    cfg = RecycleConfig.from_dict(
        {"registry": f"sqlite:///{tmp_path / 'r.db'}", "blobs": str(blobs)}
    )
    x, y = batch()

    @recycle(config=cfg, metric="accuracy")
    def objective(trial: optuna.Trial, kd: Distiller) -> float:
        net = make_net(seed=trial.number)
        kd.attach(net).plan(epochs=1, steps_per_epoch=2)
        for _ in range(2):
            kd.loss(net(x), y, x)
        return 0.5

    study = optuna.create_study(direction="maximize")
    with pytest.warns(RuntimeWarning) as seen:
        study.optimize(objective, n_trials=2)
    said = [str(w.message) for w in seen if "registering the model failed" in str(w.message)]
    assert len(said) == 2 and all("cannot write blob" in m and str(blobs) in m for m in said)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert [t.user_attrs["recycler"]["registered"] for t in study.trials] == [False, False]
    assert Registry(cfg.registry, cfg.blobs).query(status=None) == []  # no PENDING row left
