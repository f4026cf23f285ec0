"""Item 7: the training thread waits on the database for a bounded short time.

Bounds (``storage._rdb.engine``): a read waits at most ``READ_WAIT_S`` (2 s) for a lock, a
reader's lease write ``LEASE_WAIT_S`` (0.5 s), after which the load goes on without a lease
(and takes none for ``LEASE_BACKOFF_S``, 30 s). A teacher left out because the registry was
busy is tried again at the next refresh, even when nothing changed in the registry."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import create_engine, text
from torch import nn

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from storage import Registry, RegistryUnavailableError

LEASE_WAIT_S = 0.5  # storage._rdb.engine.LEASE_WAIT_S
READ_WAIT_S = 2.0  # storage._rdb.engine.READ_WAIT_S
HOLD_S = 8.0  # how long the lock is held: long enough to tell, short enough to bound the test


def _fill(reg: Registry, n: int) -> list[int]:
    ids = []
    for i in range(n):
        torch.manual_seed(i)
        net = nn.Linear(3, 2)
        ids.append(reg.register(net.state_dict(), study="s", trial_number=i, metric_value=i).id)
    return ids


def _first_step(reg: Registry, tmp_path: Path) -> tuple[float, Distiller]:
    net = nn.Linear(3, 2)
    cfg = RecycleConfig.from_dict(
        {"blobs": str(tmp_path / "blobs"), "teachers": {"quality_gate": False, "pool": 5}}
    )
    kd = Distiller(
        cfg, study="s", trial_number=9, registry=reg, model=net, background_refresh=False
    )
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    start = time.perf_counter()
    kd.loss(net(x), y, x).backward()
    return time.perf_counter() - start, kd


@pytest.fixture
def sqlite_lock(tmp_path: Path) -> Iterator[tuple[Registry, list[int]]]:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    reg = Registry(url, tmp_path / "blobs")
    ids = _fill(reg, 3)
    holder = sqlite3.connect(tmp_path / "r.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    timer = threading.Timer(HOLD_S, holder.rollback)
    timer.start()
    try:
        yield reg, ids
    finally:
        timer.cancel()
        holder.rollback()
        holder.close()


def test_a_sqlite_write_lock_costs_a_load_at_most_the_lease_wait(
    sqlite_lock: tuple[Registry, list[int]], tmp_path: Path
) -> None:
    reg, ids = sqlite_lock
    start = time.perf_counter()
    assert reg.load(ids[0]).teacher.id == ids[0]
    assert time.perf_counter() - start < LEASE_WAIT_S + 1.0
    took, kd = _first_step(reg, tmp_path)  # the first step: a query and three loads
    assert took < LEASE_WAIT_S + READ_WAIT_S + 1.0, took
    assert sorted(t.id for t in kd.teachers) == ids  # the best teacher is not skipped


@pytest.mark.server
def test_a_postgresql_row_lock_costs_a_load_at_most_the_lease_wait(
    pg_url: str, tmp_path: Path
) -> None:
    reg = Registry(pg_url, tmp_path / "blobs")
    ids = _fill(reg, 3)
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    conn = engine.connect()
    trans = conn.begin()  # a forgotten open transaction holding row locks
    conn.execute(text("SELECT id FROM recycler_teachers FOR UPDATE"))
    timer = threading.Timer(HOLD_S, trans.rollback)
    timer.start()
    try:
        start = time.perf_counter()
        assert reg.load(ids[0]).teacher.id == ids[0]
        assert time.perf_counter() - start < LEASE_WAIT_S + 1.0
        took, kd = _first_step(reg, tmp_path)
        assert took < LEASE_WAIT_S + READ_WAIT_S + 1.0, took
        assert sorted(t.id for t in kd.teachers) == ids
    finally:
        timer.cancel()
        if trans.is_active:
            trans.rollback()
        conn.close()
        engine.dispose()


def test_a_teacher_left_out_while_the_registry_was_busy_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    ids = _fill(reg, 3)
    best = ids[-1]
    real = reg.load
    busy = {"left": 1}

    def load(teacher: Any) -> Any:
        tid = teacher if isinstance(teacher, int) else teacher.id
        if tid == best and busy["left"]:
            busy["left"] -= 1
            raise RegistryUnavailableError("registry x is busy: database is locked")
        return real(teacher)

    monkeypatch.setattr(reg, "load", load)
    with pytest.warns(RuntimeWarning, match=f"teacher {best} .*for now"):
        _, kd = _first_step(reg, tmp_path)
    assert best not in [t.id for t in kd.teachers]
    assert kd.pool is not None and best in kd.pool.retry
    assert sorted(t.id for t in kd.refresh()) == ids  # nothing changed in the registry
    assert kd.pool.retry == {} and busy["left"] == 0
