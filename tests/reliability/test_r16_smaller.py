"""Item 11: a relative SQLite URL is resolved once (a later chdir changes nothing); a
read-only registry (file or role) still loads teachers; a refused newer-schema file is not
switched to WAL; blob files are created 0644."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
import torch
from _r16 import fill

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from storage import Registry, SchemaError


def test_a_relative_sqlite_url_survives_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    reg = Registry("sqlite:///relative.db", tmp_path / "blobs")
    ids = fill(reg, 2)
    assert reg.url == f"sqlite:///{tmp_path / 'run' / 'relative.db'}"
    monkeypatch.chdir(tmp_path / "elsewhere")
    reg.close()  # the pool's next connection is a new one: it must open the same file
    assert [r.id for r in reg.query()] == ids
    assert reg.stamp(["s"])[0] == 2
    assert not (tmp_path / "elsewhere" / "relative.db").exists()


def _train_once(reg: Registry, tmp_path: Path) -> dict[str, object]:
    net = torch.nn.Linear(3, 2)
    cfg = RecycleConfig(registry="sqlite:///unused.db", blobs=str(tmp_path / "blobs"))
    kd = Distiller(
        cfg, study="t", trial_number=9, registry=reg, model=net, background_refresh=False
    )
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    kd.loss(net(x), y, x).backward()
    return kd.stats()


def _fill_linear(reg: Registry) -> None:
    for i in range(2):
        net = torch.nn.Linear(3, 2)
        reg.register(net.state_dict(), study="t", trial_number=i, metric_value=0.5 + i)


def test_a_read_only_sqlite_file_still_teaches(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _fill_linear(Registry(f"sqlite:///{path}", tmp_path / "blobs"))
    read_only = Registry(f"sqlite:///file:{path}?mode=ro&uri=true", tmp_path / "blobs")
    stats = _train_once(read_only, tmp_path)
    assert stats["steps_distilled"] == 1 and len(stats["pool"]) == 2  # type: ignore[arg-type]


@pytest.mark.server
def test_a_read_only_postgresql_role_still_teaches(pg_url: str, tmp_path: Path) -> None:
    _fill_linear(Registry(pg_url, tmp_path / "blobs"))
    sep = "&" if "?" in pg_url else "?"
    read_only = Registry(
        f"{pg_url}{sep}options=-c%20default_transaction_read_only%3Don", tmp_path / "blobs"
    )
    with pytest.raises(Exception, match="read-only"):
        read_only.quarantine(1, "x")  # writes are refused: the role is read-only
    stats = _train_once(read_only, tmp_path)
    assert stats["steps_distilled"] == 1 and len(stats["pool"]) == 2  # type: ignore[arg-type]


def test_a_refused_newer_schema_file_is_not_switched_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as conn:  # a newer recycler's file, in rollback-journal mode
        conn.execute("CREATE TABLE recycler_schema (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO recycler_schema VALUES ('9999')")
    before = path.read_bytes()
    with pytest.raises(SchemaError, match="newer than this recycler"):
        Registry(f"sqlite:///{path}", tmp_path / "blobs").query()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert path.read_bytes() == before and not Path(f"{path}-wal").exists()


def test_a_new_registry_file_is_in_wal_mode(tmp_path: Path) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    fill(reg, 1)
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_blob_files_are_created_0644(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
        rec = reg.get(fill(reg, 1)[0])
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "blobs" / rec.blob_key).stat().st_mode)
    assert mode == 0o644, oct(mode)
