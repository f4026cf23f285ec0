"""On SQLite the stamp runs its query only when another connection has committed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from _storage_helpers import tiny_state
from sqlalchemy import event

from storage import Registry
from storage._rdb.engine import get_engine


def test_stamp_queries_only_after_a_commit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    registry = Registry(url, tmp_path / "blobs")
    a = registry.register(tiny_state(1), study="s", trial_number=0)
    queries: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "count(" in statement.lower():
            queries.append(statement)

    event.listen(get_engine(url), "before_cursor_execute", count)
    assert registry.stamp(["s"]) == (1, a.id, 1)
    assert registry.stamp(["s"]) == (1, a.id, 1)
    assert registry.stamp(["s"]) == (1, a.id, 1)
    assert len(queries) == 1  # nothing committed since: the answer is known
    assert registry.stamp(["s", "t"]) == (1, a.id, 1)
    assert len(queries) == 2  # other studies: asked once

    b = registry.register(tiny_state(2), study="s", trial_number=1)  # this process writes
    assert registry.stamp(["s"]) == (2, a.id + b.id, 2)
    assert len(queries) == 3

    other = sqlite3.connect(tmp_path / "r.db")  # another process's connection writes
    with other:
        other.execute("UPDATE recycler_teachers SET status = 'QUARANTINED' WHERE id = ?", (a.id,))
    other.close()
    assert registry.stamp(["s"]) == (1, b.id, 1)
    assert len(queries) == 4

    registry.close()  # a closed registry starts afresh (a new engine, a new counter)
    registry.get(b.id)
    event.listen(get_engine(url), "before_cursor_execute", count)
    assert registry.stamp(["s"]) == (1, b.id, 1)
    assert len(queries) == 5
