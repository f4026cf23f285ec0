"""Corrupt blobs (truncated, one bit flipped, missing) are detected on read and quarantined."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _storage_helpers import tiny_state

from storage import BlobCorruptError, BlobError, Registry, Status, StorageError


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_one_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 5] ^= 0x01  # inside the tensor bytes: still a parseable safetensors file
    path.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "one-bit-flip": _flip_one_bit,
    "empty": _empty,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_load_detects_damage_and_quarantines(
    registry: Registry, tmp_path: Path, damage: str
) -> None:
    rec = registry.register(tiny_state(1), study="s", trial_number=0, metric_value=0.9)
    other = registry.register(tiny_state(2), study="s", trial_number=1, metric_value=0.1)
    DAMAGE[damage](tmp_path / "blobs" / rec.blob_key)
    with pytest.raises(BlobCorruptError, match=f"teacher {rec.id} failed its checksum") as info:
        registry.load(rec.id)
    assert "quarantined" in str(info.value)
    got = registry.get(rec.id)
    assert got.status is Status.QUARANTINED
    assert got.reason is not None and "sha256 mismatch" in got.reason
    assert rec.sha256 in got.reason
    assert registry.query(top_k=5) == [registry.get(other.id)]  # no longer offered as teacher
    with pytest.raises(BlobError, match="not READY"):
        registry.load(rec.id)  # and never read again
    assert registry.load(other.id).teacher.id == other.id


def test_one_bit_flip_is_still_a_parseable_file(tmp_path: Path) -> None:
    """The flip test above is meaningful only if the flipped file would otherwise load."""
    from storage import _checkpoint

    data = bytearray(_checkpoint.encode(tiny_state(1), {}))
    data[len(data) - 5] ^= 0x01
    tensors, _ = _checkpoint.decode(bytes(data))
    assert set(tensors) == set(tiny_state(1))


def test_load_of_missing_blob_skips_without_quarantine(registry: Registry, tmp_path: Path) -> None:
    """A missing blob proves nothing (this reader's store may be the wrong one): the reader
    skips the teacher and the registry is left as it was (issue 16, item 3)."""
    rec = registry.register(tiny_state(1), study="s", trial_number=0)
    (tmp_path / "blobs" / rec.blob_key).unlink()
    with pytest.raises(BlobError, match="missing") as info:
        registry.load(rec.id)
    assert not isinstance(info.value, BlobCorruptError)
    got = registry.get(rec.id)
    assert got.status is Status.READY and got.reason is None


def test_verify_quarantines_truncated_and_flipped_blobs(registry: Registry, tmp_path: Path) -> None:
    recs = [registry.register(tiny_state(i), study="s", trial_number=i) for i in range(4)]
    _truncate(tmp_path / "blobs" / recs[0].blob_key)
    _flip_one_bit(tmp_path / "blobs" / recs[2].blob_key)
    report = registry.verify()
    assert (report.checked, report.ok) == (4, 2)
    assert report.quarantined == (recs[0].id, recs[2].id)
    for i in (0, 2):
        got = registry.get(recs[i].id)
        assert got.status is Status.QUARANTINED
        assert got.reason and "sha256 mismatch" in got.reason
    assert [r.id for r in registry.query()] == [recs[1].id, recs[3].id]
    assert registry.verify().quarantined == ()
    # gc keeps quarantined blobs for inspection
    assert registry.gc(grace_seconds=0).blobs_removed == 0
    assert (tmp_path / "blobs" / recs[0].blob_key).exists()


def test_verify_against_the_wrong_store_quarantines_nothing(
    registry: Registry, tmp_path: Path
) -> None:
    ids = [registry.register(tiny_state(i), study="s", trial_number=i).id for i in range(2)]
    (tmp_path / "elsewhere").mkdir()
    wrong = Registry(registry._url, tmp_path / "elsewhere")
    with pytest.raises(BlobError, match="holds none of the 2 READY teachers' blobs"):
        wrong.verify()
    assert [registry.get(i).status for i in ids] == [Status.READY, Status.READY]
    assert registry.verify().ok == 2


def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(StorageError, match="database error: file is not a database"):
        Registry(f"sqlite:///{path}", tmp_path / "blobs").query()
