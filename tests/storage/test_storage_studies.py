"""``Registry.studies`` (per-study aggregates) and ``Registry.taught`` (a teacher's students)."""

from __future__ import annotations

import pytest
import torch

from storage import Direction, Registry, Status, StudySummary


def _w(seed: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 2), seed)}


def test_studies_counts_best_and_lineage(registry: Registry) -> None:
    ids = [
        registry.register(
            _w(i), study="sweep", trial_number=i, metric_name="acc", metric_value=v
        ).id
        for i, v in enumerate([0.5, 0.9, 0.7, 0.95])
    ]
    registry.quarantine(ids[3], "bad")  # the best is not READY: best_value is 0.9
    loss = registry.register(
        _w(9),
        study="mlm",
        trial_number=0,
        metric_name="loss",
        metric_value=2.5,
        direction="minimize",
    )
    registry.register(
        _w(8),
        study="mlm",
        trial_number=1,
        metric_name="loss",
        metric_value=1.5,
        direction="minimize",
    )
    registry.delete(loss.id)
    registry.add_lineage("sweep", 2, ids[0], steps_distilled=100, overhead=0.1)
    registry.add_lineage("sweep", 2, ids[1], steps_distilled=50, overhead=0.3)
    registry.add_lineage("sweep", 3, ids[1], steps_distilled=10)
    registry.add_lineage("students-only", 0, ids[1], steps_distilled=7, overhead=0.5)

    found = {s.study: s for s in registry.studies()}
    assert list(found) == ["mlm", "students-only", "sweep"]
    sweep = found["sweep"]
    assert isinstance(sweep, StudySummary)
    assert dict(sweep.teachers) == {"PENDING": 0, "READY": 3, "QUARANTINED": 1, "DELETED": 0}
    assert (sweep.trials, sweep.metric_name, sweep.direction) == (3, "acc", Direction.MAXIMIZE)
    assert sweep.best_value == pytest.approx(0.9)
    assert (sweep.students, sweep.lineage_rows, sweep.steps_distilled) == (2, 3, 160)
    assert sweep.mean_overhead == pytest.approx(0.2)  # rows without overhead are not averaged
    assert sweep.last_registered is not None and sweep.last_registered.tzinfo is not None
    mlm = found["mlm"]
    assert mlm.best_value == pytest.approx(1.5) and mlm.direction is Direction.MINIMIZE
    assert dict(mlm.teachers)["DELETED"] == 1 and mlm.trials == 1
    only = found["students-only"]
    assert dict(only.teachers) == {s.value: 0 for s in Status}
    assert (only.best_value, only.direction, only.students, only.steps_distilled) == (
        None,
        None,
        1,
        7,
    )
    # cross-check against the per-row API
    assert sweep.teachers["READY"] == len(registry.query(study="sweep"))
    assert sweep.lineage_rows == len(registry.lineage("sweep"))


def test_taught_lists_a_teachers_students(registry: Registry) -> None:
    a = registry.register(_w(1), study="s", trial_number=0, metric_value=0.5).id
    b = registry.register(_w(2), study="s", trial_number=1, metric_value=0.6).id
    registry.add_lineage("s", 2, a, steps_distilled=5)
    registry.add_lineage("other", 0, a, steps_distilled=6, weight=0.5)
    registry.add_lineage("s", 1, a, steps_distilled=4)
    got = registry.taught(a)
    assert [(r.study, r.trial_number, r.steps_distilled) for r in got] == [
        ("other", 0, 6),
        ("s", 1, 4),
        ("s", 2, 5),
    ]
    assert all(r.teacher_id == a for r in got)
    assert registry.taught(b) == [] and registry.taught(10**6) == []


def test_empty_registry_has_no_studies(registry: Registry) -> None:
    assert registry.studies() == []


def test_init_rows_are_lineage_but_not_kd(registry: Registry) -> None:
    a = registry.register(_w(1), study="s", trial_number=0, metric_value=0.5).id
    b = registry.register(_w(2), study="s", trial_number=1, metric_value=0.6).id
    registry.add_lineage("s", 2, a, steps_distilled=40, overhead=0.2)
    before = registry.studies()
    # trial 2 started from a's weights (a is also its KD teacher); trial 3 only started from b
    registry.add_lineage("s", 2, a, steps_distilled=0, kind="init")
    registry.add_lineage("s", 3, b, steps_distilled=0, kind="init")
    registry.add_lineage("s", 3, b, steps_distilled=0, kind="init")  # idempotent
    assert [
        (r.trial_number, r.teacher_id, r.kind, r.steps_distilled) for r in registry.lineage("s")
    ] == [
        (2, a, "init", 0),
        (2, a, "kd", 40),
        (3, b, "init", 0),
    ]
    assert [(r.trial_number, r.kind) for r in registry.taught(b)] == [(3, "init")]
    (s,) = registry.studies()
    (old,) = before
    assert (s.students, s.steps_distilled, s.mean_overhead) == (1, 40, pytest.approx(0.2))
    assert (s.students, s.steps_distilled, s.teachers) == (
        old.students,
        old.steps_distilled,
        old.teachers,
    )
    assert (old.lineage_rows, s.lineage_rows) == (1, 3)  # every row of the study's lineage


@pytest.mark.parametrize("kind", ["KD", "parent", "", None])
def test_add_lineage_refuses_an_unknown_kind(registry: Registry, kind: object) -> None:
    a = registry.register(_w(1), study="s", trial_number=0).id
    with pytest.raises(ValueError, match=r"lineage kind must be 'kd' or 'init', got "):
        registry.add_lineage("s", 1, a, steps_distilled=1, kind=kind)  # type: ignore[arg-type]
    assert registry.lineage("s") == []
