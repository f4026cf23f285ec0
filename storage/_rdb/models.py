"""SQLAlchemy 2 typed models of the registry tables (prefixed, to live beside Optuna's)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the registry tables."""


class TeacherRow(Base):
    """A row of ``recycler_teachers``: one checkpoint and where its blob lives."""

    __tablename__ = "recycler_teachers"
    __table_args__ = (
        UniqueConstraint("study", "trial_number", "step", "sha256", name="uq_recycler_teacher"),
        Index("ix_recycler_teachers_study_status_metric", "study", "status", "metric_value"),
        Index("ix_recycler_teachers_sha256", "sha256"),
        Index("ix_recycler_teachers_study_status_score", "study", "status", "score"),
        Index("ix_recycler_teachers_status_score", "status", "score"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study: Mapped[str] = mapped_column(String(512))
    trial_number: Mapped[int] = mapped_column(Integer)
    trial_id: Mapped[str | None] = mapped_column(String(512))
    framework: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    metric_name: Mapped[str | None] = mapped_column(String(255))
    metric_value: Mapped[float | None] = mapped_column(Float)
    #: the metric signed so that larger is better (-metric for minimize): top-k sorts on it
    score: Mapped[float | None] = mapped_column(Float)
    direction: Mapped[str] = mapped_column(String(8))
    step: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(Integer)
    final: Mapped[bool] = mapped_column(Boolean)
    trial_state: Mapped[str] = mapped_column(String(32))
    output_signature: Mapped[str] = mapped_column(String(1024))
    blob_key: Mapped[str] = mapped_column(String(128))
    blob_uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class LineageRow(Base):
    """A row of ``recycler_lineage``: student trial -> teacher, with the KD it received.

    ``kind``: ``'kd'`` (the teacher taught the trial) or ``'init'`` (its init parent).
    """

    __tablename__ = "recycler_lineage"
    __table_args__ = (
        UniqueConstraint(
            "study", "trial_number", "run", "teacher_id", "kind", name="uq_recycler_lineage"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study: Mapped[str] = mapped_column(String(512), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    run: Mapped[str] = mapped_column(String(64), server_default="")
    trial_id: Mapped[str | None] = mapped_column(String(256))
    teacher_id: Mapped[int] = mapped_column(ForeignKey("recycler_teachers.id"), index=True)
    steps_distilled: Mapped[int] = mapped_column(BigInteger)
    weight: Mapped[float] = mapped_column(Float)
    overhead: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(8), server_default="kd")


class MetaRow(Base):
    """A row of ``recycler_meta``: one named value of the registry (e.g. ``registry_id``)."""

    __tablename__ = "recycler_meta"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
