"""recycler: hyperparameter search that recycles prior runs as distillation teachers.

Example:
    >>> from recycler import Distiller, RecycleConfig
    >>> cfg = RecycleConfig(distill={"schedule": "every 20ep for 2ep"})
    >>> str(cfg.distill.schedule)
    'every 20ep for 2ep'
"""

from __future__ import annotations

from storage import Registry, TeacherQuery, TeacherRecord

from .config import DistillConfig, RecycleConfig, RegisterConfig, TeachersConfig
from .distiller import Distiller, output_signature
from .errors import ConfigError, MissingExtraError, RecyclerError
from .losses import kd_loss, register_loss
from .sampling import StepSampler, eligible, select_pool
from .schedule import Schedule
from .teachers import TeacherPool
from .time import Clock, Time, TimeUnit

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "ConfigError",
    "DistillConfig",
    "Distiller",
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
    "select_pool",
]
