"""Registry maintenance: ``gc`` (blobs nobody needs), ``verify`` (every READY blob), ``restore``.

``gc`` and blob stores shared by several registries: each registry keeps a reference per blob
it uses in the store (``blobs._refs``). A blob is deleted only when this registry has no live
row and no reader's lease on it, and no other registry references it; an orphan blob (no row
here at all) is deleted only once it is older than the grace period as well. ``gc`` first
writes the references this registry's live rows lack (rows registered before references
existed), so that the other registries' ``gc`` keeps them from then on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, type_coerce, update
from sqlalchemy.types import NullType

from . import _checkpoint
from ._errors import (
    BlobCorruptError,
    BlobError,
    BlobMissingError,
    BlobSizeError,
    StorageError,
    UnsafeKeyError,
)
from ._loading import quarantine_ready, read_blob
from ._rdb.engine import reading, writing
from ._rdb.models import TeacherRow
from ._records import GcReport, Status, TeacherRecord, VerifyReport
from ._registering import lock_sha
from ._rows import BadRow, record_of, teacher_columns
from .blobs import key_for, sha_of_key
from .blobs._refs import SharedStore

if TYPE_CHECKING:
    from ._registry import Registry

_LIVE = (Status.PENDING.value, Status.READY.value, Status.QUARANTINED.value)


def gc(registry: Registry, grace_seconds: float = 3600.0, *, dry_run: bool = False) -> GcReport:
    """See :meth:`Registry.gc`."""
    now = _now()
    cutoff = now - dt.timedelta(seconds=grace_seconds)
    engine = registry._engine()  # a refused schema raises before anything is touched
    store = registry.blobs
    shared = store if isinstance(store, SharedStore) else None
    stale = (TeacherRow.status == Status.PENDING.value) & (TeacherRow.updated_at < cutoff)
    if dry_run:
        with reading(engine) as conn:
            pending = int(conn.execute(select(func.count()).where(stale)).scalar_one())
        finder = getattr(store, "stale_temp", None)
        temp = len(finder(cutoff.timestamp())) if callable(finder) else 0
    else:
        with writing(engine) as conn:
            pending = conn.execute(delete(TeacherRow).where(stale)).rowcount
        temp = store.remove_stale_temp(cutoff.timestamp())
    me = registry.registry_id() if shared is not None else None
    refs = shared.refs() if shared is not None else {}
    mine = set(refs.get(me or "", set()))
    others: set[str] = set().union(*(keys for owner, keys in refs.items() if owner != me))
    live = _live_keys(registry)
    if shared is not None and me is not None and not dry_run:
        for key in sorted(live - mine):  # rows older than references: keep them from now on
            shared.add_ref(me, key)
    counts = {"blobs": 0, "orphans": 0, "leased": 0, "young": 0, "shared": 0}
    removed: list[str] = []
    errors: list[str] = []
    seen: set[str] = set()
    for key, mtime in list(store.keys()):
        seen.add(key)
        try:
            verdict = _gc_one(registry, key, mtime, now, cutoff, me, others, dry_run)
        except StorageError as exc:
            errors.append(f"{key}: {exc}")
            continue
        if verdict in ("blobs", "orphans"):
            removed.append(key)
        if verdict != "keep":
            counts[verdict] += 1
    if shared is not None and me is not None and not dry_run:
        for key in sorted(mine - live - seen):  # our references to blobs that are gone
            try:
                shared.drop_ref(me, key)
            except StorageError as exc:
                errors.append(f"{key}: {exc}")
    return GcReport(
        blobs_removed=counts["blobs"],
        orphans_removed=counts["orphans"],
        pending_removed=pending,
        temp_removed=temp,
        kept_leased=counts["leased"],
        kept_young=counts["young"],
        kept_shared=counts["shared"],
        dry_run=dry_run,
        removed=tuple(removed),
        errors=tuple(errors),
    )


def _gc_one(
    registry: Registry,
    key: str,
    mtime: float,
    now: dt.datetime,
    cutoff: dt.datetime,
    me: str | None,
    others: set[str],
    dry_run: bool,
) -> str:
    """Delete one blob if nothing needs it; which count it goes to ("keep": none)."""
    store = registry.blobs
    shared = store if isinstance(store, SharedStore) else None
    sha = sha_of_key(key)
    raw_lease = type_coerce(TeacherRow.lease_until, NullType())
    with writing(registry._engine()) as conn:
        lock_sha(conn, sha)  # one lock per blob, shared with register()
        rows = conn.execute(
            select(TeacherRow.status, raw_lease.label("lease")).where(TeacherRow.sha256 == sha)
        ).all()
        if any(r.status != Status.DELETED.value for r in rows):
            return "keep"  # a live row (or a status this library does not know: keep it)
        if any(_leased(r.lease, now) for r in rows):
            return "leased"
        if shared is None:
            if not rows:
                return "shared"  # a store without references: an orphan may be another's
        elif key in others or shared.ref_owners(key) - {me}:  # asked again, just before
            if not dry_run and me is not None:
                shared.drop_ref(me, key)
            return "shared"
        if not rows and mtime >= cutoff.timestamp():
            return "young"  # an orphan within the grace period: a registration may be running
        if not dry_run:
            store.delete(key)
            if shared is not None and me is not None:
                shared.drop_ref(me, key)
    return "blobs" if rows else "orphans"


def _leased(value: Any, now: dt.datetime) -> bool:
    """Whether a raw ``lease_until`` holds the blob (one that cannot be read holds it)."""
    if value is None:
        return False
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return True
    if not isinstance(value, dt.datetime):
        return True
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
    return aware > now


def _live_keys(registry: Registry) -> set[str]:
    """The blob keys of this registry's live rows (a malformed sha256 names no blob)."""
    with reading(registry._engine()) as conn:
        shas = conn.execute(
            select(TeacherRow.sha256).where(TeacherRow.status.in_(_LIVE)).distinct()
        ).scalars()
        return set(_keys(shas))


def _keys(shas: Iterable[Any]) -> Iterable[str]:
    for sha in shas:
        try:
            yield key_for(sha)
        except UnsafeKeyError:
            continue


def verify(registry: Registry) -> VerifyReport:
    """See :meth:`Registry.verify`."""
    with reading(registry._engine()) as conn:
        rows = conn.execute(
            select(*teacher_columns())
            .where(TeacherRow.status == Status.READY.value)
            .order_by(TeacherRow.id)
        ).all()
    store = registry.blobs
    corrupt: list[tuple[TeacherRecord, str]] = []
    missing: list[tuple[TeacherRecord, str]] = []
    unreadable: dict[int, str] = {}
    malformed: dict[int, str] = {}
    valid = 0
    for row in rows:
        try:
            rec = record_of(row)
        except BadRow as bad:
            malformed[_row_id(bad.row_id)] = f"malformed row: {bad.why}"
            continue
        valid += 1
        try:
            data = read_blob(store, key_for(rec.sha256), rec.size_bytes)
        except BlobSizeError as exc:
            corrupt.append((rec, f"size mismatch: {exc}"))
            continue
        except BlobMissingError as exc:
            missing.append((rec, f"blob missing: {exc}"))
            continue
        except StorageError as exc:
            unreadable[rec.id] = f"unreadable: {exc}"
            continue
        got = _checkpoint.sha256(data)
        if got != rec.sha256:
            corrupt.append((rec, f"sha256 mismatch: expected {rec.sha256}, got {got}"))
    if valid and len(missing) == valid:
        raise BlobError(
            f"blob store {store.url} holds none of the {valid} READY teachers' blobs: is it "
            f"the right store (--blobs / RECYCLER_BLOBS)? Nothing was quarantined"
        )
    reasons: dict[int, str] = {**unreadable, **malformed}
    quarantined: list[int] = []
    for rec, why in sorted(corrupt + missing, key=lambda item: item[0].id):
        try:
            quarantine_ready(registry, rec.id, f"verify: {why}")
        except StorageError as exc:  # pragma: no cover - quarantine_ready never raises
            unreadable[rec.id] = f"could not be quarantined: {exc}"
            continue
        quarantined.append(rec.id)
        reasons[rec.id] = why
    failed = len(quarantined) + len(unreadable) + len(malformed)
    return VerifyReport(
        checked=len(rows),
        ok=len(rows) - failed,
        quarantined=tuple(quarantined),
        unreadable=tuple(sorted(unreadable)),
        malformed=tuple(sorted(malformed)),
        reasons=dict(sorted(reasons.items())),
    )


def restore(registry: Registry, teacher_id: int) -> TeacherRecord:
    """See :meth:`Registry.restore`."""
    rec = registry.get(teacher_id)
    if rec.status is Status.READY:
        return rec
    if rec.status is not Status.QUARANTINED:
        raise StorageError(
            f"teacher {rec.id} is {rec.status.value}: only a QUARANTINED teacher can be restored"
        )
    key = key_for(rec.sha256)
    try:
        data = read_blob(registry.blobs, key, rec.size_bytes)
    except BlobError as exc:
        raise BlobError(f"teacher {rec.id} not restored: {exc}") from exc
    got = _checkpoint.sha256(data)
    if got != rec.sha256:
        raise BlobCorruptError(
            f"teacher {rec.id} not restored: its blob still fails its checksum "
            f"(expected {rec.sha256}, got {got}); it stays QUARANTINED"
        )
    try:
        _checkpoint.decode(data)
    except BlobError as exc:
        raise BlobError(f"teacher {rec.id} not restored: {exc}") from exc
    store = registry.blobs
    if isinstance(store, SharedStore):
        store.add_ref(registry.registry_id(), key)
    with writing(registry._engine()) as conn:
        conn.execute(
            update(TeacherRow)
            .where(TeacherRow.id == rec.id, TeacherRow.status == Status.QUARANTINED.value)
            .values(status=Status.READY.value, reason=None, updated_at=_now())
        )
    return registry.get(rec.id)


def _row_id(value: object) -> int:
    return value if isinstance(value, int) else -1


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
