"""Engines, one per process and URL: SQLite in WAL with IMMEDIATE writes, or PostgreSQL."""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.pool import NullPool

from .._errors import ConfigurationError, RegistryUnavailableError, StorageError
from .._urls import display_url, parse_db_url, redact, scrub

_WRITE = "recycler_write"
_BUSY_TIMEOUT_S = 60.0
_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """The engine for ``url`` in this process (engines never cross a fork)."""
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(url)
        return engine


def dispose(url: str) -> None:
    """Close this process's engine for ``url`` (its next use opens a new one)."""
    with _lock:
        engine = _engines.pop((os.getpid(), url), None)
    if engine is not None:
        engine.dispose()


def _set_wal(cur: Any) -> None:
    """Switch to WAL; the switch needs a moment alone, which the busy timeout does not wait for."""
    for attempt in range(50):
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.02 * (attempt + 1))


def dispose_all() -> None:
    """Close every engine of this process (tests, shutdown)."""
    with _lock:
        for (pid, _), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()


atexit.register(dispose_all)  # pooled connections are closed, not left to the finalizers


def _create(url: str) -> Engine:
    parsed = parse_db_url(url)
    try:
        return _create_parsed(parsed)
    except (ArgumentError, ImportError) as exc:  # unknown driver, or its module not installed
        raise ConfigurationError(
            f"registry URL {display_url(url)!r} cannot be used: {type(exc).__name__}: "
            f"{scrub(str(exc), url)} (use sqlite:///... or postgresql+psycopg://..., and "
            "pip install 'recycler[postgres]' for PostgreSQL)"
        ) from None


def _create_parsed(parsed: URL) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database not in ("", ":memory:") and not database.startswith("file:"):
            folder = os.path.dirname(os.path.abspath(database))
            if not os.path.isdir(folder):
                raise RegistryUnavailableError(
                    f"SQLite registry folder {folder} does not exist: create it or pick another "
                    "--registry path"
                )
        engine = create_engine(
            parsed,
            connect_args={"timeout": _BUSY_TIMEOUT_S, "check_same_thread": False},
            poolclass=NullPool if database in ("", ":memory:") else None,
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        parsed,
        pool_size=4,
        max_overflow=4,
        pool_pre_ping=True,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args={"connect_timeout": 10},
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        _set_wal(cur)
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction."""
    with _translated(engine), engine.connect() as conn, conn.begin():
        yield conn


@contextlib.contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction: ``BEGIN IMMEDIATE`` on SQLite, so writers queue instead of failing."""
    with _translated(engine), engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def _translated(engine: Engine) -> Iterator[None]:
    """Turn a connection failure into ``RegistryUnavailableError`` without the password."""
    try:
        yield
    except DBAPIError as exc:
        if exc.connection_invalidated or (
            isinstance(exc, (OperationalError, InterfaceError)) and _is_connect_failure(exc)
        ):
            url = engine.url.render_as_string(hide_password=False)
            raise RegistryUnavailableError(
                f"registry {redact(engine.url.render_as_string())} is unreachable: "
                f"{scrub(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc), url)}"
            ) from None
        if isinstance(exc, IntegrityError):
            raise  # callers handle constraint races themselves
        url = engine.url.render_as_string(hide_password=False)
        first = (str(exc.orig) if exc.orig else str(exc)).strip().splitlines()
        raise StorageError(
            f"registry {redact(engine.url.render_as_string())} database error: "
            f"{scrub(first[0] if first else type(exc).__name__, url)}"
        ) from None


def _is_connect_failure(exc: DBAPIError) -> bool:
    text = str(exc.orig or exc).lower()
    return any(
        marker in text
        for marker in (
            "connection refused",
            "could not connect",
            "connection failed",
            "unable to open database",
            "server closed the connection",
            "terminating connection",
            "does not exist",
            "timeout expired",
            "no such host",
            "name or service not known",
            "connection is bad",
            "the connection is closed",
        )
    )
