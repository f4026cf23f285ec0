"""Engines, one per process, URL and pool limits: SQLite (WAL, IMMEDIATE writes) or PostgreSQL.

Every use of a connection goes through :func:`reading` or :func:`writing`, and both translate
every database error (SQLAlchemy's, the driver's, the connection pool's timeout) into a
``StorageError`` in one place, :func:`translate`: no SQLAlchemy exception leaves ``storage``.

Lock waits are bounded on both backends: a read waits at most ``READ_WAIT_S`` for a lock
another connection holds, a write ``WRITE_WAIT_S`` unless it asks for less (a reader's lease
asks for ``LEASE_WAIT_S``); then it fails with ``RegistryUnavailableError`` ("busy"). SQLite
bounds the wait with ``PRAGMA busy_timeout``, PostgreSQL with ``lock_timeout``.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from .._errors import ConfigurationError, ConflictError, RegistryUnavailableError, StorageError
from .._urls import display_url, file_of, parse_db_url, redact, scrub

_WRITE = "recycler_write"
_WAIT = "recycler_wait_s"
#: The longest a write waits for a lock held by another connection (seconds).
WRITE_WAIT_S = 60.0
#: The longest a read waits for a lock (training threads read: they must not stall).
READ_WAIT_S = 2.0
#: The longest a reader's lease write waits; a lease not taken in time is skipped.
LEASE_WAIT_S = 0.5
_BUSY_TIMEOUT_S = WRITE_WAIT_S
_BACKGROUND = re.compile(r"\s*\(Background on this error at:[^)]*\)\s*$")


@dataclass(frozen=True)
class PoolLimits:
    """Limits of one process's connection pool; None keeps the backend's default.

    ``size``: at most this many connections open at once (no overflow beyond it).
    ``timeout``: seconds a call waits for a free connection before it fails with
    ``RegistryUnavailableError``.
    """

    size: int | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        size, timeout = self.size, self.timeout
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ConfigurationError(f"pool_size must be an int >= 1 or None, got {size!r}")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ConfigurationError(
                f"pool_timeout must be a number of seconds > 0 or None, got {timeout!r}"
            )

    def options(self) -> dict[str, Any]:
        """The ``create_engine`` keywords of these limits (for a pooled engine)."""
        out: dict[str, Any] = {}
        if self.size is not None:
            out.update(pool_size=self.size, max_overflow=0)
        if self.timeout is not None:
            out["pool_timeout"] = float(self.timeout)
        return out


DEFAULT_LIMITS = PoolLimits()
_engines: dict[tuple[int, str, PoolLimits], Engine] = {}
_lock = threading.Lock()


def get_engine(url: str, limits: PoolLimits = DEFAULT_LIMITS) -> Engine:
    """The engine for ``url`` in this process (engines never cross a fork)."""
    key = (os.getpid(), url, limits)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(url, limits)
        return engine


def dispose(url: str, limits: PoolLimits = DEFAULT_LIMITS) -> None:
    """Close this process's engine for ``url`` (its next use opens a new one)."""
    with _lock:
        engine = _engines.pop((os.getpid(), url, limits), None)
    if engine is not None:
        engine.dispose()


def _set_wal(cur: Any) -> None:
    """Switch to WAL; the switch needs a moment alone, which the busy timeout does not wait for."""
    for attempt in range(50):
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc):  # a read-only file or folder: read it as it is
                return
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.02 * (attempt + 1))


def enable_wal(engine: Engine) -> None:
    """Put a SQLite file database in WAL mode (it stays so); nothing for other databases.

    Called once the schema is known to be ours (``schema``), never on connecting: a database
    this library refuses (a newer schema, not a recycler one) is left exactly as it was.
    """
    if engine.dialect.name != "sqlite" or file_of(engine.url) is None:
        return
    with _translated(engine):
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            _set_wal(cur)
            cur.close()
        finally:
            raw.close()


def dispose_all() -> None:
    """Close every engine of this process (tests, shutdown)."""
    with _lock:
        for (pid, _, _), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()


atexit.register(dispose_all)  # pooled connections are closed, not left to the finalizers


def _create(url: str, limits: PoolLimits) -> Engine:
    parsed = parse_db_url(url)
    try:
        return _create_parsed(parsed, limits)
    except (sa_exc.ArgumentError, ImportError) as exc:  # unknown driver, or its module missing
        raise ConfigurationError(
            f"registry URL {display_url(url)!r} cannot be used: {type(exc).__name__}: "
            f"{scrub(str(exc), url)} (use sqlite:///... or postgresql+psycopg://..., and "
            "pip install 'recycler[postgres]' for PostgreSQL)"
        ) from None


def _create_parsed(parsed: URL, limits: PoolLimits) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        path = file_of(parsed)
        if path is not None:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise RegistryUnavailableError(
                    f"SQLite registry folder {folder} does not exist: create it or pick another "
                    "--registry path"
                )
        memory = parsed.database in (None, "", ":memory:")
        engine = create_engine(
            parsed,
            connect_args={"timeout": _BUSY_TIMEOUT_S, "check_same_thread": False},
            hide_parameters=True,
            **({"poolclass": NullPool} if memory else limits.options()),
        )
        _configure_sqlite(engine)
        return engine
    options: dict[str, Any] = {"pool_size": 4, "max_overflow": 4, **limits.options()}
    engine = create_engine(
        parsed,
        pool_pre_ping=True,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args={"connect_timeout": 10},
        **options,
    )
    _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # every statement waits at most READ_WAIT_S for a lock; writes set their own bound
        cur = dbapi_conn.cursor()
        cur.execute(f"SET lock_timeout = {int(READ_WAIT_S * 1000)}")
        cur.close()
        dbapi_conn.commit()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(_WRITE, False):
            wait = float(options.get(_WAIT, WRITE_WAIT_S))
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(wait * 1000))}")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        immediate = options.get(_WRITE, False)
        wait = float(options.get(_WAIT, WRITE_WAIT_S if immediate else READ_WAIT_S))
        busy_ms = max(1, int(wait * 1000))
        info = conn.connection.info
        if info.get("busy_ms") != busy_ms:  # a pragma only when the bound changes
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {busy_ms}")
            info["busy_ms"] = busy_ms
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction."""
    with _translated(engine), engine.connect() as conn, conn.begin():
        yield conn


@contextlib.contextmanager
def writing(engine: Engine, *, wait_s: float | None = None) -> Iterator[Connection]:
    """A write transaction: ``BEGIN IMMEDIATE`` on SQLite, so writers queue instead of failing.

    It waits at most ``wait_s`` (default ``WRITE_WAIT_S``) for a lock another connection holds.
    """
    with _translated(engine), engine.connect() as conn:
        options: dict[str, Any] = {_WRITE: True}
        if wait_s is not None:
            options[_WAIT] = float(wait_s)
        conn = conn.execution_options(**options)
        with conn.begin():
            yield conn


@contextlib.contextmanager
def _translated(engine: Engine) -> Iterator[None]:
    """Every database error of the block, as a ``StorageError`` (see :func:`translate`)."""
    try:
        yield
    except sa_exc.SQLAlchemyError as exc:
        raise translate(engine, exc) from None
    except Exception as exc:
        if isinstance(exc, _driver_errors(engine)):  # a driver error SQLAlchemy did not wrap
            raise translate(engine, exc) from None
        raise


def translate(engine: Engine, exc: Exception) -> StorageError:
    """The ``StorageError`` a database error means, its message free of the URL's password.

    Not chained to ``exc`` (its text and arguments may repeat the password):
    - no connection came free from the pool in time, or the server cannot be reached:
      ``RegistryUnavailableError``;
    - a unique key collided with a concurrent write: ``ConflictError``;
    - anything else the database or SQLAlchemy raised: ``StorageError``.
    """
    shown = redact(engine.url.render_as_string())
    secret = engine.url.render_as_string(hide_password=False)
    if isinstance(exc, sa_exc.TimeoutError):
        return RegistryUnavailableError(
            f"registry {shown} is busy: {scrub(_first_line(exc), secret)}; every connection "
            "this process may open to it is in use: use fewer threads per process, or a "
            "larger pool_size"
        )
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    said = scrub(_first_line(orig), secret)
    if _is_lock_timeout(orig):
        return RegistryUnavailableError(
            f"registry {shown} is busy: {said} (another connection holds a lock; "
            "nothing was changed, try again later)"
        )
    if isinstance(exc, sa_exc.DBAPIError) and (
        exc.connection_invalidated
        or (
            isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
            and _is_connect_failure(exc)
        )
    ):
        return RegistryUnavailableError(f"registry {shown} is unreachable: {said}")
    if isinstance(exc, sa_exc.IntegrityError):
        return ConflictError(f"registry {shown}: a concurrent write collided: {said}")
    return StorageError(f"registry {shown} database error: {said}")


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an error, without SQLAlchemy's help link."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return _BACKGROUND.sub("", lines[0]) if lines else type(exc).__name__


def _driver_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    dbapi = getattr(engine.dialect, "loaded_dbapi", None)
    error = getattr(dbapi, "Error", None)
    found: tuple[type[BaseException], ...] = (sqlite3.Error,)
    return (*found, error) if isinstance(error, type) else found


def _is_lock_timeout(exc: BaseException) -> bool:
    """A lock wait that ran out: SQLite's "database is locked", PostgreSQL's 55P03."""
    if getattr(exc, "sqlstate", None) == "55P03":  # lock_not_available (lock_timeout)
        return True
    text = str(exc).lower()
    return "database is locked" in text or "lock timeout" in text


def _is_connect_failure(exc: sa_exc.DBAPIError) -> bool:
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
