"""Item 13: a short, bounded soak (``examples/soak.py``): worker processes training recycled
trials on two PostgreSQL registries sharing one blob store while gc and verify run in a loop
on each: no failed trial, no lost teacher, no missing blob, every READY blob verifies."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SOAK = Path(__file__).resolve().parents[2] / "examples" / "soak.py"


def _soak_module() -> ModuleType:
    sys.path.insert(0, str(SOAK.parent))  # the worker processes import it by name
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def second_pg_url(pg_url: str) -> Iterator[str]:
    """Another scratch database on the same server (dropped afterwards)."""
    name = f"recycler_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        from storage._rdb.engine import dispose_all

        dispose_all()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.server
def test_a_short_soak_on_postgresql(pg_url: str, second_pg_url: str, tmp_path: Path) -> None:
    soak = _soak_module()
    blobs = str(tmp_path / "shared-teachers")
    result = soak.run([pg_url, second_pg_url], blobs, workers=3, seconds=8)
    assert result.ok, result
    assert result.trials >= 6 and result.kd_trials >= 3  # later trials learned from others
    assert len(result.registered) == result.trials
    assert {where for where, _ in result.registered} == {0, 1}
    assert result.gc_runs >= 3 and result.verify_runs >= 3
