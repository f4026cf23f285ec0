"""Registering a checkpoint: a PENDING row, the blob (and this registry's reference to it)
written and read back, then READY; idempotent, and safe against a racing ``gc``."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, delete, insert, select, text, update

from . import _checkpoint, _loading
from ._errors import (
    BlobCorruptError,
    BlobError,
    BlobMissingError,
    ConflictError,
    StorageError,
)
from ._rdb.engine import writing
from ._rdb.models import TeacherRow
from ._records import Direction, Status, TeacherRecord
from ._validate import check_json, check_name, check_tags, check_text
from .blobs import key_for
from .blobs._refs import SharedStore

if TYPE_CHECKING:
    import torch

    from ._registry import Registry

_TEACHERS = cast(Table, TeacherRow.__table__)


def register(
    registry: Registry,
    state_dict: Mapping[str, torch.Tensor],
    *,
    study: str,
    trial_number: int,
    metric_name: str | None,
    metric_value: float | None,
    direction: Direction | str,
    trial_id: str | None,
    framework: str,
    params: Mapping[str, Any] | None,
    step: int,
    epoch: int | None,
    final: bool,
    trial_state: str,
    output_signature: str,
    tags: Mapping[str, str] | None,
    skip_non_tensors: bool,
) -> TeacherRecord:
    """See :meth:`Registry.register`."""
    check_name("study", study)
    for what, text_value, limit in (
        ("framework", framework, 64),
        ("trial_state", trial_state, 32),
        ("metric_name", metric_name, 255),
        ("trial_id", trial_id, 512),
        ("output_signature", output_signature, 1024),
    ):
        check_text(what, text_value, limit)
    if not isinstance(trial_number, int) or trial_number < 0:
        raise ValueError(f"trial_number must be an int >= 0, got {trial_number!r}")
    direction = Direction(direction)
    params = dict(check_json("params", params or {}))
    tags = dict(check_tags(tags or {}))
    value = None if metric_value is None else float(metric_value)
    if value is not None and not math.isfinite(value):
        value = None  # a diverged trial is kept, but never ranks as a teacher
    data = _checkpoint.encode(
        state_dict,
        {
            "study": study,
            "trial_number": trial_number,
            "step": step,
            "params": params,
            "output_signature": output_signature,
            "framework": framework,
        },
        skip_non_tensors=skip_non_tensors,
    )
    sha = _checkpoint.sha256(data)
    key = key_for(sha)
    fields: dict[str, Any] = dict(
        study=study,
        trial_number=trial_number,
        trial_id=trial_id,
        framework=framework,
        params=params,
        metric_name=metric_name,
        metric_value=value,
        score=None if value is None else (-value if direction is Direction.MINIMIZE else value),
        direction=direction.value,
        step=int(step),
        epoch=epoch,
        final=bool(final),
        trial_state=trial_state,
        output_signature=output_signature,
        blob_key=key,
        blob_uri=registry.blobs.uri(key),
        sha256=sha,
        size_bytes=len(data),
        format=_checkpoint.FORMAT,
        tags=tags,
    )
    for _ in range(3):
        row_id, ready = _claim(registry, fields)
        if ready:
            return registry.get(row_id)
        try:
            written = _write_blob(registry, key, data)
        except BlobMissingError:  # gone already: another registry's gc raced the write; again
            continue
        except Exception:
            _abandon(registry, row_id)  # no PENDING row outlives a write that failed
            raise
        if _checkpoint.sha256(written) != sha:
            _abandon(registry, row_id)
            raise BlobCorruptError(f"blob {key} did not verify after writing; not registered")
        with writing(registry._engine()) as conn:
            flipped = conn.execute(
                update(TeacherRow)
                .where(TeacherRow.id == row_id, TeacherRow.status == Status.PENDING.value)
                .values(status=Status.READY.value, updated_at=_now())
            ).rowcount
        now = registry._find(row_id)
        if now is not None and (flipped or now.status is Status.READY):
            return now
        # gc dropped our PENDING row as stale (and maybe the blob): claim again
    raise StorageError(f"could not register {study} trial {trial_number}: gc raced it 3 times")


def _write_blob(registry: Registry, key: str, data: bytes) -> bytes:
    """Write the blob (and, in a shared store, this registry's reference first); read it back."""
    store = registry.blobs
    if isinstance(store, SharedStore):  # before the blob: another registry's gc sees it
        store.add_ref(registry.registry_id(), key)
    store.put(key, data)
    try:
        return _loading.read_blob(store, key, len(data))
    except BlobMissingError:
        raise
    except BlobError as exc:
        raise BlobError(
            f"blob {key} could not be read back after writing ({exc}); not registered"
        ) from exc


def _abandon(registry: Registry, row_id: int) -> None:
    """Remove a PENDING row whose blob could not be written (best effort: gc removes it too)."""
    try:
        with writing(registry._engine()) as conn:
            conn.execute(
                delete(TeacherRow).where(
                    TeacherRow.id == row_id, TeacherRow.status == Status.PENDING.value
                )
            )
    except StorageError:
        pass


def _claim(registry: Registry, fields: Mapping[str, Any]) -> tuple[int, bool]:
    """Insert (or revive) the PENDING row under the sha's lock; True if already READY."""
    identity = (
        TeacherRow.study == fields["study"],
        TeacherRow.trial_number == fields["trial_number"],
        TeacherRow.step == fields["step"],
        TeacherRow.sha256 == fields["sha256"],
    )
    for attempt in range(2):
        try:
            with writing(registry._engine()) as conn:
                lock_sha(conn, fields["sha256"])
                found = conn.execute(
                    select(TeacherRow.id, TeacherRow.status, TeacherRow.final).where(*identity)
                )
                row = found.first()
                now = _now()
                if row is not None and fields["final"] and not row.final:
                    # a checkpoint first kept as intermediate turned out to be the last one
                    conn.execute(
                        update(TeacherRow)
                        .where(TeacherRow.id == row.id)
                        .values(final=True, updated_at=now)
                    )
                if row is not None and row.status == Status.READY.value:
                    return int(row.id), True
                if row is not None:
                    conn.execute(
                        update(TeacherRow)
                        .where(TeacherRow.id == row.id)
                        .values(status=Status.PENDING.value, reason=None, updated_at=now)
                    )
                    return int(row.id), False
                values = dict(fields, status=Status.PENDING.value)
                ins = insert(_TEACHERS).values(**values, created_at=now, updated_at=now)
                new_id = conn.execute(ins).inserted_primary_key  # no RETURNING: old SQLite
                assert new_id is not None
                return int(new_id[0]), False
        except ConflictError:  # a concurrent writer inserted the same row first
            if attempt:
                raise
    raise AssertionError("unreachable")


def lock_sha(conn: Connection, sha: str) -> None:
    """Serialise writers of one blob (SQLite's BEGIN IMMEDIATE already serialises all)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(sha[:15], 16)})


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
