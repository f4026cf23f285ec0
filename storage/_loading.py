"""Reading a teacher's weights: a bounded read, a best-effort lease, quarantine on proof only.

What a reader may conclude from a failed read:

- the blob's bytes are not the registered ones (sha256 mismatch, larger than its row says, not
  safetensors): proven corruption, the teacher is QUARANTINED for everyone;
- the blob is missing or cannot be read (a wrong ``blobs`` location, a transient EMFILE, a
  server down, a FIFO at the path): nothing is proven; this reader skips the teacher and the
  registry is left as it was.

A read never needs to write: the reader's lease (which keeps ``gc`` off the blob of a teacher
deleted meanwhile) is taken when the database allows it within ``LEASE_WAIT_S``, else the
read goes on without it (a read-only file or role, a lock held elsewhere).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from . import _checkpoint
from ._errors import BlobCorruptError, BlobError, BlobSizeError, StorageError
from ._rdb.engine import LEASE_WAIT_S, writing
from ._rdb.models import TeacherRow
from ._records import Checkpoint, Status
from .blobs import BlobStore, key_for

if TYPE_CHECKING:
    from ._registry import Registry

#: After a lease could not be taken, loads go without one for this long (no wait each time).
LEASE_BACKOFF_S = 30.0


def read_blob(store: BlobStore, key: str, limit: int | None) -> bytes:
    """The blob at ``key``, never more than ``limit`` bytes read (``BlobSizeError`` beyond).

    Any failure of a store (a custom one's own exceptions too) is a ``BlobError``.
    """
    try:
        reader = getattr(store, "read", None)  # a store of the bare protocol: get, then compare
        data = reader(key, limit) if callable(reader) else store.get(key)
    except StorageError:
        raise
    except Exception as exc:
        raise BlobError(
            f"blob {key} cannot be read from {store.url}: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BlobError(
            f"blob store {store.url} returned {type(data).__name__} for {key}, not bytes"
        )
    if limit is not None and len(data) > limit:
        raise BlobSizeError(f"blob {key} in {store.url} is larger than its row records")
    return bytes(data)


def load(registry: Registry, teacher_id: int) -> Checkpoint:
    """Read and verify a READY teacher's weights (see the module's rules on quarantine)."""
    with lease(registry, teacher_id, best_effort=True):
        rec = registry.get(teacher_id)  # re-read under the lease: a caller's record may be stale
        if rec.status is not Status.READY:
            raise BlobError(f"teacher {rec.id} is {rec.status.value}, not READY: not loaded")
        try:
            data = read_blob(registry.blobs, key_for(rec.sha256), rec.size_bytes)
        except BlobSizeError as exc:
            quarantine_ready(registry, rec.id, f"size mismatch: {exc}")
            raise BlobCorruptError(f"teacher {rec.id}: {exc}; quarantined") from exc
        except BlobError as exc:
            raise BlobError(
                f"teacher {rec.id}: {exc}; skipped by this reader (nothing changed in the "
                "registry: check this reader's blobs location)"
            ) from exc
        got = _checkpoint.sha256(data)
        if got != rec.sha256:
            reason = f"sha256 mismatch: expected {rec.sha256}, blob has {got}"
            quarantine_ready(registry, rec.id, reason)
            raise BlobCorruptError(f"teacher {rec.id} failed its checksum ({reason}); quarantined")
        try:
            tensors, metadata = _checkpoint.decode(data)
        except BlobError as exc:
            quarantine_ready(registry, rec.id, str(exc))
            raise BlobError(f"teacher {rec.id}: {exc}; quarantined") from exc
    return Checkpoint(teacher=rec, tensors=tensors, metadata=metadata)


def quarantine_ready(registry: Registry, teacher_id: int, reason: str) -> None:
    """Quarantine a teacher found bad by a reader, unless it left READY meanwhile.

    The corruption is proven whether or not this write gets through: a registry this reader
    cannot write (read-only, busy) keeps the row as it is and the reader skips the teacher.
    """
    with (
        contextlib.suppress(StorageError),
        writing(registry._engine(), wait_s=LEASE_WAIT_S) as conn,
    ):
        conn.execute(
            update(TeacherRow)
            .where(TeacherRow.id == teacher_id, TeacherRow.status == Status.READY.value)
            .values(status=Status.QUARANTINED.value, reason=reason, updated_at=_now())
        )


@contextlib.contextmanager
def lease(
    registry: Registry, teacher_id: int, seconds: float = 600.0, *, best_effort: bool = False
) -> Iterator[None]:
    """Hold a reader's lease while the block runs: ``gc`` keeps this teacher's blob.

    ``best_effort``: a lease the database refuses (read-only, or a lock held longer than
    ``LEASE_WAIT_S``) is skipped, and the block runs without one.
    """
    engine = registry._engine()  # a refused schema raises here, lease or not
    wait = LEASE_WAIT_S if best_effort else None
    held: dt.datetime | None = None
    before: dt.datetime | None = None
    if not best_effort or time.monotonic() >= registry._lease_retry_at:
        until = _now() + dt.timedelta(seconds=seconds)
        row = TeacherRow
        try:
            with writing(engine, wait_s=wait) as conn:
                before = conn.execute(select(row.lease_until).where(row.id == teacher_id)).scalar()
                conn.execute(
                    update(row)
                    .where(row.id == teacher_id)
                    .where(row.lease_until.is_(None) | (row.lease_until < until))
                    .values(lease_until=until)
                )
            held = until
        except (StorageError, ValueError, TypeError):  # a malformed lease_until, too
            if not best_effort:
                raise
            registry._lease_retry_at = time.monotonic() + LEASE_BACKOFF_S
    try:
        yield
    finally:
        if held is not None:
            try:
                with writing(engine, wait_s=wait) as conn:  # give back only a lease nobody extended
                    conn.execute(
                        update(TeacherRow)
                        .where(TeacherRow.id == teacher_id, TeacherRow.lease_until == held)
                        .values(lease_until=before)
                    )
            except StorageError:
                if not best_effort:
                    raise  # (the lease expires by itself)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
