"""recycler: hyperparameter search that recycles prior runs as distillation teachers.

Example:
    >>> from recycler import Distiller, RecycleConfig
    >>> cfg = RecycleConfig(distill={"schedule": "every 20ep for 2ep"})
    >>> str(cfg.distill.schedule)
    'every 20ep for 2ep'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._storage import Registry, TeacherQuery, TeacherRecord
from .errors import ConfigError, MissingExtraError, RecyclerError

if TYPE_CHECKING:
    from .config import DistillConfig, RecycleConfig, RegisterConfig, TeachersConfig
    from .distiller import Distiller, output_signature
    from .losses import KDTerm, kd_loss, register_loss
    from .sampling import StepSampler, eligible, register_policy, select_pool
    from .schedule import Schedule
    from .teachers import TeacherPool
    from .time import Clock, Time, TimeUnit

# torch-backed names load on first use, so `recycler` (and its CLI) starts without torch
_LAZY = {
    "DistillConfig": "config",
    "RecycleConfig": "config",
    "RegisterConfig": "config",
    "TeachersConfig": "config",
    "Distiller": "distiller",
    "output_signature": "distiller",
    "KDTerm": "losses",
    "kd_loss": "losses",
    "register_loss": "losses",
    "StepSampler": "sampling",
    "eligible": "sampling",
    "register_policy": "sampling",
    "select_pool": "sampling",
    "Schedule": "schedule",
    "TeacherPool": "teachers",
    "Clock": "time",
    "Time": "time",
    "TimeUnit": "time",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'recycler' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Clock",
    "ConfigError",
    "DistillConfig",
    "Distiller",
    "KDTerm",
    "MissingExtraError",
    "RecycleConfig",
    "RecyclerError",
    "RegisterConfig",
    "Registry",
    "Schedule",
    "StepSampler",
    "TeacherPool",
    "TeacherQuery",
    "TeacherRecord",
    "TeachersConfig",
    "Time",
    "TimeUnit",
    "__version__",
    "eligible",
    "kd_loss",
    "output_signature",
    "register_loss",
    "register_policy",
    "select_pool",
]
