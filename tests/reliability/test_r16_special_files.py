"""Item 6: a FIFO or a folder at a blob's path is refused at once (never opened for a
blocking read); ``load``, ``verify`` and ``gc`` go on.
Item 8: a blob larger than its row says is refused before it is read (size from fstat),
and a safetensors header that claims more than the file holds is refused before parsing."""

from __future__ import annotations

import concurrent.futures
import os
import struct
import tracemalloc
from pathlib import Path

import pytest
from _r16 import blob_path, fill

from storage import BlobCorruptError, BlobError, Registry, Status, _checkpoint


def _within(seconds: float, fn: object) -> object:
    """``fn()`` in a thread, failing the test (not hanging it) after ``seconds``."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout=seconds)  # type: ignore[arg-type]
    finally:
        pool.shutdown(wait=False)


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_fifo_or_a_folder_at_a_blob_path_is_not_read(tmp_path: Path, kind: str) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    ids = fill(reg, 2)
    path = blob_path(tmp_path / "blobs", reg.get(ids[0]).blob_key)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    try:
        with pytest.raises(BlobError, match="not a regular file"):
            _within(10, lambda: reg.load(ids[0]))
        report = _within(10, reg.verify)
        assert report.unreadable == (ids[0],) and report.ok == 1  # type: ignore[attr-defined]
        assert reg.get(ids[0]).status is Status.READY  # unreadable is not proven corrupt
        gc = _within(10, lambda: reg.gc(grace_seconds=0))
        assert gc.errors == ()  # type: ignore[attr-defined]
        assert reg.load(ids[1]).teacher.id == ids[1]
    finally:
        if path.is_dir():
            path.rmdir()
        elif path.exists():
            path.unlink()


def test_an_oversized_blob_is_refused_without_reading_it(tmp_path: Path) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    (tid,) = fill(reg, 1)
    rec = reg.get(tid)
    path = blob_path(tmp_path / "blobs", rec.blob_key)
    with path.open("r+b") as fh:  # 1 GiB behind a row of a few hundred bytes (sparse: no disk)
        fh.truncate(1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(BlobCorruptError, match="more than the"):
            reg.load(tid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # nothing near the file's size was read
    assert reg.get(tid).status is Status.QUARANTINED
    assert "size mismatch" in (reg.get(tid).reason or "")


def test_a_header_longer_than_the_file_is_refused_before_parsing() -> None:
    data = struct.pack("<Q", 1 << 40) + b'{"__metadata__": {}}'
    with pytest.raises(BlobError, match="header claims"):
        _checkpoint.decode(data)
