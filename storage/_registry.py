"""The Registry facade: teachers and lineage in a database, weights in a blob store."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    func,
    insert,
    select,
    text,
    update,
)

from . import _checkpoint
from ._errors import (
    BlobCorruptError,
    BlobError,
    ConflictError,
    StorageError,
    TeacherNotFoundError,
)
from ._query import TeacherQuery, build_select
from ._rdb.changes import STAMP, ChangeCounter
from ._rdb.engine import PoolLimits, dispose, get_engine, reading, writing
from ._rdb.models import LineageRow, TeacherRow
from ._rdb.schema import ensure_schema, upgrade
from ._records import (
    Checkpoint,
    Direction,
    GcReport,
    LineageRecord,
    Status,
    TeacherRecord,
    VerifyReport,
)
from ._urls import display_url
from ._validate import check_json, check_name, check_tags, check_text
from .blobs import BlobStore, key_for, open_store, sha_of_key

if TYPE_CHECKING:
    import torch

DEFAULT_URL = "sqlite:///recycler.db"
DEFAULT_BLOBS = "./recycler-teachers"
#: The environment variables naming the registry database URL and the blob store.
REGISTRY_ENV = "RECYCLER_REGISTRY"
BLOBS_ENV = "RECYCLER_BLOBS"
_LEASE_S = 600.0
_TEACHERS = cast(Table, TeacherRow.__table__)
_LINEAGE = cast(Table, LineageRow.__table__)
_LIVE = (Status.PENDING.value, Status.READY.value, Status.QUARANTINED.value)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Registry:
    """The teacher registry: register checkpoints, find and load teachers, record lineage.

    Example:
        >>> reg = Registry("sqlite:///recycler.db", "./recycler-teachers")  # doctest: +SKIP
        >>> t = reg.register(model.state_dict(), study="lr", trial_number=0,
        ...                  metric_name="accuracy", metric_value=0.71)  # doctest: +SKIP
        >>> [r.id for r in reg.query(study="lr", top_k=5)]  # doctest: +SKIP
        [1]

    Every failure of a method is a ``StorageError`` (see ``storage._errors`` for the tree).

    ``pool_size`` caps the connections this process opens to the database (default: the
    backend's pool, 4 + 4 overflow on PostgreSQL); ``pool_timeout`` is how many seconds a call
    waits for a free one (default 30) before it raises ``RegistryUnavailableError``.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        blobs: str | os.PathLike[str] | BlobStore = DEFAULT_BLOBS,
        *,
        create: bool = True,
        pool_size: int | None = None,
        pool_timeout: float | None = None,
    ) -> None:
        self._limits = PoolLimits(pool_size, pool_timeout)
        get_engine(url, self._limits)  # validates the URL now; connects on first use
        self._url = url
        self._store = open_store(blobs)
        self._create = create
        self._ready_pid: int | None = None
        self._changes: ChangeCounter | None = None
        self._stamps: dict[tuple[str, ...], tuple[tuple[int, int], tuple[int, int, int]]] = {}

    def __repr__(self) -> str:
        return f"Registry({self.url!r}, {self._store.url!r})"

    @classmethod
    def from_env(cls, url: str | None = None, blobs: str | None = None) -> Registry:
        """Registry from arguments, else ``RECYCLER_REGISTRY``/``RECYCLER_BLOBS``, else defaults."""
        return cls(
            url or os.environ.get(REGISTRY_ENV) or DEFAULT_URL,
            blobs or os.environ.get(BLOBS_ENV) or DEFAULT_BLOBS,
        )

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return display_url(self._url)

    @property
    def blobs(self) -> BlobStore:
        """The blob store holding the checkpoints."""
        return self._store

    def _engine(self) -> Engine:
        engine = get_engine(self._url, self._limits)
        if self._ready_pid != os.getpid():
            ensure_schema(engine, self.url, create=self._create)
            self._ready_pid = os.getpid()
        return engine

    def close(self) -> None:
        """Close this process's database connections for this registry (reopened on next use)."""
        dispose(self._url, self._limits)
        self._ready_pid, self._changes, self._stamps = None, None, {}

    def upgrade(self) -> str:
        """Create or upgrade the schema to the current version; returns that version."""
        version = upgrade(get_engine(self._url, self._limits), self.url)
        self._ready_pid = os.getpid()
        return version

    # -- writing -------------------------------------------------------------------------

    def register(
        self,
        state_dict: Mapping[str, torch.Tensor],
        *,
        study: str,
        trial_number: int,
        metric_name: str | None = None,
        metric_value: float | None = None,
        direction: Direction | str = Direction.MAXIMIZE,
        trial_id: str | None = None,
        framework: str = "manual",
        params: Mapping[str, Any] | None = None,
        step: int = 0,
        epoch: int | None = None,
        final: bool = True,
        trial_state: str = "complete",
        output_signature: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> TeacherRecord:
        """Store a checkpoint as a teacher: PENDING row, blob written and verified, then READY.

        Idempotent: the same study, trial, step and weights give back the same teacher.
        """
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
            blob_uri=self._store.uri(key),
            sha256=sha,
            size_bytes=len(data),
            format=_checkpoint.FORMAT,
            tags=tags,
        )
        for _ in range(3):
            row_id, ready = self._claim(fields)
            if ready:
                return self.get(row_id)
            self._store.put(key, data)
            if _checkpoint.sha256(self._store.get(key)) != sha:
                raise BlobCorruptError(f"blob {key} did not verify after writing; not registered")
            with writing(self._engine()) as conn:
                flipped = conn.execute(
                    update(TeacherRow)
                    .where(TeacherRow.id == row_id, TeacherRow.status == Status.PENDING.value)
                    .values(status=Status.READY.value, updated_at=_now())
                ).rowcount
            now = self._find(row_id)
            if now is not None and (flipped or now.status is Status.READY):
                return now
            # gc dropped our PENDING row as stale (and maybe the blob): claim again
        raise StorageError(f"could not register {study} trial {trial_number}: gc raced it 3 times")

    def _claim(self, fields: Mapping[str, Any]) -> tuple[int, bool]:
        """Insert (or revive) the PENDING row under the sha's lock; True if already READY."""
        identity = (
            TeacherRow.study == fields["study"],
            TeacherRow.trial_number == fields["trial_number"],
            TeacherRow.step == fields["step"],
            TeacherRow.sha256 == fields["sha256"],
        )
        for attempt in range(2):
            try:
                with writing(self._engine()) as conn:
                    _lock_sha(conn, fields["sha256"])
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

    def quarantine(self, teacher_id: int, reason: str) -> TeacherRecord:
        """Take a teacher out of use (its blob is kept for inspection)."""
        self._set_status(teacher_id, Status.QUARANTINED, reason)
        return self.get(teacher_id)

    def delete(self, teacher_id: int) -> TeacherRecord:
        """Mark a teacher DELETED; ``gc`` removes its blob once nothing else needs it."""
        self._set_status(teacher_id, Status.DELETED, "deleted")
        return self.get(teacher_id)

    def _set_status(self, teacher_id: int, status: Status, reason: str) -> None:
        with writing(self._engine()) as conn:
            done = conn.execute(
                update(TeacherRow)
                .where(TeacherRow.id == teacher_id)
                .values(status=status.value, reason=reason, updated_at=_now())
            ).rowcount
        if not done:
            raise TeacherNotFoundError(f"no teacher with id {teacher_id} in {self.url}")

    # -- reading -------------------------------------------------------------------------

    def get(self, teacher_id: int) -> TeacherRecord:
        """The teacher with this id, in any status."""
        rec = self._find(teacher_id)
        if rec is None:
            raise TeacherNotFoundError(f"no teacher with id {teacher_id} in {self.url}")
        return rec

    def _find(self, teacher_id: int) -> TeacherRecord | None:
        with reading(self._engine()) as conn:
            row = conn.execute(_TEACHERS.select().where(TeacherRow.id == teacher_id)).first()
        return None if row is None else self._record(row)

    def query(self, query: TeacherQuery | None = None, /, **filters: Any) -> list[TeacherRecord]:
        """Teachers matching a ``TeacherQuery`` (or its fields as keywords); READY by default."""
        q = query if query is not None else TeacherQuery(**filters)
        with reading(self._engine()) as conn:
            rows = conn.execute(build_select(q, conn.dialect.name)).all()
        return [self._record(r) for r in rows]

    def stamp(self, studies: Sequence[str]) -> tuple[int, int, int]:
        """A cheap fingerprint of the READY teachers of ``studies``: (count, sum of ids, finals).

        It changes whenever a teacher of those studies becomes READY, leaves READY (quarantine,
        delete) or is upgraded to final, and only then: a Distiller re-queries its pool only
        when it does (one aggregate row instead of every record).

        Example:
            >>> reg.stamp(["sweep"])  # doctest: +SKIP
            (3, 6, 3)
        """
        engine = self._engine()
        if self._changes is None:
            self._changes = ChangeCounter(engine)
        version, key = self._changes.version(), tuple(studies)
        known = self._stamps.get(key)
        if version is not None and known is not None and known[0] == version:
            return known[1]  # SQLite: no other connection committed since the last query
        with reading(engine) as conn:
            count, ids, finals = conn.execute(STAMP, {"studies": list(key)}).one()
        stamp = (int(count), int(ids), int(finals))
        if version is not None:
            self._stamps[key] = (version, stamp)
        return stamp

    def count_finished_trials(self, study: str) -> int:
        """How many distinct trials of ``study`` have a READY final teacher (the ``tr`` unit)."""
        stmt = select(func.count(func.distinct(TeacherRow.trial_number))).where(
            TeacherRow.study == study,
            TeacherRow.status == Status.READY.value,
            TeacherRow.final.is_(True),
        )
        with reading(self._engine()) as conn:
            return int(conn.execute(stmt).scalar_one())

    def load(self, teacher: int | TeacherRecord) -> Checkpoint:
        """Read and verify a READY teacher's weights; a bad blob quarantines the teacher."""
        teacher_id = teacher.id if isinstance(teacher, TeacherRecord) else teacher
        with self.lease(teacher_id):
            rec = self.get(teacher_id)  # re-read under the lease: a caller's record may be stale
            if rec.status is not Status.READY:
                raise BlobError(f"teacher {rec.id} is {rec.status.value}, not READY: not loaded")
            try:
                data = self._store.get(key_for(rec.sha256))
            except BlobError as exc:
                self._quarantine_ready(rec.id, f"blob missing: {exc}")
                raise BlobError(f"teacher {rec.id}: {exc}; quarantined") from exc
            got = _checkpoint.sha256(data)
            if got != rec.sha256:
                reason = f"sha256 mismatch: expected {rec.sha256}, blob has {got}"
                self._quarantine_ready(rec.id, reason)
                raise BlobCorruptError(
                    f"teacher {rec.id} failed its checksum ({reason}); quarantined"
                )
            try:
                tensors, metadata = _checkpoint.decode(data)
            except BlobError as exc:
                self._quarantine_ready(rec.id, str(exc))
                raise BlobError(f"teacher {rec.id}: {exc}; quarantined") from exc
        return Checkpoint(teacher=rec, tensors=tensors, metadata=metadata)

    def _quarantine_ready(self, teacher_id: int, reason: str) -> None:
        """Quarantine a teacher found bad by a reader, unless it left READY meanwhile."""
        with writing(self._engine()) as conn:
            conn.execute(
                update(TeacherRow)
                .where(TeacherRow.id == teacher_id, TeacherRow.status == Status.READY.value)
                .values(status=Status.QUARANTINED.value, reason=reason, updated_at=_now())
            )

    @contextlib.contextmanager
    def lease(self, teacher_id: int, seconds: float = _LEASE_S) -> Iterator[None]:
        """Hold a reader's lease while the block runs: ``gc`` keeps this teacher's blob.

        The lease also expires by itself after ``seconds``, so a crashed reader blocks nothing.
        """
        until = _now() + dt.timedelta(seconds=seconds)
        row = TeacherRow
        with writing(self._engine()) as conn:
            before = conn.execute(select(row.lease_until).where(row.id == teacher_id)).scalar()
            conn.execute(
                update(row)
                .where(row.id == teacher_id)
                .where(row.lease_until.is_(None) | (row.lease_until < until))
                .values(lease_until=until)
            )
        try:
            yield
        finally:
            with writing(self._engine()) as conn:  # give back only a lease nobody extended
                conn.execute(
                    update(row)
                    .where(row.id == teacher_id, row.lease_until == until)
                    .values(lease_until=before)
                )

    def verify(self) -> VerifyReport:
        """Re-check every READY blob; quarantine each one that is missing or corrupt.

        If the store holds none of the READY blobs at all, the store is more likely wrong than
        every blob lost: that raises ``BlobError`` and quarantines nothing.
        """
        records = self.query(status=Status.READY)
        found: list[tuple[TeacherRecord, str | None]] = []
        for rec in records:
            try:
                got = _checkpoint.sha256(self._store.get(key_for(rec.sha256)))
            except BlobError as exc:
                found.append((rec, f"blob missing: {exc}"))
                continue
            ok = got == rec.sha256
            found.append(
                (rec, None if ok else f"sha256 mismatch: expected {rec.sha256}, got {got}")
            )
        missing = sum(1 for _, why in found if why and why.startswith("blob missing"))
        if records and missing == len(records):
            raise BlobError(
                f"blob store {self._store.url} holds none of the {len(records)} READY teachers' "
                f"blobs: is it the right store (--blobs / {BLOBS_ENV})? Nothing was quarantined"
            )
        bad = [rec.id for rec, why in found if why is not None]
        for rec, why in found:
            if why is not None:
                self._quarantine_ready(rec.id, f"verify: {why}")
        return VerifyReport(
            checked=len(records), ok=len(records) - len(bad), quarantined=tuple(bad)
        )

    # -- lineage -------------------------------------------------------------------------

    def add_lineage(
        self,
        study: str,
        trial_number: int,
        teacher_id: int,
        *,
        steps_distilled: int,
        weight: float = 1.0,
        overhead: float | None = None,
    ) -> None:
        """Record that a student trial distilled from a teacher (replaces an earlier record)."""
        check_name("study", study)
        values = dict(steps_distilled=int(steps_distilled), weight=float(weight), overhead=overhead)
        with writing(self._engine()) as conn:
            done = conn.execute(
                update(LineageRow)
                .where(
                    LineageRow.study == study,
                    LineageRow.trial_number == trial_number,
                    LineageRow.teacher_id == teacher_id,
                )
                .values(**values)
            ).rowcount
            if not done:
                conn.execute(
                    _LINEAGE.insert().values(
                        study=study,
                        trial_number=trial_number,
                        teacher_id=teacher_id,
                        created_at=_now(),
                        **values,
                    )
                )

    def lineage(self, study: str, trial_number: int | None = None) -> list[LineageRecord]:
        """Lineage rows of a study (or of one trial), by trial then teacher."""
        stmt = _LINEAGE.select().where(LineageRow.study == study)
        if trial_number is not None:
            stmt = stmt.where(LineageRow.trial_number == trial_number)
        stmt = stmt.order_by(LineageRow.trial_number, LineageRow.teacher_id)
        with reading(self._engine()) as conn:
            rows = conn.execute(stmt).all()
        return [
            LineageRecord(
                id=r.id,
                study=r.study,
                trial_number=r.trial_number,
                teacher_id=r.teacher_id,
                steps_distilled=r.steps_distilled,
                weight=r.weight,
                overhead=r.overhead,
                created_at=_aware(r.created_at),
            )
            for r in rows
        ]

    # -- garbage collection --------------------------------------------------------------

    def gc(self, grace_seconds: float = 3600.0) -> GcReport:
        """Drop blobs of deleted teachers and orphan blobs, stale PENDING rows, temp files.

        A blob is kept while any live row refers to it or a reader holds a lease on it.
        PENDING rows and temporary files younger than ``grace_seconds`` are left alone
        (their registration may still be running).
        """
        now = _now()
        cutoff = now - dt.timedelta(seconds=grace_seconds)
        with writing(self._engine()) as conn:
            pending = conn.execute(
                _TEACHERS.delete().where(
                    TeacherRow.status == Status.PENDING.value, TeacherRow.updated_at < cutoff
                )
            ).rowcount
        temp = self._store.remove_stale_temp(cutoff.timestamp())
        removed = orphans = leased = 0
        for key, _mtime in list(self._store.keys()):
            sha = sha_of_key(key)
            with writing(self._engine()) as conn:
                _lock_sha(conn, sha)
                rows = conn.execute(
                    select(TeacherRow.status, TeacherRow.lease_until).where(
                        TeacherRow.sha256 == sha
                    )
                ).all()
                if any(r.status in _LIVE for r in rows):
                    continue
                if any(r.lease_until is not None and _aware(r.lease_until) > now for r in rows):
                    leased += 1
                    continue
                self._store.delete(key)
            if rows:
                removed += 1
            else:
                orphans += 1
        return GcReport(
            blobs_removed=removed,
            orphans_removed=orphans,
            pending_removed=pending,
            temp_removed=temp,
            kept_leased=leased,
        )

    # -- helpers -------------------------------------------------------------------------

    def _record(self, row: Any) -> TeacherRecord:
        return TeacherRecord(
            id=row.id,
            study=row.study,
            trial_number=row.trial_number,
            trial_id=row.trial_id,
            framework=row.framework,
            params=_json_obj(row.params),
            metric_name=row.metric_name,
            metric_value=row.metric_value,
            direction=Direction(row.direction),
            step=row.step,
            epoch=row.epoch,
            final=bool(row.final),
            trial_state=row.trial_state,
            output_signature=row.output_signature,
            blob_key=row.blob_key,
            blob_uri=row.blob_uri,
            sha256=row.sha256,
            size_bytes=row.size_bytes,
            format=row.format,
            status=Status(row.status),
            reason=row.reason,
            tags=_json_obj(row.tags),
            created_at=_aware(row.created_at),
        )


def _lock_sha(conn: Connection, sha: str) -> None:
    """Serialise writers of one blob (SQLite's BEGIN IMMEDIATE already serialises all)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(sha[:15], 16)})


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def _json_obj(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # some drivers hand JSON back as text
        value = json.loads(value)
    return dict(value or {})


__all__: Sequence[str] = ["BLOBS_ENV", "DEFAULT_BLOBS", "DEFAULT_URL", "REGISTRY_ENV", "Registry"]
