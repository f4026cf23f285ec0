"""A user's own ``storage`` module never clashes with recycler's registry package.

A ``storage.py`` (or ``storage/`` package) beside a user's script comes first on ``sys.path``.
recycler imports its registry through ``recycler._storage``, which then loads recycler's own
package under a private name: the user's module stays what ``import storage`` gives them, and
the registry works for real (schema created by the alembic migrations, a teacher registered
and read back), whichever of the two was imported first.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import recycler._storage
import storage

USER_MODULE = "VALUE = 'mine'\n"

RECYCLER_FIRST = """
import recycler
from recycler import RecycleConfig, Registry
import storage
"""

USER_FIRST = """
import storage
assert storage.VALUE == "mine"
import recycler
from recycler import RecycleConfig, Registry
"""

USE_THE_REGISTRY = """
import sys
import torch
import recycler._storage as ours

assert storage.VALUE == "mine", storage
assert Registry.__module__ == "recycler._storage_pkg._registry", Registry.__module__
assert sys.modules["storage"] is storage  # the user's module was left alone
config = RecycleConfig.from_dict({"registry": "sqlite:///reg/r.db", "blobs": "reg/blobs"})
reg = Registry(config.registry, config.blobs)  # schema created on first use (alembic)
rec = reg.register(
    {"w": torch.arange(4.0)}, study="clash", trial_number=0,
    metric_name="accuracy", metric_value=0.5,
)
found = reg.query(study="clash")
assert [r.id for r in found] == [rec.id], found
assert torch.equal(reg.load(rec.id).tensors["w"], torch.arange(4.0))
assert reg.upgrade() == ours.SCHEMA_VERSION
try:
    reg.get(999)
except ours.TeacherNotFoundError:
    pass
import storage as again
assert again is storage and again.VALUE == "mine"
print("ok")
"""


def _write_user_storage(tmp_path: Path, kind: str) -> None:
    if kind == "module":
        (tmp_path / "storage.py").write_text(USER_MODULE)
    else:
        (tmp_path / "storage").mkdir()
        (tmp_path / "storage" / "__init__.py").write_text(USER_MODULE)


def _run(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("order", ["recycler_first", "user_first"])
@pytest.mark.parametrize("kind", ["module", "package"])
def test_a_user_storage_module_does_not_clash(tmp_path: Path, kind: str, order: str) -> None:
    _write_user_storage(tmp_path, kind)
    (tmp_path / "reg").mkdir()
    first = RECYCLER_FIRST if order == "recycler_first" else USER_FIRST
    out = _run(tmp_path, first + USE_THE_REGISTRY)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-4000:]
    assert (tmp_path / "reg" / "r.db").is_file()


def test_without_a_clash_recycler_and_users_share_one_storage(tmp_path: Path) -> None:
    assert recycler._storage.Registry is storage.Registry
    assert recycler._storage.StorageError is storage.StorageError
    assert "recycler._storage_pkg" not in sys.modules
    # and in a fresh process where recycler is imported before storage
    out = _run(
        tmp_path,
        """
        import sys
        import recycler._storage as ours
        import storage
        assert ours.Registry is storage.Registry, ours.Registry
        assert "recycler._storage_pkg" not in sys.modules
        print("ok")
        """,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-4000:]


def test_recycler_storage_exports_all_of_storage() -> None:
    assert recycler._storage.__all__ == storage.__all__
    for name in storage.__all__:
        assert getattr(recycler._storage, name) is getattr(storage, name), name


def test_alembic_by_hand_migrates_beside_a_user_storage_module(tmp_path: Path) -> None:
    """``alembic -c storage/_rdb/migrations/alembic.ini upgrade head`` finds its own package."""
    _write_user_storage(tmp_path, "module")
    ini = Path(storage.__file__).parent / "_rdb" / "migrations" / "alembic.ini"
    out = _run(
        tmp_path,
        f"""
        import sqlite3
        import storage
        from alembic import command
        from alembic.config import Config

        cfg = Config({str(ini)!r})
        cfg.set_main_option("sqlalchemy.url", "sqlite:///by-hand.db")
        command.upgrade(cfg, "head")
        rows = sqlite3.connect("by-hand.db").execute("SELECT version_num FROM recycler_schema")
        assert rows.fetchall() == [({storage.SCHEMA_VERSION!r},)]
        assert storage.VALUE == "mine"
        print("ok")
        """,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-4000:]
