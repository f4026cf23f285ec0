"""The Registry facade: teachers and lineage in a database, weights in a blob store."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    Engine,
    Table,
    func,
    insert,
    select,
    update,
)

from . import _loading, _maintenance, _registering, _studies
from ._errors import (
    ConflictError,
    StorageError,
    TeacherNotFoundError,
)
from ._query import TeacherQuery, build_select
from ._rdb.changes import STAMP, ChangeCounter
from ._rdb.engine import PoolLimits, dispose, get_engine, reading, writing
from ._rdb.models import LineageRow, MetaRow, TeacherRow
from ._rdb.schema import ensure_schema, upgrade
from ._records import (
    LINEAGE_KINDS,
    Checkpoint,
    Direction,
    GcReport,
    LineageRecord,
    Status,
    TeacherRecord,
    VerifyReport,
)
from ._rows import BadRow, SkipLog, record_of, teacher_columns
from ._studies import StudySummary
from ._urls import display_url, sqlite_file, with_sqlite_file
from ._validate import check_name
from .blobs import BlobStore, open_store

if TYPE_CHECKING:
    import torch

DEFAULT_URL = "sqlite:///recycler.db"
DEFAULT_BLOBS = "./recycler-teachers"
#: The environment variables naming the registry database URL and the blob store.
REGISTRY_ENV = "RECYCLER_REGISTRY"
BLOBS_ENV = "RECYCLER_BLOBS"
_LEASE_S = 600.0
_LINEAGE = cast(Table, LineageRow.__table__)


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
        url = _absolute_sqlite(url)
        get_engine(url, self._limits)  # validates the URL now; connects on first use
        self._url = url
        self._store = open_store(blobs)
        self._create = create
        self._ready_pid: int | None = None
        self._changes: ChangeCounter | None = None
        self._stamps: dict[tuple[str, ...], tuple[tuple[int, int], tuple[int, int, int]]] = {}
        self._owner_id: str | None = None
        self._lease_retry_at = 0.0  # loads take no lease before this (monotonic) time
        self._skips = SkipLog()

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

    def registry_id(self) -> str:
        """This registry's id: random, made with its schema; a recreated registry has another.

        What tells a teacher id stored elsewhere (Optuna's user attrs) from the same id in
        another registry, and the name of this registry's references in a shared blob store.
        Raises :class:`StorageError` when the registry cannot be reached.

        Example:
            >>> len(reg.registry_id())  # doctest: +SKIP
            32
        """
        if self._owner_id is None:
            engine = self._engine()
            pick = select(MetaRow.value).where(MetaRow.name == "registry_id")
            with reading(engine) as conn:
                found = conn.execute(pick).scalar()
            if found is None:  # the row was removed by hand: make a new identity, once
                with contextlib.suppress(ConflictError), writing(engine) as conn:
                    conn.execute(insert(MetaRow).values(name="registry_id", value=uuid.uuid4().hex))
                with reading(engine) as conn:
                    found = conn.execute(pick).scalar_one()
            self._owner_id = str(found)
        return self._owner_id

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
        skip_non_tensors: bool = False,
    ) -> TeacherRecord:
        """Store a checkpoint as a teacher: PENDING row, blob written and verified, then READY.

        Idempotent: the same study, trial, step and weights give back the same teacher.
        A state dict entry that is not a tensor (a module's ``_extra_state``) raises
        ``TypeError``, or is left out with ``skip_non_tensors``.
        """
        return _registering.register(
            self,
            state_dict,
            study=study,
            trial_number=trial_number,
            metric_name=metric_name,
            metric_value=metric_value,
            direction=direction,
            trial_id=trial_id,
            framework=framework,
            params=params,
            step=step,
            epoch=epoch,
            final=final,
            trial_state=trial_state,
            output_signature=output_signature,
            tags=tags,
            skip_non_tensors=skip_non_tensors,
        )

    def quarantine(self, teacher_id: int, reason: str) -> TeacherRecord:
        """Take a teacher out of use (its blob is kept for inspection)."""
        self._set_status(teacher_id, Status.QUARANTINED, reason)
        return self.get(teacher_id)

    def restore(self, teacher_id: int) -> TeacherRecord:
        """Bring a QUARANTINED teacher back to READY once its blob verifies again.

        The blob is read and checked (size, sha256, safetensors); one that still fails leaves
        the teacher QUARANTINED and raises ``BlobError``. A READY teacher is returned as is.
        """
        return _maintenance.restore(self, teacher_id)

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
            stmt = select(*teacher_columns()).where(TeacherRow.id == teacher_id)
            row = conn.execute(stmt).first()
        if row is None:
            return None
        try:
            return record_of(row)
        except BadRow as bad:
            raise StorageError(
                f"teacher {teacher_id} in {self.url} has a malformed row ({bad.why}): it is not "
                "used; `recycler teachers verify` lists such rows"
            ) from None

    def query(self, query: TeacherQuery | None = None, /, **filters: Any) -> list[TeacherRecord]:
        """Teachers matching a ``TeacherQuery`` (or its fields as keywords); READY by default."""
        q = query if query is not None else TeacherQuery(**filters)
        engine, asked = self._engine(), q
        while True:
            with reading(engine) as conn:
                rows = conn.execute(build_select(asked, conn.dialect.name)).all()
            found = []
            for row in rows:
                try:
                    found.append(record_of(row))
                except BadRow as bad:  # one foreign row never hides the others
                    self._skips.skip(self.url, bad)
            wanted = q.top_k or q.limit
            cap = asked.top_k or asked.limit
            if wanted is None or cap is None or len(rows) < cap or len(found) >= wanted:
                return found[:wanted] if wanted is not None else found
            # malformed rows took places in a top-k or a limit: ask for that many more
            more = cap + (len(rows) - len(found))
            asked = replace(asked, top_k=more) if asked.top_k else replace(asked, limit=more)

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
        """Read and verify a READY teacher's weights.

        A blob proven corrupt (sha256, size, format) quarantines the teacher and raises
        ``BlobCorruptError``/``BlobError``; a blob that is missing or cannot be read raises
        ``BlobError`` and changes nothing (another reader may have the right store). The read
        takes a lease when the database allows it, and works on a read-only registry.
        """
        teacher_id = teacher.id if isinstance(teacher, TeacherRecord) else teacher
        return _loading.load(self, teacher_id)

    @contextlib.contextmanager
    def lease(self, teacher_id: int, seconds: float = _LEASE_S) -> Iterator[None]:
        """Hold a reader's lease while the block runs: ``gc`` keeps this teacher's blob.

        The lease also expires by itself after ``seconds``, so a crashed reader blocks nothing.
        """
        with _loading.lease(self, teacher_id, seconds):
            yield

    def verify(self) -> VerifyReport:
        """Re-check every READY blob; quarantine each one that is missing or corrupt.

        A blob that cannot be read this time (an I/O error, not a regular file) and a READY row
        this library cannot use are reported, not changed; one bad row never stops the rest.
        If the store holds none of the READY blobs at all, the store is more likely wrong than
        every blob lost: that raises ``BlobError`` and quarantines nothing.
        """
        return _maintenance.verify(self)

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
        run: str = "",
        trial_id: str | None = None,
        kind: str = "kd",
    ) -> None:
        """Record that a student trial distilled from a teacher (``kind='init'``: started from it).

        Replaces the record of the same run of the same trial, teacher and kind; another
        ``run`` (the study name reused) gets rows of its own. ``kind`` is ``'kd'`` or
        ``'init'`` (else ``ValueError``).
        """
        check_name("study", study)
        if kind not in LINEAGE_KINDS:
            allowed = " or ".join(repr(k) for k in LINEAGE_KINDS)
            raise ValueError(f"lineage kind must be {allowed}, got {kind!r}")
        values = dict(
            steps_distilled=int(steps_distilled),
            weight=float(weight),
            overhead=overhead,
            trial_id=trial_id,
        )
        with writing(self._engine()) as conn:
            done = conn.execute(
                update(LineageRow)
                .where(
                    LineageRow.study == study,
                    LineageRow.trial_number == trial_number,
                    LineageRow.run == run,
                    LineageRow.teacher_id == teacher_id,
                    LineageRow.kind == kind,
                )
                .values(**values)
            ).rowcount
            if not done:
                conn.execute(
                    _LINEAGE.insert().values(
                        study=study,
                        trial_number=trial_number,
                        run=run,
                        teacher_id=teacher_id,
                        kind=kind,
                        created_at=_now(),
                        **values,
                    )
                )

    def lineage(self, study: str, trial_number: int | None = None) -> list[LineageRecord]:
        """Lineage rows of a study (or of one trial): by trial, run, teacher, then kind."""
        with reading(self._engine()) as conn:
            return _studies.lineage(conn, study, trial_number)

    def taught(self, teacher_id: int) -> list[LineageRecord]:
        """Lineage rows whose teacher is ``teacher_id``: the student trials it taught.

        Example:
            >>> [(r.study, r.trial_number) for r in reg.taught(1)]  # doctest: +SKIP
            [('lr-sweep', 2), ('lr-sweep', 3)]
        """
        with reading(self._engine()) as conn:
            return _studies.taught(conn, teacher_id)

    def studies(self) -> list[StudySummary]:
        """Every study with a teacher or a lineage row, by name: counts, best value, KD.

        Example:
            >>> [(s.study, s.teachers["READY"]) for s in reg.studies()]  # doctest: +SKIP
            [('lr-sweep', 4)]
        """
        with reading(self._engine()) as conn:
            return _studies.study_summaries(conn)

    # -- garbage collection --------------------------------------------------------------

    def gc(self, grace_seconds: float = 3600.0, *, dry_run: bool = False) -> GcReport:
        """Drop blobs of deleted teachers and orphan blobs, stale PENDING rows, temp files.

        A blob is kept while any live row refers to it, a reader holds a lease on it, or
        another registry sharing the blob store references it. Orphan blobs (no row here),
        PENDING rows and temporary files younger than ``grace_seconds`` are left alone (their
        registration may still be running). ``dry_run`` changes nothing and reports what
        would go (``GcReport.removed``).
        """
        return _maintenance.gc(self, grace_seconds, dry_run=dry_run)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def _absolute_sqlite(url: str) -> str:
    """``url`` with a relative SQLite file made absolute, once: a later ``os.chdir`` must not
    make the pool's next connection open another (empty) database."""
    try:
        path = sqlite_file(url)
    except StorageError:
        return url  # get_engine raises the real error
    if path is None or os.path.isabs(path):
        return url
    return with_sqlite_file(url, os.path.abspath(path))


__all__: Sequence[str] = ["BLOBS_ENV", "DEFAULT_BLOBS", "DEFAULT_URL", "REGISTRY_ENV", "Registry"]
