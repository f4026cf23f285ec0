"""Per-study aggregates of the registry and the lineage seen from a teacher (read-only SQL).

Used by :meth:`Registry.studies` and :meth:`Registry.taught`; a handful of GROUP BY rows,
never one row per teacher.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, case, func, select

from ._rdb.models import LineageRow, TeacherRow
from ._records import Direction, LineageRecord, Status


@dataclass(frozen=True)
class StudySummary:
    """One study as the registry knows it: its teachers by status, its best, its lineage.

    ``best_value`` is the best READY teacher's metric by that study's direction;
    ``lineage_rows`` counts the lineage rows whose student is in this study (every kind);
    ``students``/``steps_distilled``/``mean_overhead`` describe the trials that distilled
    (its ``'kd'`` rows only: an init parent taught nothing).

    Example:
        >>> s = registry.studies()[0]  # doctest: +SKIP
        >>> s.study, s.teachers["READY"], s.best_value  # doctest: +SKIP
        ('lr-sweep', 5, 0.72)
    """

    study: str
    teachers: Mapping[str, int] = field(default_factory=dict)
    trials: int = 0
    metric_name: str | None = None
    direction: Direction | None = None
    best_value: float | None = None
    students: int = 0
    lineage_rows: int = 0
    steps_distilled: int = 0
    mean_overhead: float | None = None
    last_registered: dt.datetime | None = None


def study_summaries(conn: Connection) -> list[StudySummary]:
    """Every study with a teacher or a lineage row, by name."""
    t, lin = TeacherRow, LineageRow
    groups = conn.execute(
        select(
            t.study,
            t.status,
            t.direction,
            t.metric_name,
            func.count(),
            func.max(t.score),
            func.max(t.created_at),
        ).group_by(t.study, t.status, t.direction, t.metric_name)
    ).all()
    ready_trials = dict(
        conn.execute(
            select(t.study, func.count(func.distinct(t.trial_number)))
            .where(t.status == Status.READY.value)
            .group_by(t.study)
        ).all()
    )
    kd = lin.kind == "kd"
    lineage = conn.execute(
        select(
            lin.study,
            func.count(),
            func.count(func.distinct(case((kd, lin.trial_number)))),
            func.coalesce(func.sum(case((kd, lin.steps_distilled))), 0),
            func.avg(case((kd, lin.overhead))),
        ).group_by(lin.study)
    ).all()
    acc: dict[str, dict[str, Any]] = {}
    for study, status, direction, metric, count, score, created in groups:
        one = acc.setdefault(study, _empty())
        one["teachers"][status] = one["teachers"].get(status, 0) + int(count)
        if created is not None:
            when = _aware(created)
            last = one["last_registered"]
            one["last_registered"] = when if last is None or when > last else last
        if status != Status.READY.value:
            continue
        one["ready_groups"].append((int(count), direction, metric, score))
    for study, rows, students, steps, overhead in lineage:
        one = acc.setdefault(study, _empty())
        one.update(
            lineage_rows=int(rows),
            students=int(students),
            steps_distilled=int(steps),
            mean_overhead=None if overhead is None else float(overhead),
        )
    return [_summary(study, one, ready_trials.get(study, 0)) for study, one in sorted(acc.items())]


def lineage(conn: Connection, study: str, trial_number: int | None) -> list[LineageRecord]:
    """The lineage rows of a study (or of one trial): by trial, run, teacher, then kind."""
    lin = LineageRow
    stmt = select(lin.__table__).where(lin.study == study)
    if trial_number is not None:
        stmt = stmt.where(lin.trial_number == trial_number)
    stmt = stmt.order_by(lin.trial_number, lin.run, lin.teacher_id, lin.kind)
    return [_lineage_record(r) for r in conn.execute(stmt).all()]


def taught(conn: Connection, teacher_id: int) -> list[LineageRecord]:
    """The lineage rows whose teacher is ``teacher_id`` (its students), by study and trial."""
    lin = LineageRow
    rows = conn.execute(
        select(lin.__table__)
        .where(lin.teacher_id == teacher_id)
        .order_by(lin.study, lin.trial_number, lin.id)
    ).all()
    return [_lineage_record(r) for r in rows]


def _lineage_record(r: Any) -> LineageRecord:
    return LineageRecord(
        id=r.id,
        study=r.study,
        trial_number=r.trial_number,
        teacher_id=r.teacher_id,
        steps_distilled=r.steps_distilled,
        weight=r.weight,
        overhead=r.overhead,
        created_at=_aware(r.created_at),
        run=r.run,
        trial_id=r.trial_id,
        kind=r.kind,
    )


def _empty() -> dict[str, Any]:
    return {
        "teachers": {s.value: 0 for s in Status},
        "ready_groups": [],
        "last_registered": None,
    }


def _summary(study: str, one: dict[str, Any], trials: int) -> StudySummary:
    groups: list[tuple[int, str, str | None, float | None]] = one.pop("ready_groups")
    direction: Direction | None = None
    metric_name: str | None = None
    best: float | None = None
    if groups:
        # the study's direction and metric: those of most of its READY teachers
        by_direction: dict[str, int] = {}
        for count, d, _, _ in groups:
            by_direction[d] = by_direction.get(d, 0) + count
        chosen = max(sorted(by_direction), key=lambda d: by_direction[d])
        direction = Direction(chosen) if chosen in {d.value for d in Direction} else None
        mine = [g for g in groups if g[1] == chosen]
        named = [g for g in mine if g[2] is not None]
        metric_name = max(named, key=lambda g: g[0])[2] if named else None
        scores = [g[3] for g in mine if g[3] is not None]
        if scores:
            top = max(scores)
            best = -top if direction is Direction.MINIMIZE else top
    return StudySummary(
        study=study,
        trials=int(trials),
        metric_name=metric_name,
        direction=direction,
        best_value=best,
        **one,
    )


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
