"""A small demo-like database for the service tests: a registry and two Optuna studies.

One SQLite file holds, like ``recycler demo``'s ``demo.db``: the Optuna studies
``demo-plain`` and ``demo-recycled`` (5 trials each, 10 reported epochs, recorded start and
end times, the recycled ones with ``recycler`` user attrs) and the teacher registry (each
recycled trial a READY teacher, lineage from every earlier trial), plus studies that exercise
the rest: QUARANTINED, DELETED and pruned teachers, an intermediate checkpoint, a minimize
study, a cross-study teacher and a name full of markup and quotes. Built in about a second.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from storage import Registry

PLAIN = [0.859, 0.875, 0.861, 0.827, 0.905]
RECYCLED = [0.859, 0.857, 0.887, 0.897, 0.912]
LRS = [0.01, 0.0234, 0.0548, 0.128, 0.3]
SECONDS = [6.5, 5.9, 6.4, 6.4, 5.9]
RECYCLED_SECONDS = [5.9, 6.3, 6.3, 7.4, 6.6]
EPOCHS = 10
ODD = 'o\'neil <b>x</b> & "ü"'
T0 = dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class DemoLike:
    """Where the database is, and the ids of its teachers by role."""

    url: str
    blobs: Path
    ids: dict[str, int]


def _weights(seed: float) -> dict[str, torch.Tensor]:
    return {"fc.weight": torch.full((3, 4), seed), "fc.bias": torch.zeros(3)}


def _curve(final: float) -> dict[int, float]:
    """Ten epochs rising to ``final`` (the last one is the final value)."""
    return {e: round(final - 0.3 * (1 - (e + 1) / EPOCHS) ** 2, 6) for e in range(EPOCHS)}


def _add_trials(
    study: optuna.Study, values: list[float], seconds: list[float], attrs: list[dict[str, object]]
) -> None:
    dist = optuna.distributions.FloatDistribution(0.01, 0.3, log=True)
    start = T0
    for number, (value, secs, lr) in enumerate(zip(values, seconds, LRS, strict=True)):
        end = start + dt.timedelta(seconds=secs)
        trial = optuna.trial.FrozenTrial(
            number=number,
            state=optuna.trial.TrialState.COMPLETE,
            value=value,
            datetime_start=start.replace(tzinfo=None),
            datetime_complete=end.replace(tzinfo=None),
            params={"lr": lr},
            distributions={"lr": dist},
            user_attrs={"recycler": attrs[number]} if attrs else {},
            system_attrs={},
            intermediate_values=_curve(value),
            trial_id=number,
        )
        study.add_trial(trial)
        start = end + dt.timedelta(seconds=7)  # the other sweep ran in between


def build(root: Path) -> DemoLike:
    """Fill ``root/demo.db`` and ``root/teachers``; returns where and the teacher ids."""
    url = f"sqlite:///{root / 'demo.db'}"
    blobs = root / "teachers"
    reg = Registry(url, blobs)
    ids: dict[str, int] = {}
    for number, value in enumerate(RECYCLED):
        rec = reg.register(
            _weights(float(number)),
            study="demo-recycled",
            trial_number=number,
            trial_id=f"optuna:{number}",
            framework="optuna",
            metric_name="accuracy",
            metric_value=value,
            params={"lr": LRS[number]},
            step=600,
            epoch=EPOCHS,
            output_signature="logits[10]",
            tags={"model": "cnn"},
        )
        ids[f"r{number}"] = rec.id
        for teacher in range(number):
            reg.add_lineage(
                "demo-recycled",
                number,
                ids[f"r{teacher}"],
                steps_distilled=600 // number,
                overhead=0.02,
            )
    ids["r2-mid"] = reg.register(
        _weights(2.5),
        study="demo-recycled",
        trial_number=2,
        metric_name="accuracy",
        metric_value=0.80,
        step=300,
        final=False,
        trial_state="running",
    ).id
    for number, value in enumerate([0.61, 0.72, 0.68, 0.55]):
        rec = reg.register(
            _weights(10.0 + number),
            study="lr-sweep",
            trial_number=number,
            metric_name="accuracy",
            metric_value=value,
            params={"lr": 0.1 / (number + 1)},
            trial_state="pruned" if number == 2 else "complete",
        )
        ids[f"lr{number}"] = rec.id
    reg.quarantine(ids["lr1"], "verify: sha256 mismatch")
    reg.delete(ids["lr3"])
    reg.add_lineage("lr-sweep", 2, ids["r4"], steps_distilled=50, overhead=0.1)  # cross-study
    reg.add_lineage("lr-sweep", 2, ids["lr0"], steps_distilled=30, overhead=0.1)
    reg.add_lineage("lr-sweep", 2, ids["lr0"], steps_distilled=0, kind="init")  # its init parent
    reg.add_lineage("lr-sweep", 3, ids["lr0"], steps_distilled=0, kind="init")  # no KD: dashed
    ids["bert"] = reg.register(
        _weights(20.0),
        study="bert-mlm",
        trial_number=0,
        metric_name="loss",
        metric_value=2.31,
        direction="minimize",
    ).id
    ids["odd"] = reg.register(_weights(30.0), study=ODD, trial_number=0, metric_value=0.5).id
    reg.close()

    storage = optuna.storages.RDBStorage(url)
    try:
        plain = optuna.create_study(study_name="demo-plain", storage=storage, direction="maximize")
        _add_trials(plain, PLAIN, SECONDS, [])
        recycled = optuna.create_study(
            study_name="demo-recycled", storage=storage, direction="maximize"
        )
        attrs: list[dict[str, object]] = [
            {
                "study": "demo-recycled",
                "state": "complete",
                "pool": [ids[f"r{t}"] for t in range(n)],
                "teachers_used": [ids[f"r{t}"] for t in range(n)],
                "steps_distilled": 600 if n else 0,
                "teacher_forward_s": round(0.1 * n, 3),
                "step_s": 5.0,
                "overhead": 0.02 if n else 0.0,
                "kd": n > 0,
                "registered": True,
                "teacher_id": ids[f"r{n}"],
            }
            for n in range(len(RECYCLED))
        ]
        _add_trials(recycled, RECYCLED, RECYCLED_SECONDS, attrs)
    finally:
        storage.remove_session()
        storage.engine.dispose()
    return DemoLike(url=url, blobs=blobs, ids=ids)
