"""The JSON API's response bodies as pydantic models: they are the OpenAPI schema.

Example:
    >>> ErrorOut(detail="no teacher with id 7").model_dump()
    {'detail': 'no teacher with id 7'}
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    """Every error the API answers itself: one line saying what was wrong."""

    detail: str


class InfoOut(BaseModel):
    """What this server serves, and its access rules."""

    version: str
    registry: str = Field(description="the registry database URL, password masked")
    blobs: str = Field(description="the blob store, password masked")
    writes_enabled: bool = Field(description="delete/restore possible (a token is configured)")
    reads_need_token: bool = Field(description="every API call needs the token (not loopback)")
    optuna: bool = Field(description="the database also holds Optuna studies")


class TeacherOut(BaseModel):
    """One teacher: every field of the registry's record (URLs masked)."""

    id: int
    study: str
    trial_number: int
    trial_id: str | None
    framework: str
    params: dict[str, Any]
    metric_name: str | None
    metric_value: float | None
    direction: str
    step: int
    epoch: int | None
    final: bool
    trial_state: str
    output_signature: str
    blob_key: str
    blob_uri: str
    sha256: str
    size_bytes: int
    format: str
    status: str
    reason: str | None
    tags: dict[str, str]
    created_at: dt.datetime


class LineageRowOut(BaseModel):
    """A student trial distilled from a teacher: which, how many steps, weight, overhead."""

    id: int
    study: str
    trial_number: int
    teacher_id: int
    steps_distilled: int
    weight: float
    overhead: float | None
    created_at: dt.datetime
    kind: str = Field(description="kd (the teacher taught the trial) or init (its init parent)")


class TeacherDetailOut(BaseModel):
    """One teacher, the trials it taught, and the teachers its own trial learned from."""

    teacher: TeacherOut
    taught: list[LineageRowOut]
    learned_from: list[LineageRowOut]


class OptunaSummaryOut(BaseModel):
    """A study as Optuna recorded it (when it shares the registry's database)."""

    trials: int
    complete: int
    pruned: int
    direction: str
    best_value: float | None
    trial_seconds: float | None = Field(description="the finished trials' durations, summed")
    teacher_forward_s: float | None = Field(
        description="teacher forward seconds, summed from the trials' recycler user attrs"
    )
    kd_trials: int = Field(description="trials whose recycler attrs say they distilled")


class StudyOut(BaseModel):
    """One study: its teachers by status, its best, its lineage, Optuna's view, time saved."""

    study: str
    teachers: dict[str, int]
    ready: int
    trials: int = Field(description="distinct trials with a READY teacher")
    metric_name: str | None
    direction: str | None
    best_value: float | None = Field(description="the best READY teacher's metric")
    students: int = Field(description="trials of this study that distilled (lineage)")
    lineage_rows: int
    steps_distilled: int
    mean_overhead: float | None
    last_registered: dt.datetime | None
    optuna: OptunaSummaryOut | None
    paired_with: str | None = Field(description="the plain/recycled twin study, by name")
    time_saved_s: float | None = Field(
        description="trial-seconds the recycled sweep saved reaching the plain sweep's best"
    )
    speedup: float | None


class NodeOut(BaseModel):
    """A trial in a lineage graph (``id`` is ``TRIAL@STUDY``)."""

    id: str
    study: str
    trial_number: int
    role: str = Field(description="teacher, student or both")
    teacher_ids: list[int]
    metric_value: float | None
    in_study: bool
    missing: bool = Field(description="a teacher id of the lineage no longer in the registry")


class EdgeOut(BaseModel):
    """``source`` (a teacher's trial) taught ``target`` (a student trial) for ``steps``, or
    ``target`` started from its weights (``kinds`` has ``init``)."""

    source: str
    target: str
    steps: int
    weight: float
    overhead: float | None
    teacher_ids: list[int]
    kinds: list[str] = Field(description="its rows' kinds: kd (taught), init (init parent)")


class LineageOut(BaseModel):
    """The lineage of a study (or of one trial) as a graph, and its rows."""

    study: str
    trial: int | None
    nodes: list[NodeOut]
    edges: list[EdgeOut]
    rows: list[LineageRowOut]


class TrialOut(BaseModel):
    """One Optuna trial: value, duration, intermediate values and recycler's accounting."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    datetime_start: dt.datetime | None
    datetime_complete: dt.datetime | None
    duration_s: float | None
    intermediate: list[tuple[int, float | None]]
    recycler: dict[str, Any] | None


class SpanOut(BaseModel):
    """A trial on its sweep's clock (trial-seconds)."""

    number: int
    state: str
    value: float | None
    start_s: float | None
    end_s: float | None


class CurveOut(BaseModel):
    """Value against trial, and best so far against the sweep's trial-seconds."""

    study: str
    source: str = Field(description="optuna (values and times) or registry (values only)")
    metric_name: str | None
    direction: str
    wall_clock: bool
    trials: list[SpanOut]
    best_by_trial: list[tuple[int, float]]
    best_by_time: list[tuple[float, float]]


class CompareOut(BaseModel):
    """A plain sweep against a recycled one: who reached the plain sweep's best, when."""

    plain: str
    recycled: str
    direction: str
    target: float | None = Field(description="the plain sweep's best final value")
    plain_s: float | None
    recycled_s: float | None
    time_saved_s: float | None
    speedup: float | None
    equal_time_s: float | None
    plain_at_equal: float | None
    recycled_at_equal: float | None
