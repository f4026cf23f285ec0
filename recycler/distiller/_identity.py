"""Who a trial is: study, number, framework id, params, direction and metric name."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._storage import Direction, TeacherRecord

#: The tag on a teacher naming the run of the trial that registered it.
RUN_TAG = "recycler.run"


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of trial params: numbers, strings, lists and dicts; the rest as repr.

    The one rule for params that go to the registry or a checkpoint's ``recycler.json``.

    Example:
        >>> jsonable({"lr": 0.1, "layers": (2, 3), "act": len, "x": float("nan")})
        {'lr': 0.1, 'layers': [2, 3], 'act': '<built-in function len>', 'x': 'nan'}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return repr(value)


@dataclass
class TrialIdentity:
    """One trial of a study, as the registry and the lineage name it.

    ``number`` is the study-wide trial number (Optuna's ``trial.number``; for Ray the numeric
    suffix of the trial id), ``id`` the framework's own trial id. ``run`` tells this run of
    the trial from another under the same study name and number (an in-memory study run
    twice): the framework's own id where that is unique per run (Ray's), else random; a
    resumed trial keeps it (:meth:`Distiller.state_dict`). ``params`` are
    kept JSON-safe (:func:`jsonable`).

    Example:
        >>> TrialIdentity("lr-sweep", 3, framework="optuna", params={"lr": 0.1}).params
        {'lr': 0.1}
    """

    study: str
    number: int
    id: str | None = None
    framework: str = "manual"
    params: dict[str, Any] = field(default_factory=dict)
    direction: Direction = Direction.MAXIMIZE
    metric_name: str | None = None
    run: str = ""

    def __post_init__(self) -> None:
        self.run = self.run or uuid.uuid4().hex
        self.params = jsonable(dict(self.params))
        self.direction = Direction(self.direction)

    def owns(self, record: TeacherRecord) -> bool:
        """Whether this very run of the trial registered ``record`` (never its own teacher)."""
        return (
            record.study == self.study
            and record.trial_number == self.number
            and record.tags.get(RUN_TAG) == self.run
        )


class IdentityView:
    """Read access to a :class:`TrialIdentity` held as ``self.identity`` (the Distiller's)."""

    identity: TrialIdentity

    @property
    def study(self) -> str:
        """The registry study this trial belongs to."""
        return self.identity.study

    @property
    def trial_number(self) -> int:
        """The trial's number in its study."""
        return self.identity.number

    @property
    def trial_id(self) -> str | None:
        """The framework's own id of the trial."""
        return self.identity.id

    @property
    def framework(self) -> str:
        """Which framework runs the trial ("optuna", "ray", "manual", ...)."""
        return self.identity.framework

    @property
    def direction(self) -> Direction:
        """Which way the trial's metric is better."""
        return self.identity.direction

    @property
    def metric_name(self) -> str | None:
        """The name of the trial's metric."""
        return self.identity.metric_name

    @property
    def params(self) -> dict[str, Any]:
        """The trial's hyperparameters (JSON-safe)."""
        return self.identity.params

    @params.setter
    def params(self, value: Mapping[str, Any]) -> None:
        self.identity.params = jsonable(dict(value))
