"""Teachers the student has outgrown: beaten on the same training batches, they stop teaching.

A half-trained run that is the best of the study so far (51% on 10 classes) passes every
quality gate, and a student that would reach 97% alone ends lower when it is pulled towards
that teacher all the way (measured in ``examples/benchmarks/second_task.py``). So, with class
labels, every ``EVERY``-th distilled step with the same teachers also counts how many of the
batch's labels the student and those teachers get right; once the student leads them by
``MARGIN`` over ``WINDOW`` such counts, they are retired for the rest of the trial, which goes
on with the rest of its pool (none left: it trains on its own). Counting one step in
``EVERY`` keeps its cost out of the step time (``kd_overhead.py``) on small CPU models.

Example:
    >>> tracker = Outgrown()
    >>> tracker.observe((3,), student_logits, teacher_logits, target)  # doctest: +SKIP
    >>> tracker.judge(), tracker.retired  # WINDOW steps later, led by the student  # doctest: +SKIP
    ([3], {3: 'the student outgrew it: 93.0% of the labels right ...'})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

#: Counted steps with the same teachers over which the student is compared with them.
WINDOW = 10
#: One distilled step in this many (per set of teachers) is counted.
EVERY = 4
#: How far ahead (fraction of the labels) the student must be over the window.
MARGIN = 0.01


@dataclass
class _Tally:
    steps: int = 0  # steps counted
    seen: int = 0  # distilled steps with these teachers
    right: torch.Tensor | None = None  # [student, teachers] labels right, summed on the device
    labels: int | torch.Tensor = 0  # a tensor when a mask says which rows have labels


class Outgrown:
    """Counts, per set of sampled teachers, labels right by them and by the student.

    ``retired`` (id -> why) is the trial's verdict so far; it and the open windows travel in
    :meth:`state_dict`, so a resumed trial retires the same teachers at the same steps.
    """

    def __init__(self, window: int = WINDOW, margin: float = MARGIN, every: int = EVERY) -> None:
        self.window = window
        self.every = every
        self.margin = margin
        self.retired: dict[int, str] = {}
        self._tallies: dict[tuple[int, ...], _Tally] = {}
        self._ready: list[tuple[int, ...]] = []

    def observe(
        self,
        ids: tuple[int, ...],
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor | None,
        mask: torch.Tensor | None = None,
    ) -> None:
        """One distilled step: the student's and the (averaged) teachers' logits, the labels.

        Steps without class labels (no target, soft targets, shapes that do not match) count
        nothing. Without ``mask`` every row counts (an ignored label is wrong for both).
        A few tensor ops, no device sync (a per-step cost, measured in ``kd_overhead.py``).
        """
        tally = self._tallies.setdefault(ids, _Tally())
        tally.seen += 1
        if (tally.seen - 1) % self.every:
            return
        if target is None or target.is_floating_point() or target.shape != student.shape[:-1]:
            return
        right = torch.stack((student.detach().argmax(-1), teacher.argmax(-1))) == target
        labels: int | torch.Tensor = target.numel()
        if mask is not None:
            right, labels = right & mask, mask.sum()
        counts = right.flatten(1).sum(-1)
        # (``to``: a no-op, unless the counts came back from a state_dict on the CPU)
        tally.right = counts if tally.right is None else tally.right.to(counts.device) + counts
        tally.labels = tally.labels + labels
        tally.steps += 1
        if tally.steps >= self.window:
            self._ready.append(ids)

    def judge(self) -> list[int]:
        """Retire the teachers of every full window that the student leads; their ids.

        Reads the counts of the windows that are full (one device sync each) and starts them
        again.
        """
        found: list[int] = []
        for ids in self._ready:
            student, teacher, labels = _counts(self._tallies.pop(ids, _Tally()))
            if labels and student / labels >= teacher / labels + self.margin:
                whose = "the teachers'" if len(ids) > 1 else "the teacher's"
                why = (
                    f"the student outgrew it: {student / labels:.1%} of the labels right over "
                    f"the last {self.window * self.every} steps it taught, against {whose} "
                    f"{teacher / labels:.1%}"
                )
                for tid in ids:
                    self.retired[tid] = why
                found += ids
        self._ready.clear()
        return found

    def state_dict(self) -> dict[str, Any]:
        """The verdicts and the open windows' counts (JSON-safe)."""
        return {
            "retired": {str(k): v for k, v in self.retired.items()},
            "tallies": [
                [list(ids), t.steps, t.seen, *_counts(t)] for ids, t in self._tallies.items()
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Back to :meth:`state_dict`."""
        self.retired = {int(k): str(v) for k, v in state.get("retired", {}).items()}
        self._tallies = {
            tuple(int(i) for i in ids): _Tally(
                int(steps), int(seen), torch.tensor(right[:2]), int(right[2])
            )
            for ids, steps, seen, *right in state.get("tallies", [])
        }
        self._ready = [ids for ids, t in self._tallies.items() if t.steps >= self.window]


def _counts(tally: _Tally) -> tuple[int, int, int]:
    """(student right, teachers right, labels) of a window, as ints."""
    student, teacher = (0, 0) if tally.right is None else (int(n) for n in tally.right.tolist())
    return student, teacher, int(tally.labels)
