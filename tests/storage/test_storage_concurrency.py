"""16 processes x 50 registrations into one registry, on SQLite and PostgreSQL.

The workers are separate interpreters started through a forkserver (see ``worker_context``):
each opens its own engine, exactly as independent trial processes would.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest
from _storage_helpers import concurrent_worker, scalar, sha_file, store_files, worker_context

from storage import Registry, Status
from storage.blobs import key_for

WORKERS = 16
EACH = 50
DEADLINE_S = 240.0


@pytest.mark.slow
def test_many_processes_register_concurrently(db_url: str, tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    Registry(db_url, blobs).upgrade()  # the schema exists before the race on the rows starts
    ctx = worker_context()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=concurrent_worker, args=(db_url, str(blobs), w, EACH, results))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    outcomes = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(outcomes) < WORKERS:
            outcomes.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
    except queue.Empty:
        pytest.fail(f"only {len(outcomes)} of {WORKERS} workers reported in {DEADLINE_S}s")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [o for o in outcomes if o[0] != "ok"]
    assert errors == []
    assert sorted(o[1] for o in outcomes) == list(range(WORKERS))
    assert [p.exitcode for p in procs] == [0] * WORKERS
    ids = [i for o in outcomes for i in o[2]]
    assert len(ids) == WORKERS * EACH
    assert len(set(ids)) == WORKERS * EACH

    reg = Registry(db_url, blobs)
    ready = reg.query(status=Status.READY)
    assert len(ready) == WORKERS * EACH
    assert sorted(r.id for r in ready) == sorted(ids)
    assert scalar(db_url, "SELECT count(*) FROM recycler_teachers") == WORKERS * EACH
    assert {r.trial_number for r in ready} == {
        w * 1000 + i for w in range(WORKERS) for i in range(EACH)
    }
    assert len({r.sha256 for r in ready}) == WORKERS * EACH
    report = reg.verify()
    assert (report.checked, report.ok, report.quarantined) == (WORKERS * EACH, WORKERS * EACH, ())
    for r in ready:
        assert sha_file(blobs / key_for(r.sha256)) == r.sha256
    assert store_files(blobs) == {r.blob_key for r in ready}
