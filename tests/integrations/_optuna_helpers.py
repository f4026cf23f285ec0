"""A tiny real task (sklearn digits, a 2-layer MLP) and checks shared by the Optuna tests."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recycler.distiller import Distiller
from storage import Registry, Status, TeacherRecord
from storage._rdb.engine import dispose_all

EPOCHS = 2
BATCH = 128


@pytest.fixture(autouse=True)
def quiet_one_thread() -> Iterator[None]:
    """Optuna at WARNING, one torch thread (tiny models), registry engines closed after."""
    level, threads = optuna.logging.get_verbosity(), torch.get_num_threads()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    yield
    optuna.logging.set_verbosity(level)
    torch.set_num_threads(threads)
    dispose_all()


@contextlib.contextmanager
def rdb(url: str) -> Iterator[optuna.storages.RDBStorage]:
    """Optuna's storage on ``url``, its connections closed afterwards."""
    storage = optuna.storages.RDBStorage(url)
    try:
        yield storage
    finally:
        storage.remove_session()
        storage.engine.dispose()


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's digits (shipped with scikit-learn): 1,400 training and 397 test samples."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x, dtype=torch.float32) / 16.0
    yt = torch.tensor(y, dtype=torch.int64)
    return xt[:1400], yt[:1400], xt[1400:], yt[1400:]


def mlp(hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def accuracy(model: nn.Module) -> float:
    _, _, x, y = digits()
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


def fit(
    trial: optuna.Trial,
    kd: Distiller | None,
    *,
    epochs: int = EPOCHS,
    on_epoch: Callable[[int], None] | None = None,
    report: bool = True,
) -> tuple[nn.Module, float]:
    """Train the MLP with the trial's lr; reports each epoch and obeys the pruner."""
    x, y, _, _ = digits()
    lr = trial.suggest_float("lr", 0.05, 0.5, log=True)
    torch.manual_seed(trial.number)
    model = mlp()
    steps = -(-len(y) // BATCH)
    if kd is not None:
        kd.attach(model).plan(epochs=epochs, steps_per_epoch=steps)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(trial.number)
    acc = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), BATCH):
            idx = order[i : i + BATCH]
            logits = model(x[idx])
            if kd is None:
                loss = F.cross_entropy(logits, y[idx])
            else:
                loss = kd.loss(logits, y[idx], x[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        acc = accuracy(model)
        if on_epoch is not None:
            on_epoch(epoch)
        if not report:
            continue
        trial.report(acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return model, acc


def objective(trial: optuna.Trial, kd: Distiller) -> float:
    """The recycled objective of most tests."""
    return fit(trial, kd)[1]


def info(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs: dict[str, Any] = trial.user_attrs["recycler"]
    return attrs


def ready(registry: Registry, study: str) -> list[TeacherRecord]:
    return registry.query(study=study, status=Status.READY)


def check_sweep(study: optuna.Study, registry: Registry, *, sequential: bool = True) -> None:
    """Every trial complete, one READY teacher each, attrs and lineage consistent."""
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE"] * len(trials), states
    teachers = {r.trial_number: r for r in ready(registry, study.study_name)}
    assert sorted(teachers) == [t.number for t in trials]
    assert len(ready(registry, study.study_name)) == len(trials)  # exactly one per trial
    for t in trials:
        rec, attrs = teachers[t.number], info(t)
        assert rec.metric_value == pytest.approx(t.value)
        assert (rec.trial_state, rec.framework, rec.trial_id) == (
            "complete",
            "optuna",
            str(t._trial_id),
        )
        assert dict(rec.params) == t.params
        assert (
            attrs["teacher_id"] == rec.id and attrs["registered"] and attrs["state"] == "complete"
        )
        assert "registry_errors" not in attrs
        lineage = registry.lineage(study.study_name, t.number)
        assert {row.teacher_id for row in lineage} == set(attrs["teachers_used"])
        for row in lineage:
            teacher = registry.get(row.teacher_id)
            assert teacher.trial_number != t.number
            if sequential:
                assert teacher.trial_number < t.number
            assert teacher.created_at <= rec.created_at
        if sequential and t.number > 0:
            assert attrs["pool"] and attrs["kd"] and attrs["steps_distilled"] == attrs["steps"]
            assert set(attrs["pool"]) <= {teachers[n].id for n in range(t.number)}
    if sequential:
        assert info(trials[0])["pool"] == [] and not info(trials[0])["kd"]
