"""The Optuna integration when trials end badly: pruned, raising, bad values, registry gone."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any

import optuna
import pytest
from _optuna_helpers import fit, info, objective, quiet_one_thread, ready
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from recycler.distiller import Distiller
from recycler.integrations.optuna import recycle
from storage import Registry

__all__ = ["quiet_one_thread"]  # the autouse fixture
COMPLETE, PRUNED, FAIL = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def config(tmp_path: Path, **more: Any) -> dict[str, Any]:
    return {"registry": f"sqlite:///{tmp_path / 'r.db'}", "blobs": str(tmp_path / "b"), **more}


@pytest.mark.parametrize("on", [["complete", "pruned"], ["complete"]])
def test_pruned_trials_teach_only_when_configured(tmp_path: Path, on: list[str]) -> None:
    cfg = config(tmp_path, register={"on": on})
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0)
    )
    study.optimize(recycle(objective, config=cfg), n_trials=3)  # every trial pruned at epoch 0
    assert [t.state for t in study.trials] == [PRUNED] * 3
    teachers = ready(Registry(cfg["registry"], cfg["blobs"]), study.study_name)
    if "pruned" in on:
        assert [r.trial_state for r in teachers] == ["pruned"] * 3
        assert [r.metric_value for r in teachers] == [pytest.approx(t.value) for t in study.trials]
        assert [r.epoch for r in teachers] == [1, 1, 1]  # pruned after one epoch
        assert [bool(info(t)["pool"]) for t in study.trials] == [False, True, True]
        assert all(info(t)["registered"] and info(t)["state"] == "pruned" for t in study.trials)
    else:
        assert teachers == []
        for t in study.trials:
            assert not info(t)["registered"] and info(t)["state"] == "pruned"
            assert info(t)["not_registered"] == "register.on does not include pruned"


def test_raising_objective_leaves_no_teacher_and_the_study_goes_on(tmp_path: Path) -> None:
    cfg = config(tmp_path)

    def flaky(trial: optuna.Trial, kd: Distiller) -> float:
        if trial.number == 1:
            fit(trial, kd, epochs=1)  # trains with KD, then fails
            raise RuntimeError("out of memory, say")
        return objective(trial, kd)

    study = optuna.create_study(direction="maximize")
    study.optimize(recycle(flaky, config=cfg), n_trials=3, catch=(RuntimeError,))
    assert [t.state for t in study.trials] == [COMPLETE, FAIL, COMPLETE]
    registry = Registry(cfg["registry"], cfg["blobs"])
    assert [r.trial_number for r in ready(registry, study.study_name)] == [0, 2]
    failed = info(study.trials[1])
    assert failed["state"] == "fail" and not failed["registered"]
    assert failed["kd"] and failed["not_registered"] == "RuntimeError: out of memory, say"
    assert info(study.trials[2])["pool"] == [ready(registry, study.study_name)[0].id]

    # without catch= the exception reaches the caller, as Optuna does it; nothing registered
    with pytest.raises(ZeroDivisionError):
        study.optimize(recycle(lambda t, kd: 1 / 0, config=cfg), n_trials=1)
    assert study.trials[-1].state is FAIL
    assert study.trials[-1].number not in {
        r.trial_number for r in ready(registry, study.study_name)
    }


def test_bad_values_and_missing_model_are_recorded_not_registered(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    study = optuna.create_study(direction="maximize")
    with pytest.warns(RuntimeWarning, match="register\\(\\) needs the model"):
        study.optimize(recycle(lambda t, kd: 0.5, config=cfg), n_trials=1)
    nan = recycle(lambda t, kd: fit(t, kd)[1] * math.nan, config=cfg)
    study.optimize(nan, n_trials=1)  # Optuna fails a NaN trial
    assert [t.state for t in study.trials] == [COMPLETE, FAIL]
    assert ready(Registry(cfg["registry"], cfg["blobs"]), study.study_name) == []
    assert "needs the model" in info(study.trials[0])["not_registered"]
    assert "not a finite number" in info(study.trials[1])["not_registered"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_registry_unreachable_from_the_start(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nowhere"
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    with pytest.warns(RuntimeWarning, match="unreachable"):
        study.optimize(recycle(objective, config={"registry": url}), n_trials=2)
    assert [t.state for t in study.trials] == [COMPLETE, COMPLETE]
    for t in study.trials:
        attrs = info(t)
        assert t.value is not None and 0.5 < t.value <= 1  # nothing lost: the result is there
        assert not attrs["kd"] and attrs["pool"] == [] and not attrs["registered"]
        assert any("unreachable" in e for e in attrs["registry_errors"])


@pytest.mark.server
def test_registry_dropped_mid_trial(pg_url: str, tmp_path: Path) -> None:
    """Trials 0-1 teach; the registry's database is dropped during trial 2; trial 3 runs without."""
    name = make_url(pg_url).database

    def drop(epoch: int) -> None:
        if epoch != 0:
            return
        admin = make_url(pg_url).set(database="postgres")
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        engine.dispose()

    def sweep(trial: optuna.Trial, kd: Distiller) -> float:
        return fit(trial, kd, on_epoch=drop if trial.number == 2 else None)[1]

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    cfg = {"registry": pg_url, "blobs": str(tmp_path / "b")}
    with pytest.warns(RuntimeWarning, match="recycler"):
        study.optimize(recycle(sweep, config=cfg), n_trials=4)
    assert [t.state for t in study.trials] == [COMPLETE] * 4
    assert all(t.value is not None for t in study.trials)
    first, second, during, after = (info(t) for t in study.trials)
    assert first["registered"] and second["registered"] and second["kd"]
    assert "registry_errors" not in first and "registry_errors" not in second
    assert not during["registered"] and during["kd"]  # teachers already loaded kept teaching
    assert any("registering the model failed" in e for e in during["registry_errors"])
    assert not after["registered"] and not after["kd"] and after["pool"] == []
    assert after["registry_errors"]


def test_unwritable_blob_folder_keeps_the_result(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = config(tmp_path, blobs=str(blocker / "blobs"))
    study = optuna.create_study(direction="maximize")
    with pytest.warns(RuntimeWarning, match="registering the model failed"):
        study.optimize(recycle(objective, config=cfg), n_trials=1)
    trial = study.trials[0]
    assert trial.state is COMPLETE and trial.value is not None
    assert not info(trial)["registered"]
    errors = info(trial)["registry_errors"]
    assert any("cannot write blob" in e and "Not a directory" in e for e in errors), errors
