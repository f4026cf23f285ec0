"""The Optuna integration on real studies: TPE on SQLite and PostgreSQL, threads, own loops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from _optuna_helpers import check_sweep, fit, info, objective, quiet_one_thread, rdb, ready

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from recycler.errors import ConfigError
from recycler.integrations.optuna import (
    RecycledObjective,
    distiller_for,
    recycle,
    register_trial,
)
from storage import Registry

__all__ = ["quiet_one_thread"]  # the autouse fixture


def tpe_study(storage: optuna.storages.BaseStorage, name: str = "tpe") -> optuna.Study:
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
        pruner=optuna.pruners.NopPruner(),
    )


def sweep_on(url: str, tmp_path: Path) -> None:
    """A 6-trial TPE study whose storage and registry share one database URL."""
    recycled = recycle(objective, config={"registry": url, "blobs": str(tmp_path / "blobs")})
    with rdb(url) as storage:
        study = tpe_study(storage)
        study.optimize(recycled, n_trials=6)
        registry = Registry(url, tmp_path / "blobs")
        check_sweep(study, registry)
        # both live in one database: Optuna reads its study back, the registry its teachers
        again = optuna.load_study(study_name="tpe", storage=storage)
        assert again.best_trial.number == study.best_trial.number
        best = registry.query(study="tpe", top_k=1)[0]
        assert best.trial_number == study.best_trial.number


def test_tpe_study_on_sqlite(tmp_path: Path) -> None:
    sweep_on(f"sqlite:///{tmp_path / 'sweep.db'}", tmp_path)


@pytest.mark.server
def test_tpe_study_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    sweep_on(pg_url, tmp_path)


def test_two_threads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    recycled = recycle(objective, config={"registry": url, "blobs": str(tmp_path / "blobs")})
    with rdb(url) as storage:
        study = tpe_study(storage)
        study.optimize(recycled, n_trials=6, n_jobs=2)
        check_sweep(study, Registry(url, tmp_path / "blobs"), sequential=False)
    # at most the two trials that started on an empty registry go without teachers
    assert sum(1 for t in study.trials if info(t)["kd"]) >= 4


def test_decorator_forms_and_config(tmp_path: Path) -> None:
    cfg = tmp_path / "recycle.yaml"
    cfg.write_text(f"registry: sqlite:///{tmp_path / 'r.db'}\nteachers: {{pool: 2}}\n")
    bare = recycle(objective)
    called = recycle(config=cfg, metric="accuracy")(objective)
    assert isinstance(bare, RecycledObjective) and bare.__name__ == "objective"
    assert bare.config == RecycleConfig()
    assert called.config.teachers.pool == 2 and called.metric == "accuracy"
    with pytest.raises(ConfigError, match=r"teachers\.pool"):
        recycle(config={"teachers": {"pool": 0}})


def test_own_loop_with_distiller_for_and_register_trial(tmp_path: Path) -> None:
    cfg = RecycleConfig(registry=f"sqlite:///{tmp_path / 'r.db'}", blobs=str(tmp_path / "b"))

    def plain(trial: optuna.Trial) -> float:
        kd = distiller_for(trial, cfg, metric="accuracy")
        model, acc = fit(trial, kd)
        register_trial(trial, model, acc, kd=kd)
        return acc

    study = optuna.create_study(direction="maximize", study_name="own")  # in-memory storage
    study.optimize(plain, n_trials=3)
    registry = Registry(cfg.registry, cfg.blobs)
    teachers = ready(registry, "own")
    assert [r.trial_number for r in teachers] == [0, 1, 2]
    assert {r.metric_name for r in teachers} == {"accuracy"}
    assert [bool(info(t)["pool"]) for t in study.trials] == [False, True, True]
    assert info(study.trials[2])["teacher_id"] == teachers[2].id

    def no_kd(trial: optuna.Trial) -> float:  # register only: no Distiller of one's own
        model, acc = fit(trial, None)
        register_trial(trial, model, acc, config=cfg)
        return acc

    study = optuna.create_study(direction="maximize", study_name="register-only")
    study.optimize(no_kd, n_trials=1)
    assert info(study.trials[0])["registered"] and len(ready(registry, "register-only")) == 1

    with pytest.raises(TypeError, match=r"optuna\.Trial"):
        distiller_for(optuna.trial.FixedTrial({"lr": 0.1}), cfg)  # type: ignore[arg-type]


def test_multi_objective_needs_objective_index(tmp_path: Path) -> None:
    cfg = {"registry": f"sqlite:///{tmp_path / 'r.db'}", "blobs": str(tmp_path / "b")}

    def two(trial: optuna.Trial, kd: Distiller) -> tuple[float, float]:
        _, acc = fit(trial, kd, report=False)  # Optuna has no report() for several objectives
        return acc, trial.params["lr"]

    study = optuna.create_study(directions=["maximize", "minimize"], study_name="mo")
    with pytest.raises(ConfigError, match="objective_index"):
        study.optimize(recycle(two, config=cfg), n_trials=1)
    study = optuna.create_study(directions=["minimize", "maximize"], study_name="mo2")
    study.optimize(recycle(config=cfg, objective_index=1)(two), n_trials=2)
    teachers = ready(Registry(cfg["registry"], cfg["blobs"]), "mo2")
    assert [r.metric_value for r in teachers] == [t.values[1] for t in study.trials]
    assert {r.direction.value for r in teachers} == {"maximize"}


def test_core_modules_do_not_import_optuna() -> None:
    code = (
        "import sys, recycler, recycler.config, recycler.distiller, recycler.cli, "
        "recycler.integrations, storage; "
        "assert 'optuna' not in sys.modules, 'optuna imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_optuna_names_what_to_install() -> None:
    code = (
        "import sys; sys.modules['optuna'] = None\n"
        "from recycler.errors import MissingExtraError\n"
        "try:\n    import recycler.integrations.optuna\n"
        "except MissingExtraError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert "pip install" in out.stdout and "optuna" in out.stdout


def test_processes_sharing_one_storage_url(db_url: str, tmp_path: Path) -> None:
    """Two worker processes on one study; the registry shares the study's database."""
    with rdb(db_url) as storage:
        optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    worker = Path(__file__).with_name("_optuna_worker.py")
    env = {**os.environ, "PYTHONPATH": str(worker.parent)}
    args = [sys.executable, str(worker), db_url, str(tmp_path / "blobs"), "3"]
    procs = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    with rdb(db_url) as storage:
        study = optuna.load_study(study_name="shared", storage=storage)
        check_sweep(study, Registry(db_url, tmp_path / "blobs"), sequential=False)
        trials = study.trials
    assert len(trials) == 6
    assert sum(1 for t in trials if info(t)["kd"]) >= 4
