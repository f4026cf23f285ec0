"""Item 3: a missing or unreadable blob skips the teacher for that reader; only proven
corruption quarantines; ``restore`` brings a teacher back once its blob verifies."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from _r16 import blob_path, fill

from recycler.cli import main
from storage import BlobCorruptError, BlobError, LocalBlobStore, Registry, Status


class _Emfile(LocalBlobStore):
    """A store whose reads fail as a process out of file descriptors does."""

    def read(self, key: str, limit: int | None = None) -> bytes:
        raise OSError(errno.EMFILE, "Too many open files")


def test_a_wrong_blob_store_quarantines_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    ids = fill(Registry(url, tmp_path / "blobs"), 8)
    (tmp_path / "elsewhere").mkdir()
    lost = Registry(url, tmp_path / "elsewhere")  # a worker with a wrong or unset --blobs
    for tid in ids:
        with pytest.raises(BlobError, match=r"missing.*skipped by this reader"):
            lost.load(tid)
    assert {lost.get(t).status for t in ids} == {Status.READY}


def test_a_transient_read_error_quarantines_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    ids = fill(Registry(url, tmp_path / "blobs"), 3)
    flaky = Registry(url, _Emfile(tmp_path / "blobs"))
    for tid in ids:
        with pytest.raises(BlobError, match="Too many open files") as info:
            flaky.load(tid)
        assert not isinstance(info.value, BlobCorruptError)
    assert {flaky.get(t).status for t in ids} == {Status.READY}
    report = flaky.verify()  # verify reports it, and changes nothing either
    assert (report.quarantined, report.unreadable) == ((), tuple(ids))


def test_corruption_quarantines_and_restore_brings_it_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    reg = Registry(url, tmp_path / "blobs")
    (tid,) = fill(reg, 1)
    path = blob_path(tmp_path / "blobs", reg.get(tid).blob_key)
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(BlobCorruptError, match="quarantined"):
        reg.load(tid)
    assert reg.get(tid).status is Status.QUARANTINED
    with pytest.raises(BlobCorruptError, match="still fails its checksum"):
        reg.restore(tid)
    assert reg.get(tid).status is Status.QUARANTINED
    path.write_bytes(good)  # the operator put the right bytes back
    where = ["--registry", url, "--blobs", str(tmp_path / "blobs")]
    assert main([*where, "teachers", "restore", str(tid)]) == 0
    assert f"teacher {tid} is READY" in capsys.readouterr().out
    assert reg.get(tid).status is Status.READY and reg.get(tid).reason is None
    assert reg.load(tid).teacher.id == tid
