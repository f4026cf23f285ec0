"""The per-trial runtime, one job per module.

- ``_facade``: :class:`Distiller`, what the training loop and the adapters call
- ``_identity``: :class:`TrialIdentity` (who the trial is) and the params-to-JSON rule
- ``_clock``: the trial's step/epoch clock and plan
- ``_refresh``: the teacher pool, refreshed from the registry (in the background)
- ``_step``: one distilled step (online or cached teacher logits, the quality gate)
- ``_cache``: the teacher-logit cache
- ``_accounting``: steps distilled, teacher seconds, teachers used, registry errors
- ``_lifecycle``: the trial lifecycle adapters map their hooks onto (register policy,
  intermediate checkpoints, the end of a trial)

Example:
    >>> from recycler.distiller import Distiller, not_registered
    >>> from recycler import RecycleConfig
    >>> not_registered(RecycleConfig(register={"enabled": False}), "complete")
    'register.enabled is false'
"""

from __future__ import annotations

from ._facade import Distiller
from ._identity import TrialIdentity, jsonable
from ._lifecycle import (
    RUNNING,
    TrialOutcome,
    TrialState,
    checkpoint_due,
    metric_of,
    not_registered,
)
from ._refresh import output_signature

__all__ = [
    "RUNNING",
    "Distiller",
    "TrialIdentity",
    "TrialOutcome",
    "TrialState",
    "checkpoint_due",
    "jsonable",
    "metric_of",
    "not_registered",
    "output_signature",
]
