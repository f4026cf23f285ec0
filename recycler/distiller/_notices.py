"""What a trial says about its recycling: once-per-trial notices and the one-line summary.

Recycling that cannot happen (no inputs, no pool, a schedule that never fires) is said once
per trial, with what to do; every adapter ends a trial with one summary line on the
``recycler`` logger (INFO; ``RecycleConfig(summary=False)`` keeps it quiet).

Example:
    >>> notes = Notices("lr-sweep", 3)
    >>> notes.say("no_inputs", "kd.loss() got no inputs")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..schedule import Schedule
from ..teachers import TeacherPool
from ..time import Clock

log = logging.getLogger("recycler")
NO_INPUTS = (
    "kd.loss() got no inputs, so no teacher can run and this trial trains without KD: pass "
    "what the student got, kd.loss(logits, y, x)"
)
_handler: logging.Handler | None = None


def _ensure_visible() -> None:
    """Show recycler's INFO lines when the application configured no logging (like Optuna)."""
    global _handler
    if _handler is not None or log.handlers or logging.getLogger().handlers:
        return
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("[recycler] %(message)s"))
    log.addHandler(_handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


class Notices:
    """Once-per-trial warnings, and the reasons recycling was off (for the summary)."""

    def __init__(self, study: str, number: int) -> None:
        self.study = study
        self.number = number
        self.said: dict[str, str] = {}

    def say(self, key: str, message: str) -> None:
        """Warn once per trial under ``key``."""
        if key in self.said:
            return
        self.said[key] = message
        warnings.warn(
            f"recycler: trial {self.number} of {self.study!r}: {message}",
            RuntimeWarning,
            stacklevel=4,
        )

    def summary(self, stats: dict[str, Any], why_off: str | None) -> str:
        """The trial's recycling in one line."""
        head = f"trial {self.number} of {self.study!r}:"
        steps, distilled = int(stats.get("steps", 0)), int(stats.get("steps_distilled", 0))
        parts = []
        if distilled:
            used = stats.get("teachers_used", [])
            parts.append(f"pool {stats.get('pool', [])}, {len(used)} teacher(s) used")
            parts.append(f"distilled {distilled}/{steps} steps")
            parts.append(f"teacher time +{100 * float(stats.get('overhead', 0.0)):.0f}%")
            if stats.get("retired"):
                retired = [int(k) for k in stats["retired"]]
                parts.append(f"retired {retired} (the student outgrew them)")
        else:
            parts.append(f"recycling off ({why_off or 'no step distilled'})")
        budget = stats.get("budget")
        if budget is not None:
            parts.append(
                f"budget {budget['fraction']:g} ({stats.get('effective_epochs')}/"
                f"{stats.get('planned_epochs')} epochs)"
            )
        if stats.get("init") is not None:
            parts.append(f"init {stats['init']}")
        teacher = stats.get("teacher_id")
        parts.append(f"registered teacher {teacher}" if teacher is not None else "no teacher")
        return f"{head} " + "; ".join(parts)

    def log_summary(self, stats: dict[str, Any], why_off: str | None) -> str:
        """Log :meth:`summary` at INFO and return it."""
        line = self.summary(stats, why_off)
        _ensure_visible()
        log.info("%s", line)
        return line


def never_fires(schedule: Schedule, clock: Clock) -> str | None:
    """What to say when ``schedule`` distils no step of the clock's plan (None: it does)."""
    try:
        fraction = schedule.fraction(
            planned_epochs=clock.planned_epochs,
            steps_per_epoch=clock.steps_per_epoch,
            planned_steps=clock.planned_steps,
        )
    except ConfigError:
        return None  # no plan to judge by
    if fraction > 0:
        return None
    length = (
        f"{clock.planned_epochs} epochs"
        if clock.planned_epochs is not None
        else f"{clock.planned_steps} steps"
    )
    return (
        f"distill.schedule {str(schedule)!r} never distils within this trial's plan of "
        f"{length}, so it trains without KD: shorten the schedule's times or lengthen the plan"
    )


def why_off(
    *,
    weight: float,
    said: Mapping[str, str],
    errors: Sequence[str],
    pool: TeacherPool | None,
    steps: int,
    studies: Sequence[str],
) -> str:
    """Why a trial distilled no step, in the words of its summary line."""
    if weight == 0:
        return "distill.weight is 0"
    if "no_inputs" in said:
        return "kd.loss() got no inputs"
    if "schedule" in said:
        return "the schedule never distils within the plan"
    if errors:
        return f"the registry failed: {errors[-1]}"
    if pool is None:
        return "no training step ran" if steps == 0 else "the schedule never fired"
    if not len(pool):
        skipped = len(pool.skipped)
        names = ", ".join(repr(s) for s in studies)
        extra = f"; {skipped} skipped (see the warnings)" if skipped else ""
        return f"no eligible teacher in {names} yet{extra}"
    return "no step distilled"
