"""Whether an SQLite registry changed since last asked, without querying its tables.

``PRAGMA data_version`` on a private connection changes exactly when another connection has
committed to the database file since that connection last asked (SQLite documents it for
this use). A Distiller refreshing its pool every epoch then costs one pragma while nothing
changed, instead of an aggregate query (which also evicted the training step's data from the
CPU caches: measured here, the refresh step ran ~0.8 ms slower than the others).
"""

from __future__ import annotations

import os
import sqlite3
import threading

from sqlalchemy import Engine, bindparam, case, func, select

from .._records import Status
from .._urls import file_of
from .models import TeacherRow

__all__ = ["STAMP", "ChangeCounter"]

#: The READY teachers of some studies as one row: (count, sum of ids, finals). Built once:
#: building this select on every refresh cost more than running it.
STAMP = select(
    func.count(),
    func.coalesce(func.sum(TeacherRow.id), 0),
    func.coalesce(func.sum(case((TeacherRow.final.is_(True), 1), else_=0)), 0),
).where(
    TeacherRow.study.in_(bindparam("studies", expanding=True)),
    TeacherRow.status == Status.READY.value,
)


class ChangeCounter:
    """``PRAGMA data_version`` of an SQLite file database; None for anything else.

    Example:
        >>> counter = ChangeCounter(get_engine("sqlite:///r.db"))  # doctest: +SKIP
        >>> counter.version()  # a new value after another connection commits  # doctest: +SKIP
        (1, 1)
    """

    def __init__(self, engine: Engine) -> None:
        path = file_of(engine.url)
        self._path = path if path and not engine.url.query else None
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._connections = 0

    def version(self) -> tuple[int, int] | None:
        """(connection number, data version); equal twice only if nothing was committed between.

        None when not known (not an SQLite file, or the file could not be read). Versions of
        different connections are not comparable, hence the connection number: it changes
        whenever the counter reconnects (after an error, or in a forked child).
        """
        if self._path is None:
            return None
        with self._lock:
            try:
                if self._conn is None or self._pid != os.getpid():  # never a forked connection
                    self._conn = sqlite3.connect(self._path, check_same_thread=False)
                    self._pid = os.getpid()
                    self._connections += 1
                row = self._conn.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error:
                self._conn = None
                return None
        return self._connections, int(row[0])
