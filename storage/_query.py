"""Teacher queries: filters, direction-aware top-k, ordering by allow-listed fields only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, exists, func, select

from ._rdb.models import TeacherRow
from ._records import Status
from ._rows import teacher_columns

#: The fields results may be ordered by; anything else is refused.
ORDER_FIELDS: Mapping[str, Any] = {
    "id": TeacherRow.id,
    "created_at": TeacherRow.created_at,
    "metric": TeacherRow.metric_value,
    "trial_number": TeacherRow.trial_number,
    "step": TeacherRow.step,
    "study": TeacherRow.study,
}


@dataclass(frozen=True)
class TeacherQuery:
    """Which teachers to return.

    ``top_k`` returns the k best by metric, each row ranked by its own direction
    (maximize: larger first; minimize: smaller first); rows without a metric are left out.

    Example:
        >>> q = TeacherQuery(study="lr-sweep", top_k=5, output_signature="logits[10]")
        >>> q.status
        <Status.READY: 'READY'>
    """

    study: str | None = None
    framework: str | None = None
    status: Status | str | None = Status.READY
    trial_states: Sequence[str] | None = None
    final: bool | None = None
    min_metric: float | None = None
    max_metric: float | None = None
    output_signature: str | Sequence[str] | None = None  # one, or any of several
    tags: Mapping[str, str] = field(default_factory=dict)
    exclude_trials: Sequence[int] = ()
    trial_below: int | None = None
    top_k: int | None = None
    order_by: str = "id"
    descending: bool = False
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.order_by not in ORDER_FIELDS:
            raise ValueError(
                f"cannot order by {self.order_by!r}: choose one of {', '.join(ORDER_FIELDS)}"
            )
        for name in ("top_k", "limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.status is not None:
            object.__setattr__(self, "status", Status(self.status))


def build_select(q: TeacherQuery, dialect: str) -> Select[Any]:
    """The SELECT for ``q`` (bound parameters only: no caller text is ever spliced into SQL)."""
    t = TeacherRow
    stmt = select(*teacher_columns())  # raw values: a malformed row is skipped, not fatal
    if q.study is not None:
        stmt = stmt.where(t.study == q.study)
    if q.framework is not None:
        stmt = stmt.where(t.framework == q.framework)
    if q.status is not None:
        stmt = stmt.where(t.status == Status(q.status).value)
    if q.trial_states is not None:
        stmt = stmt.where(t.trial_state.in_(list(q.trial_states)))
    if q.final is not None:
        stmt = stmt.where(t.final.is_(q.final))
    if q.min_metric is not None:
        stmt = stmt.where(t.metric_value >= q.min_metric)
    if q.max_metric is not None:
        stmt = stmt.where(t.metric_value <= q.max_metric)
    if isinstance(q.output_signature, str):
        stmt = stmt.where(t.output_signature == q.output_signature)
    elif q.output_signature is not None:
        stmt = stmt.where(t.output_signature.in_(list(q.output_signature)))
    for key, value in q.tags.items():
        stmt = stmt.where(_has_tag(key, value, dialect))
    if q.exclude_trials:
        stmt = stmt.where(t.trial_number.not_in(list(q.exclude_trials)))
    if q.trial_below is not None:
        stmt = stmt.where(t.trial_number < q.trial_below)
    if q.top_k is not None:  # best first whatever each row's direction (an index scan)
        return stmt.where(t.score.is_not(None)).order_by(t.score.desc(), t.id).limit(q.top_k)
    column = ORDER_FIELDS[q.order_by]
    stmt = stmt.order_by(column.desc() if q.descending else column.asc(), t.id)
    return stmt.limit(q.limit) if q.limit is not None else stmt


def _has_tag(key: str, value: str, dialect: str) -> Any:
    """EXISTS over the tags' key/value pairs: any key works, quotes and all (no JSON paths)."""
    each = func.json_each_text if dialect == "postgresql" else func.json_each
    pairs = each(TeacherRow.tags).table_valued("key", "value").alias("tag")
    return exists(select(1).select_from(pairs).where(pairs.c.key == key, pairs.c.value == value))
