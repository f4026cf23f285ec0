"""Schema versions: upgrade from the first revision, refuse old and newer schemas."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from _storage_helpers import scalar, tiny_state, worker_context
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from storage import SCHEMA_VERSION, Registry, SchemaError, Status
from storage._rdb import schema
from storage._rdb.engine import get_engine, reading, writing
from storage._rdb.models import Base

_TABLES = ("recycler_teachers", "recycler_lineage", "recycler_schema")


def _counts(url: str) -> dict[str, int]:
    return {t: int(scalar(url, f"SELECT count(*) FROM {t}")) for t in _TABLES}


def _version(url: str) -> str | None:
    with reading(get_engine(url)) as conn:
        return schema.current_version(conn)


def test_revisions_constant_matches_the_migration_scripts() -> None:
    script = ScriptDirectory(str(schema._MIGRATIONS))
    oldest_first = tuple(reversed([r.revision for r in script.walk_revisions()]))
    assert oldest_first == schema.REVISIONS
    assert script.get_heads() == [schema.HEAD]
    assert SCHEMA_VERSION == schema.HEAD == "0006"


def test_models_match_the_migrated_schema(db_url: str, tmp_path: Path) -> None:
    Registry(db_url, tmp_path / "blobs").upgrade()
    with reading(get_engine(db_url)) as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "version_table": schema.VERSION_TABLE,
                "include_name": lambda name, kind, _p: (
                    kind != "table" or str(name).startswith("recycler_")
                ),
            },
        )
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def _insert_v1_teacher(url: str) -> int:
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    row: dict[str, Any] = dict(
        study="old-study",
        trial_number=7,
        trial_id=None,
        framework="optuna",
        params=json.dumps({"lr": 0.1}),
        metric_name="acc",
        metric_value=0.8,
        direction="maximize",
        step=3,
        epoch=1,
        final=True,
        trial_state="complete",
        output_signature="logits[10]",
        blob_key="sha256/aa/" + "a" * 64 + ".safetensors",
        blob_uri="file:///old/sha256/aa/" + "a" * 64 + ".safetensors",
        sha256="a" * 64,
        size_bytes=123,
        format="safetensors",
        status="READY",
        tags=json.dumps({"team": "old"}),
        created_at=now,
        updated_at=now,
    )
    cols = ", ".join(row)
    marks = ", ".join(f":{c}" for c in row)
    with writing(get_engine(url)) as conn:
        conn.execute(text(f"INSERT INTO recycler_teachers ({cols}) VALUES ({marks})"), row)
        teacher_id = int(conn.execute(text("SELECT max(id) FROM recycler_teachers")).scalar_one())
        conn.execute(
            text(
                "INSERT INTO recycler_lineage (study, trial_number, teacher_id, steps_distilled,"
                " weight, overhead, created_at) VALUES ('old-study', 9, :t, 50, 1.0, NULL, :now)"
            ),
            {"t": teacher_id, "now": now},
        )
    return teacher_id


def test_database_at_the_first_revision_upgrades(db_url: str, tmp_path: Path) -> None:
    assert schema.upgrade(get_engine(db_url), db_url, target="0001") == "0001"
    assert _version(db_url) == "0001"
    old_id = _insert_v1_teacher(db_url)

    stale = Registry(db_url, tmp_path / "blobs")
    with pytest.raises(SchemaError, match=r"run `recycler db upgrade`") as info:
        stale.query()
    assert "0001" in str(info.value) and "0006" in str(info.value)
    with pytest.raises(SchemaError):
        stale.register(tiny_state(0), study="new", trial_number=0)
    assert _counts(db_url)["recycler_teachers"] == 1 and _version(db_url) == "0001"

    assert Registry(db_url, tmp_path / "blobs").upgrade() == "0006"
    assert _version(db_url) == "0006"
    reg = Registry(db_url, tmp_path / "blobs")
    old = reg.get(old_id)
    assert (old.study, old.trial_number, old.step, old.metric_value) == ("old-study", 7, 3, 0.8)
    assert old.status is Status.READY and old.reason is None
    assert dict(old.params) == {"lr": 0.1} and dict(old.tags) == {"team": "old"}
    assert old.created_at == dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert [r.id for r in reg.query(study="old-study", top_k=1)] == [old_id]
    assert [r.id for r in reg.query(tags={"team": "old"})] == [old_id]
    assert [
        (r.trial_number, r.teacher_id, r.run, r.trial_id, r.kind) for r in reg.lineage("old-study")
    ] == [(9, old_id, "", None, "kd")]  # 0005: run '', no framework trial id; 0006: a KD row
    # another run of trial 9 under the same study name adds rows; the same run replaces its own
    reg.add_lineage("old-study", 9, old_id, steps_distilled=7, run="r2", trial_id="t_00009")
    reg.add_lineage("old-study", 9, old_id, steps_distilled=8, run="r2", trial_id="t_00009")
    assert [(r.run, r.steps_distilled, r.trial_id) for r in reg.lineage("old-study", 9)] == [
        ("", 50, None),
        ("r2", 8, "t_00009"),
    ]
    new = reg.register(tiny_state(1), study="old-study", trial_number=8, metric_value=0.9)
    assert [r.id for r in reg.query(study="old-study", top_k=2)] == [new.id, old_id]
    reg.quarantine(
        old_id, "blob never existed"
    )  # the 0002 column works; 0003 ranked the old row above
    assert reg.get(old_id).reason == "blob never existed"
    assert reg.upgrade() == "0006"  # upgrading again is a no-op


def test_0005_lineage_rows_become_kd_and_an_init_row_joins_them(
    db_url: str, tmp_path: Path
) -> None:
    assert schema.upgrade(get_engine(db_url), db_url, target="0005") == "0005"
    old_id = _insert_v1_teacher(db_url)  # and a lineage row of trial 9, 50 steps
    with writing(get_engine(db_url)) as conn:
        conn.execute(text("UPDATE recycler_lineage SET run = 'r1', trial_id = 't9'"))
    assert Registry(db_url, tmp_path / "blobs").upgrade() == "0006"
    assert scalar(db_url, "SELECT kind FROM recycler_lineage") == "kd"
    reg = Registry(db_url, tmp_path / "blobs")
    # the same teacher is also trial 9's init parent: a row of its own, the KD row unchanged
    for _ in range(2):  # idempotent
        reg.add_lineage("old-study", 9, old_id, steps_distilled=0, run="r1", kind="init")
    assert [(r.teacher_id, r.kind, r.steps_distilled, r.run) for r in reg.lineage("old-study")] == [
        (old_id, "init", 0, "r1"),
        (old_id, "kd", 50, "r1"),
    ]
    assert _counts(db_url)["recycler_lineage"] == 2


def test_newer_schema_is_refused_and_nothing_is_written(db_url: str, tmp_path: Path) -> None:
    reg = Registry(db_url, tmp_path / "blobs")
    rec = reg.register(tiny_state(0), study="s", trial_number=0)
    reg.add_lineage("s", 1, rec.id, steps_distilled=1)
    with writing(get_engine(db_url)) as conn:
        conn.execute(text("UPDATE recycler_schema SET version_num = '9999'"))
    before = _counts(db_url)
    blobs_before = sorted(p.name for p in (tmp_path / "blobs").rglob("*"))

    newer = Registry(db_url, tmp_path / "blobs")
    calls = {
        "register": lambda: newer.register(tiny_state(1), study="s", trial_number=1),
        "query": newer.query,
        "get": lambda: newer.get(rec.id),
        "upgrade": newer.upgrade,
        "gc": lambda: newer.gc(grace_seconds=0),
        "lineage": lambda: newer.add_lineage("s", 2, rec.id, steps_distilled=1),
        "quarantine": lambda: newer.quarantine(rec.id, "x"),
    }
    for name, call in calls.items():
        with pytest.raises(SchemaError, match="9999") as info:
            call()
        assert "newer than this recycler" in str(info.value), name
        assert "nothing was written" in str(info.value), name
    assert _counts(db_url) == before
    assert _version(db_url) == "9999"
    assert scalar(db_url, "SELECT status FROM recycler_teachers WHERE id = :i", i=rec.id) == "READY"
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*")) == blobs_before


def test_empty_database_without_create_is_refused(db_url: str, tmp_path: Path) -> None:
    reg = Registry(db_url, tmp_path / "blobs", create=False)
    with pytest.raises(SchemaError, match="no recycler schema"):
        reg.query()
    with reading(get_engine(db_url)) as conn:
        assert schema.current_version(conn) is None
    assert reg.upgrade() == SCHEMA_VERSION
    assert reg.query() == []


def test_registry_shares_a_database_with_other_tables(db_url: str, tmp_path: Path) -> None:
    """Optuna keeps its own ``alembic_version`` and tables; ours live beside them untouched."""
    with writing(get_engine(db_url)) as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('v3.2.0.a')"))
        conn.execute(text("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(text("INSERT INTO studies VALUES (1, 'lr-sweep')"))
    reg = Registry(db_url, tmp_path / "blobs")
    rec = reg.register(tiny_state(0), study="lr-sweep", trial_number=0)
    assert reg.get(rec.id).study == "lr-sweep"
    assert scalar(db_url, "SELECT version_num FROM alembic_version") == "v3.2.0.a"
    assert scalar(db_url, "SELECT name FROM studies WHERE study_id = 1") == "lr-sweep"
    assert _version(db_url) == SCHEMA_VERSION


def _first_use(url: str, blobs: str, n: int, out: Any) -> None:
    try:
        reg = Registry(url, blobs)
        reg.register(tiny_state(n), study="first-use", trial_number=n)
        out.put(None)
    except BaseException as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_first_use_creates_the_schema_once(db_url: str, tmp_path: Path) -> None:
    ctx = worker_context()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_first_use, args=(db_url, str(tmp_path / "blobs"), n, out))
        for n in range(4)
    ]
    for p in procs:
        p.start()
    errors = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert errors == [None] * 4
    assert _version(db_url) == SCHEMA_VERSION
    assert _counts(db_url) == {"recycler_teachers": 4, "recycler_lineage": 0, "recycler_schema": 1}
