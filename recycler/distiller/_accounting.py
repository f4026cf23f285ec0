"""What a trial's KD cost and used: steps distilled, teacher seconds, teachers and errors."""

from __future__ import annotations

import time
import warnings
from typing import Any


class Accounting:
    """The KD bookkeeping of one trial (JSON-serialisable, saved for resume).

    Example:
        >>> acc = Accounting()
        >>> acc.distilled_with([4, 7]); acc.distilled_with([4])
        >>> acc.used, acc.distilled
        ({4: 2, 7: 1}, 2)
    """

    def __init__(self) -> None:
        self.distilled = 0
        self.teacher_s = 0.0
        self.step_s = 0.0
        self.used: dict[int, int] = {}
        self.errors: list[str] = []
        self._last_call: float | None = None

    def tick(self) -> None:
        """A training step begins: the time since the previous one is step time."""
        now = time.perf_counter()
        if self._last_call is not None:
            self.step_s += now - self._last_call
        self._last_call = now

    def distilled_with(self, teacher_ids: list[int]) -> None:
        """A step distilled from these teachers."""
        for tid in teacher_ids:
            self.used[tid] = self.used.get(tid, 0) + 1
        self.distilled += 1

    @property
    def overhead(self) -> float:
        """Teacher-forward time as a fraction of the rest of the step time."""
        rest = self.step_s - self.teacher_s
        return self.teacher_s / rest if rest > 0 else 0.0

    def note_error(self, message: str) -> None:
        """Record a registry failure once, with one warning; training goes on."""
        if message not in self.errors:
            warnings.warn(f"recycler: {message}; training goes on", RuntimeWarning, stacklevel=4)
            self.errors.append(message)

    def stats(self) -> dict[str, Any]:
        """The accounting as the adapters report it."""
        out: dict[str, Any] = {
            "teachers_used": sorted(self.used),
            "steps_distilled": self.distilled,
            "teacher_forward_s": round(self.teacher_s, 6),
            "step_s": round(self.step_s, 6),
            "overhead": round(self.overhead, 6),
        }
        if self.errors:
            out["registry_errors"] = list(self.errors)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything counted so far (for :meth:`load_state_dict`)."""
        return {
            "distilled": self.distilled,
            "teacher_s": self.teacher_s,
            "step_s": self.step_s,
            "used": {str(k): v for k, v in self.used.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on counting from :meth:`state_dict`."""
        self.distilled = int(state["distilled"])
        self.teacher_s = float(state["teacher_s"])
        self.step_s = float(state["step_s"])
        self.used = {int(k): int(v) for k, v in state["used"].items()}
        self._last_call = None
