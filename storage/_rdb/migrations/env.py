"""Alembic environment of the registry schema; the version lives in ``recycler_schema``.

``storage`` runs its migrations itself (``storage._rdb.schema``) and hands this file the
connection, the metadata and the version table in ``config.attributes``: nothing here imports
the package by name, which may not be ``storage`` (recycler loads its own copy under a private
name when a user's ``storage`` module shadows it).

Run by hand (``alembic -c storage/_rdb/migrations/alembic.ini upgrade head``), the package is
found from this file's location, not from ``sys.path``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import context
from sqlalchemy import Connection

_HOME = Path(__file__).resolve().parents[2]  # the storage package folder


def _run(connection: Connection, metadata: Any, version_table: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=True,
        include_name=lambda name, type_, _p: type_ != "table" or str(name).startswith("recycler_"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _home_package() -> ModuleType:
    """The package this file belongs to, as loaded, or loaded now from its folder."""
    init = _HOME / "__init__.py"
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == init:
            return module
    try:
        spec = importlib.util.find_spec("storage")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and Path(spec.origin).resolve() == init:
        return importlib.import_module("storage")
    name = "_recycler_registry_storage"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(_HOME)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _by_hand() -> None:
    """The ``alembic`` command line, with ``sqlalchemy.url`` set in its ini file."""
    package = _home_package().__name__
    engine = importlib.import_module(f"{package}._rdb.engine")
    models = importlib.import_module(f"{package}._rdb.models")
    schema = importlib.import_module(f"{package}._rdb.schema")
    url = context.config.get_main_option("sqlalchemy.url") or ""
    with engine.writing(engine.get_engine(url)) as conn:
        _run(conn, models.Base.metadata, schema.VERSION_TABLE)


attributes = context.config.attributes
if attributes.get("connection") is not None:
    _run(attributes["connection"], attributes["target_metadata"], attributes["version_table"])
else:
    _by_hand()
