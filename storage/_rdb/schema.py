"""Schema versions: create at first use, upgrade on request, refuse a newer schema."""

from __future__ import annotations

import zlib
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

from .._errors import SchemaError
from .engine import enable_wal, reading, writing

VERSION_TABLE = "recycler_schema"
#: Revisions this library knows, oldest first; the last one is the current schema.
REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005", "0006")
HEAD = REVISIONS[-1]
_MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_ID = zlib.crc32(b"recycler_schema")


def current_version(conn: Connection) -> str | None:
    """The schema revision stored in the database, or None for a database without one."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    row = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
    return None if row is None else str(row[0])


def check_known(version: str | None, url: str) -> None:
    """Refuse a schema newer than this library, before anything is written."""
    if version is not None and version not in REVISIONS:
        raise SchemaError(
            f"registry {url} has schema version {version}, newer than this recycler "
            f"(it knows up to {HEAD}): upgrade the recycler package; nothing was written"
        )


def ensure_schema(engine: Engine, url: str, *, create: bool = True) -> str:
    """Make sure the database is at ``HEAD``: create an empty one, refuse anything else."""
    with reading(engine) as conn:
        version = current_version(conn)
    check_known(version, url)
    if version == HEAD:
        enable_wal(engine)  # only now: a refused (newer, foreign) file is left as it was
        return version
    if version is not None:
        raise SchemaError(
            f"registry {url} has schema version {version}, this recycler needs {HEAD}: "
            "run `recycler db upgrade` (back the database up first)"
        )
    if not create:
        raise SchemaError(f"registry {url} has no recycler schema: run `recycler db upgrade`")
    return upgrade(engine, url, only_if_empty=True)


def upgrade(engine: Engine, url: str, *, target: str = HEAD, only_if_empty: bool = False) -> str:
    """Upgrade the schema to ``target`` under a lock, so concurrent processes migrate once."""
    with writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
        version = current_version(conn)
        check_known(version, url)
        if version is not None and only_if_empty:
            return version  # another process created it meanwhile (and switched it to WAL)
        if version != target:
            _alembic_upgrade(conn, target)
    enable_wal(engine)  # outside the transaction: SQLite switches journal modes only there
    return target


def _alembic_upgrade(conn: Connection, target: str) -> None:
    """Run the migrations on ``conn``; ``env.py`` gets everything it needs from the attributes.

    The connection and metadata travel in ``Config.attributes``, so ``env.py`` imports nothing
    of this package: it works whatever name the package was loaded under.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    from .models import Base

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    cfg.attributes["target_metadata"] = Base.metadata
    cfg.attributes["version_table"] = VERSION_TABLE
    try:
        command.upgrade(cfg, target)
    except CommandError as exc:
        raise SchemaError(f"the registry schema could not be migrated to {target}: {exc}") from exc
