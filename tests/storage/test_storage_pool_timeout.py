"""Every database error leaves ``storage`` as a ``StorageError``: the pool's timeout too.

A connection pool whose connections are all checked out makes the next caller wait
``pool_timeout`` seconds, then SQLAlchemy raises its own ``TimeoutError``; the registry must
turn that into ``RegistryUnavailableError`` (a ``StorageError``), which callers that promise
"training goes on" catch.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _storage_helpers import tiny_state

from storage import ConfigurationError, Registry, RegistryUnavailableError, StorageError

TIMEOUT_S = 0.2

CALLS: dict[str, Callable[[Registry], Any]] = {
    "query": lambda reg: reg.query(study="s"),
    "get": lambda reg: reg.get(1),
    "stamp": lambda reg: reg.stamp(["s"]),
    "count_finished_trials": lambda reg: reg.count_finished_trials("s"),
    "register": lambda reg: reg.register(tiny_state(9), study="s", trial_number=9),
    "add_lineage": lambda reg: reg.add_lineage("s", 5, 1, steps_distilled=3),
    "lineage": lambda reg: reg.lineage("s"),
    "load": lambda reg: reg.load(1),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_exhausted_pool_raises_registry_unavailable(
    call: str, db_url: str, tmp_path: Path
) -> None:
    reg = Registry(db_url, tmp_path / "blobs", pool_size=1, pool_timeout=TIMEOUT_S)
    first = reg.register(tiny_state(0), study="s", trial_number=0)
    assert first.id == 1
    held = reg._engine().connect()  # the pool's only connection, checked out
    try:
        start = time.monotonic()
        with pytest.raises(RegistryUnavailableError, match="busy") as info:
            CALLS[call](reg)
        waited = time.monotonic() - start
    finally:
        held.close()
    assert TIMEOUT_S * 0.9 <= waited < TIMEOUT_S + 10
    said = "".join(traceback.format_exception(info.value))
    assert "sqlalchemy" not in said.lower().replace("storage", "")  # nothing chained
    assert "sqlalche.me" not in str(info.value) and "pool_size" in str(info.value)
    assert isinstance(info.value, StorageError)
    # the connection is back: the same registry works again
    assert [r.id for r in reg.query(study="s")] == [1]
    reg.close()


def test_pool_limits_are_validated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    for bad in ({"pool_size": 0}, {"pool_size": 1.5}, {"pool_timeout": 0}, {"pool_timeout": -1}):
        with pytest.raises(ConfigurationError, match="pool_"):
            Registry(url, tmp_path / "blobs", **bad)  # type: ignore[arg-type]
    # in-memory SQLite has no pool to limit: the options are accepted and change nothing
    Registry("sqlite://", tmp_path / "blobs", pool_size=1, pool_timeout=1.0)
