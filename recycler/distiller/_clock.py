"""The trial's clock: steps and epochs so far, and its planned length."""

from __future__ import annotations

from typing import Any

from ..time import Clock, Time


class TrialClock:
    """Where a trial is (step, epoch) and how long it plans to run; saved for resume.

    Example:
        >>> clock = TrialClock()
        >>> clock.plan(epochs=10, steps_per_epoch=5)
        >>> clock.step = 12
        >>> clock.epoch, clock.now().planned_steps
        (2, 50)
    """

    def __init__(self) -> None:
        self.step = 0
        self.explicit_epoch: int | None = None  # set_epoch(): epochs of unknown length
        self.steps_per_epoch: int | None = None
        self.planned_epochs: int | None = None
        self.planned_steps: int | None = None
        self.finished_trials = 0

    def plan(
        self,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        steps: int | None = None,
    ) -> None:
        """The planned length: epochs and steps per epoch, or steps."""
        self.planned_epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        if steps is None and epochs is not None and steps_per_epoch is not None:
            steps = epochs * steps_per_epoch
        self.planned_steps = steps

    @property
    def epoch(self) -> int:
        """The current epoch (0-based)."""
        if self.explicit_epoch is not None:
            return self.explicit_epoch
        return self.step // self.steps_per_epoch if self.steps_per_epoch else 0

    def now(self) -> Clock:
        """The schedule's view of where this trial is."""
        return Clock(
            step=self.step,
            epoch=self.epoch,
            steps_per_epoch=self.steps_per_epoch,
            planned_steps=self.planned_steps,
            planned_epochs=self.planned_epochs,
            finished_trials=self.finished_trials,
        )

    def span(self, t: Time) -> float:
        """How many steps a time span is on this trial's clock."""
        return float(self.now().steps(t))

    def state_dict(self) -> dict[str, Any]:
        """The clock as JSON (for :meth:`load_state_dict`)."""
        return {
            "step": self.step,
            "epoch": self.explicit_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "planned_epochs": self.planned_epochs,
            "planned_steps": self.planned_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put the clock back where :meth:`state_dict` found it."""
        self.step = int(state["step"])
        self.explicit_epoch = state.get("epoch")
        for name in ("steps_per_epoch", "planned_epochs", "planned_steps"):
            if state.get(name) is not None:
                setattr(self, name, int(state[name]))
