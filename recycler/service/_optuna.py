"""Optuna studies in the registry's database, read through Optuna's public storage API.

When a sweep keeps its Optuna study in the same database as the registry (one URL for both,
as the demo does), the service shows each trial's state, value, duration, intermediate values
and ``recycler`` user attrs. It never writes: the storage is opened with
``skip_table_creation=True``, so a registry without Optuna's tables stays without them (the
reader then says "no Optuna study here"). Optuna is imported on first use only.

Example:
    >>> reader = OptunaReader("sqlite:///recycler-demo/demo.db")  # doctest: +SKIP
    >>> [t.number for t in reader.trials("demo-recycled")]  # doctest: +SKIP
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._imports import require

if TYPE_CHECKING:
    import optuna

#: The user-attr key under which recycler's adapters store each trial's KD accounting.
ATTR_KEY = "recycler"
_RETRY_S = 10.0  # a database without Optuna's tables is asked again after this long
_MAX_DEPTH = 20


@dataclass(frozen=True)
class TrialData:
    """One Optuna trial, JSON-ready (non-finite numbers are None).

    Example:
        >>> TrialData(0, "complete", 0.9, started=10.0, completed=12.5).seconds
        2.5
    """

    number: int
    state: str
    value: float | None
    params: Mapping[str, Any] = field(default_factory=dict)
    started: float | None = None  # POSIX seconds
    completed: float | None = None
    intermediate: tuple[tuple[int, float | None], ...] = ()
    recycler: Mapping[str, Any] | None = None

    @property
    def seconds(self) -> float | None:
        """The trial's wall-clock duration, when both ends are recorded."""
        if self.started is None or self.completed is None:
            return None
        return max(0.0, self.completed - self.started)


@dataclass(frozen=True)
class StudyData:
    """One Optuna study: its direction (the first, for a multi-objective one) and trials.

    Example:
        >>> StudyData("sweep", "maximize", []).direction
        'maximize'
    """

    name: str
    direction: str
    trials: Sequence[TrialData]


class OptunaReader:
    """Reads the Optuna studies of one database URL; thread-safe, never writes.

    Example:
        >>> OptunaReader("sqlite:///demo.db").study_names()  # doctest: +SKIP
        ['demo-plain', 'demo-recycled']
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._storage: optuna.storages.RDBStorage | None = None
        self._failed_at: float | None = None

    def _open(self) -> optuna.storages.RDBStorage | None:
        with self._lock:
            if self._storage is not None:
                return self._storage
            if self._failed_at is not None and time.monotonic() - self._failed_at < _RETRY_S:
                return None
            storage: optuna.storages.RDBStorage | None = None
            try:
                optuna_module = require("optuna", None, minimum="4.0", feature="Optuna studies")
                storage = optuna_module.storages.RDBStorage(self._url, skip_table_creation=True)
                storage.get_all_studies()  # no Optuna tables here: fails now, not per request
            except Exception:  # any backend error means "no Optuna study to show here"
                if storage is not None:
                    storage.engine.dispose()
                self._failed_at = time.monotonic()
                return None
            self._storage, self._failed_at = storage, None
            return storage

    @property
    def available(self) -> bool:
        """Whether the database holds Optuna's tables."""
        return self._open() is not None

    def study_names(self) -> list[str]:
        """The names of the Optuna studies in the database (none when it has no Optuna)."""
        storage = self._open()
        if storage is None:
            return []
        try:
            return sorted(s.study_name for s in storage.get_all_studies())
        except Exception:
            return []

    def study(self, name: str) -> StudyData | None:
        """The study called ``name`` with its trials, or None when there is none."""
        storage = self._open()
        if storage is None:
            return None
        try:
            study_id = storage.get_study_id_from_name(name)
            directions = storage.get_study_directions(study_id)
            frozen = storage.get_all_trials(study_id, deepcopy=False)
        except Exception:  # KeyError for an unknown name; a backend error reads as absent
            return None
        direction = directions[0].name.lower() if directions else "maximize"
        trials = sorted((_trial(t) for t in frozen), key=lambda t: t.number)
        return StudyData(name=name, direction=direction, trials=trials)

    def trials(self, name: str) -> list[TrialData] | None:
        """The trials of study ``name`` by number, or None when there is no such study."""
        found = self.study(name)
        return None if found is None else list(found.trials)

    def close(self) -> None:
        """Close the connections (reopened on next use)."""
        with self._lock:
            if self._storage is not None:
                self._storage.remove_session()
                self._storage.engine.dispose()
            self._storage = None


def _trial(t: optuna.trial.FrozenTrial) -> TrialData:
    values = t.values
    value = _finite(values[0]) if values else None
    attrs = t.user_attrs.get(ATTR_KEY)
    return TrialData(
        number=int(t.number),
        state=t.state.name.lower(),
        value=value,
        params=dict(json_safe(dict(t.params))),
        started=None if t.datetime_start is None else t.datetime_start.timestamp(),
        completed=None if t.datetime_complete is None else t.datetime_complete.timestamp(),
        intermediate=tuple(
            (int(step), _finite(v)) for step, v in sorted(t.intermediate_values.items())
        ),
        recycler=dict(json_safe(attrs)) if isinstance(attrs, Mapping) else None,
    )


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with non-finite floats as None, keys as strings, nesting bounded."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return str(value)
