"""Shared fixtures: registries on SQLite and, when RECYCLER_TEST_POSTGRES_URL is set, PostgreSQL.

Each PostgreSQL test gets its own scratch database, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage import Registry
from storage._rdb.engine import dispose_all

PG_ENV = "RECYCLER_TEST_POSTGRES_URL"


def _admin_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL server tests skipped")
    return url


def make_scratch_db() -> tuple[str, str]:
    """Create a scratch database; returns (its URL, its name)."""
    admin = make_url(_admin_url()).set(drivername="postgresql+psycopg")
    name = f"recycler_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False), name


def drop_scratch_db(name: str) -> None:
    dispose_all()
    admin = make_url(_admin_url()).set(drivername="postgresql+psycopg")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    url, name = make_scratch_db()
    try:
        yield url
    finally:
        drop_scratch_db(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh registry database URL: a SQLite file, and the PostgreSQL server when configured."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        dispose_all()
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def registry(db_url: str, tmp_path: Path) -> Registry:
    """An empty registry with a local blob folder."""
    return Registry(db_url, tmp_path / "blobs")
