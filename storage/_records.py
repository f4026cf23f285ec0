"""Frozen records returned by the registry; no ORM object ever leaves ``storage``."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """Life cycle of a teacher row. Readers only ever use READY rows."""

    PENDING = "PENDING"
    READY = "READY"
    QUARANTINED = "QUARANTINED"
    DELETED = "DELETED"


class Direction(str, enum.Enum):
    """Whether a larger or a smaller metric is better."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


@dataclass(frozen=True)
class TeacherRecord:
    """One registered checkpoint.

    Example:
        >>> rec = registry.get(7)  # doctest: +SKIP
        >>> rec.study, rec.trial_number, rec.metric_value  # doctest: +SKIP
        ('lr-sweep', 3, 0.71)
    """

    id: int
    study: str
    trial_number: int
    trial_id: str | None
    framework: str
    params: Mapping[str, Any]
    metric_name: str | None
    metric_value: float | None
    direction: Direction
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
    status: Status
    reason: str | None
    tags: Mapping[str, str]
    created_at: dt.datetime


@dataclass(frozen=True)
class LineageRecord:
    """A student trial distilled from a teacher: which, how much, at what cost.

    ``run`` tells apart two runs of a trial under one study name (an in-memory study run
    twice): ``''`` on rows written before it was recorded. ``trial_id`` is the framework's own
    id of the student trial (Ray's ``4cc34_00003``), when it has one. ``kind`` is ``'kd'``
    (the teacher taught the trial) or ``'init'`` (the trial started from its weights; no steps
    distilled).

    Example:
        >>> [r.teacher_id for r in registry.lineage("lr-sweep", 4)]  # doctest: +SKIP
        [1, 2, 3]
    """

    id: int
    study: str
    trial_number: int
    teacher_id: int
    steps_distilled: int
    weight: float
    overhead: float | None
    created_at: dt.datetime
    run: str = ""
    trial_id: str | None = None
    kind: str = "kd"


#: The kinds of lineage row: a KD teacher, the trial's init parent.
LINEAGE_KINDS: tuple[str, ...] = ("kd", "init")


@dataclass(frozen=True)
class Checkpoint:
    """Weights and metadata of one teacher, read back and checksum-verified.

    Example:
        >>> ckpt = registry.load(7)  # doctest: +SKIP
        >>> model.load_state_dict(ckpt.tensors)  # doctest: +SKIP
    """

    teacher: TeacherRecord
    tensors: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GcReport:
    """What ``Registry.gc`` removed (or, with ``dry_run``, would remove) and what it kept.

    ``removed``: the blob keys removed. ``kept_young``: orphan blobs younger than the grace
    period. ``kept_shared``: blobs another registry on the same store references (or, on a
    store that keeps no references, orphans it might). ``errors``: blobs gc could not handle
    (it went on with the others).
    """

    blobs_removed: int
    orphans_removed: int
    pending_removed: int
    temp_removed: int
    kept_leased: int
    kept_young: int = 0
    kept_shared: int = 0
    dry_run: bool = False
    removed: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifyReport:
    """Result of re-checking every READY blob.

    ``quarantined``: corrupt or missing blobs (their teachers are QUARANTINED now).
    ``unreadable``: blobs that could not be read this time (not a regular file, an I/O error):
    left READY. ``malformed``: READY rows this library cannot use (readers skip them).
    ``reasons``: why, for each id in those three.
    """

    checked: int
    ok: int
    quarantined: tuple[int, ...]
    unreadable: tuple[int, ...] = ()
    malformed: tuple[int, ...] = ()
    reasons: Mapping[int, str] = field(default_factory=dict)
