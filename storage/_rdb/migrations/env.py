"""Alembic environment of the registry schema; the version lives in ``recycler_schema``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from storage._rdb.engine import get_engine, writing
from storage._rdb.models import Base

VERSION_TABLE = "recycler_schema"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        include_name=lambda name, type_, _p: type_ != "table" or str(name).startswith("recycler_"),
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # run by the `alembic` command line with sqlalchemy.url set
    with writing(get_engine(context.config.get_main_option("sqlalchemy.url") or "")) as conn:
        _run(conn)
