"""Crash safety: registering processes SIGKILLed at random points leave nothing half-READY."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from _storage_helpers import (
    crash_worker,
    scalar,
    sha_file,
    store_files,
    tiny_state,
    worker_context,
)

from storage import Registry, Status
from storage._rdb.engine import dispose_all


def _kill_registrations(url: str, blobs: Path, kills: int, seed: int) -> None:
    """``kills`` registering children SIGKILLed at random moments; then more (up to ``kills``
    again) until one was caught mid-registration, so the checks below test something even
    when a loaded machine puts every kill into a window that leaves nothing behind."""
    rng = random.Random(seed)
    ctx = worker_context()
    for k in range(2 * kills):
        if k >= kills and _interrupted(url, blobs):
            return
        started = ctx.Event()
        proc = ctx.Process(target=crash_worker, args=(url, str(blobs), k * 10_000, started))
        proc.start()
        try:
            assert started.wait(60), "the registering child never started"
            time.sleep(rng.uniform(0.0, 0.12))  # several registrations' worth of time
            assert proc.is_alive(), f"child {k} died by itself (exit code {proc.exitcode})"
        finally:
            proc.kill()
            proc.join(30)
        assert proc.exitcode == -signal.SIGKILL


def _interrupted(url: str, blobs: Path) -> int:
    """How many registrations a kill left half done: PENDING rows plus temporary blob files."""
    pending = scalar(url, "SELECT count(*) FROM recycler_teachers WHERE status = 'PENDING'")
    return int(pending) + sum(1 for f in store_files(blobs) if Path(f).name.startswith(".tmp-"))


def _check_after_crashes(url: str, blobs: Path) -> None:
    reg = Registry(url, blobs)
    ready = reg.query(status=Status.READY)
    assert ready, "no registration ever completed: the children were killed too early"
    for rec in ready:  # the blob of every READY row is there, whole
        path = blobs / rec.blob_key
        assert path.is_file(), f"READY teacher {rec.id} has no blob"
        assert sha_file(path) == rec.sha256, f"READY teacher {rec.id} has a bad blob"
    report = reg.verify()
    assert (report.checked, report.ok, report.quarantined) == (len(ready), len(ready), ())

    pending = scalar(url, "SELECT count(*) FROM recycler_teachers WHERE status = 'PENDING'")
    files = store_files(blobs)
    temps = {f for f in files if Path(f).name.startswith(".tmp-")}
    blob_files = files - temps
    ready_keys = {r.blob_key for r in ready}
    assert ready_keys <= blob_files
    assert pending + len(temps) == _interrupted(url, blobs) >= 1, "no kill interrupted one"

    gc = reg.gc(grace_seconds=0)
    assert gc.pending_removed == pending
    assert gc.temp_removed == len(temps)
    assert gc.orphans_removed == len(blob_files - ready_keys)
    assert gc.blobs_removed == 0
    assert store_files(blobs) == ready_keys  # exactly the READY blobs remain
    assert scalar(url, "SELECT count(*) FROM recycler_teachers WHERE status <> 'READY'") == 0
    assert reg.verify().ok == len(ready)
    assert reg.load(ready[-1].id).teacher == ready[-1]
    # the registry keeps working: a new registration, and gc has nothing left to do
    again = reg.register(tiny_state(-1), study="after-crash", trial_number=0)
    assert again.status is Status.READY
    after = reg.gc(grace_seconds=0)
    assert (after.pending_removed, after.temp_removed, after.orphans_removed) == (0, 0, 0)


@pytest.mark.slow
def test_sigkilled_registrations_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    blobs = tmp_path / "blobs"
    Registry(url, blobs).upgrade()
    try:
        _kill_registrations(url, blobs, kills=50, seed=1)
        _check_after_crashes(url, blobs)
    finally:
        dispose_all()


@pytest.mark.slow
@pytest.mark.server
def test_sigkilled_registrations_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    Registry(pg_url, blobs).upgrade()
    _kill_registrations(pg_url, blobs, kills=15, seed=2)
    _check_after_crashes(pg_url, blobs)
