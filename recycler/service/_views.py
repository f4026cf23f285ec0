"""What the API answers, built from the registry (and Optuna's tables when they share it).

Each method returns plain JSON-ready data (dicts, lists, numbers, ISO datetimes via the
response models); URLs are shown masked. Nothing here writes, except :meth:`Views.delete`
and :meth:`Views.restore`, which the app calls only with the token.

Example:
    >>> views = Views(Registry("sqlite:///r.db", "blobs", create=False))  # doctest: +SKIP
    >>> [s["study"] for s in views.studies()]  # doctest: +SKIP
    ['demo-plain', 'demo-recycled']
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._storage import (
    LineageRecord,
    Registry,
    Status,
    StudySummary,
    TeacherNotFoundError,
    TeacherQuery,
    TeacherRecord,
    redact,
)
from ._curves import Curve, compare, curve, registry_curve
from ._optuna import OptunaReader, StudyData, TrialData
from ._version import VERSION

_PAIR = re.compile(r"^(?P<base>.*?)(?P<sep>[-_.]?)(?P<kind>plain|recycled)$")


def twin_of(name: str) -> str | None:
    """The plain/recycled twin of a study name: ``x-plain`` <-> ``x-recycled``; else None.

    Example:
        >>> twin_of("demo-recycled"), twin_of("lr_plain"), twin_of("sweep")
        ('demo-plain', 'lr_recycled', None)
    """
    m = _PAIR.match(name)
    if m is None or not (m["base"] or m["sep"]):
        return None
    other = "recycled" if m["kind"] == "plain" else "plain"
    return f"{m['base']}{m['sep']}{other}"


def teacher_json(rec: TeacherRecord) -> dict[str, Any]:
    """A teacher as the API shows it: every field, enums as values, URLs masked."""
    return {
        "id": rec.id,
        "study": rec.study,
        "trial_number": rec.trial_number,
        "trial_id": rec.trial_id,
        "framework": rec.framework,
        "params": dict(rec.params),
        "metric_name": rec.metric_name,
        "metric_value": rec.metric_value,
        "direction": rec.direction.value,
        "step": rec.step,
        "epoch": rec.epoch,
        "final": rec.final,
        "trial_state": rec.trial_state,
        "output_signature": rec.output_signature,
        "blob_key": rec.blob_key,
        "blob_uri": redact(rec.blob_uri),
        "sha256": rec.sha256,
        "size_bytes": rec.size_bytes,
        "format": rec.format,
        "status": rec.status.value,
        "reason": None if rec.reason is None else redact(rec.reason),
        "tags": dict(rec.tags),
        "created_at": rec.created_at,
    }


def lineage_json(rec: LineageRecord) -> dict[str, Any]:
    """One lineage row as the API shows it."""
    return {
        "id": rec.id,
        "study": rec.study,
        "trial_number": rec.trial_number,
        "teacher_id": rec.teacher_id,
        "steps_distilled": rec.steps_distilled,
        "weight": rec.weight,
        "overhead": rec.overhead,
        "created_at": rec.created_at,
        "kind": rec.kind,
    }


def node_id(study: str, trial: int) -> str:
    """A lineage graph's node id: ``TRIAL@STUDY`` (unique: a trial number has no ``@``)."""
    return f"{trial}@{study}"


class Views:
    """The read model of the service over one registry and, optionally, its Optuna studies.

    Example:
        >>> Views(registry).teacher(3)["teacher"]["study"]  # doctest: +SKIP
        'demo-recycled'
    """

    def __init__(
        self, registry: Registry, optuna: OptunaReader | None = None, blobs: str = ""
    ) -> None:
        self.registry = registry
        self.optuna = optuna
        self.blobs = blobs

    # -- registry ------------------------------------------------------------------------

    def info(self, *, writes_enabled: bool, reads_need_token: bool) -> dict[str, Any]:
        return {
            "version": VERSION,
            "registry": self.registry.url,
            "blobs": redact(self.blobs or self.registry.blobs.url),
            "writes_enabled": writes_enabled,
            "reads_need_token": reads_need_token,
            "optuna": self.optuna is not None and self.optuna.available,
        }

    def teachers(self, query: TeacherQuery) -> list[dict[str, Any]]:
        return [teacher_json(r) for r in self.registry.query(query)]

    def teacher(self, teacher_id: int) -> dict[str, Any]:
        rec = self.registry.get(teacher_id)
        return {
            "teacher": teacher_json(rec),
            "taught": [lineage_json(r) for r in self.registry.taught(teacher_id)],
            "learned_from": [
                lineage_json(r) for r in self.registry.lineage(rec.study, rec.trial_number)
            ],
        }

    def delete(self, teacher_id: int) -> dict[str, Any]:
        return teacher_json(self.registry.delete(teacher_id))

    def restore(self, teacher_id: int) -> dict[str, Any]:
        return teacher_json(self.registry.restore(teacher_id))

    def lineage(self, study: str, trial: int | None) -> dict[str, Any]:
        rows = self.registry.lineage(study, trial)
        teachers = self._teachers_by_id({r.teacher_id for r in rows})
        nodes: dict[str, dict[str, Any]] = {}
        edges: dict[tuple[str, str], dict[str, Any]] = {}

        def node(nid: str, study_name: str, number: int, role: str, missing: bool) -> None:
            found = nodes.setdefault(
                nid,
                {
                    "id": nid,
                    "study": study_name,
                    "trial_number": number,
                    "role": role,
                    "teacher_ids": [],
                    "metric_value": None,
                    "in_study": study_name == study,
                    "missing": missing,
                },
            )
            if found["role"] != role:
                found["role"] = "both"

        for r in rows:
            student = node_id(r.study, r.trial_number)
            node(student, r.study, r.trial_number, "student", False)
            t = teachers.get(r.teacher_id)
            if t is None:
                source = f"?{r.teacher_id}"
                node(source, "", -1, "teacher", True)
            else:
                source = node_id(t.study, t.trial_number)
                node(source, t.study, t.trial_number, "teacher", False)
                _add_teacher(nodes[source], t)
            edge = edges.setdefault(
                (source, student),
                {
                    "source": source,
                    "target": student,
                    "steps": 0,
                    "weight": r.weight,
                    "overhead": r.overhead,
                    "teacher_ids": [],
                    "kinds": [],
                },
            )
            if r.kind not in edge["kinds"]:
                if r.kind == "kd":  # the pair's KD weight and cost, not its init parent's
                    edge.update(weight=r.weight, overhead=r.overhead)
                edge["kinds"] = sorted([*edge["kinds"], r.kind])
            edge["steps"] += r.steps_distilled
            edge["teacher_ids"].append(r.teacher_id)
        if rows:  # the students' own metric, where they became teachers themselves
            for t in self.registry.query(TeacherQuery(study=study, status=None)):
                nid = node_id(t.study, t.trial_number)
                if nid in nodes:
                    _add_teacher(nodes[nid], t)
        return {
            "study": study,
            "trial": trial,
            "nodes": sorted(nodes.values(), key=_node_order),
            "edges": sorted(edges.values(), key=lambda e: (e["target"], e["source"])),
            "rows": [lineage_json(r) for r in rows],
        }

    def _teachers_by_id(self, ids: set[int]) -> dict[int, TeacherRecord]:
        found: dict[int, TeacherRecord] = {}
        for teacher_id in sorted(ids):
            if teacher_id in found:
                continue
            try:
                rec = self.registry.get(teacher_id)
            except TeacherNotFoundError:
                continue
            # one query per study instead of one per teacher
            for other in self.registry.query(TeacherQuery(study=rec.study, status=None)):
                found[other.id] = other
            found[rec.id] = rec
        return found

    # -- studies, Optuna and curves ------------------------------------------------------

    def studies(self) -> list[dict[str, Any]]:
        summaries = {s.study: s for s in self.registry.studies()}
        optuna_names = self.optuna.study_names() if self.optuna is not None else []
        names = sorted(set(summaries) | set(optuna_names))
        optuna_data = {n: self._optuna_study(n) for n in optuna_names}
        curves: dict[str, Curve] = {}
        out = []
        for name in names:
            entry = _summary_json(summaries.get(name) or StudySummary(study=name))
            data = optuna_data.get(name)
            entry["optuna"] = None if data is None else _optuna_summary(data)
            twin = twin_of(name)
            entry["paired_with"] = twin if twin in names else None
            entry["time_saved_s"] = entry["speedup"] = None
            if twin in names and name.endswith("recycled") and data is not None:
                plain = optuna_data.get(twin)
                if plain is not None:
                    for d in (plain, data):
                        curves.setdefault(d.name, curve(d.trials, d.direction))
                    cmp = compare(curves[plain.name], curves[name], data.direction)
                    entry["time_saved_s"], entry["speedup"] = cmp.time_saved_s, cmp.speedup
            out.append(entry)
        return out

    def _optuna_study(self, name: str) -> StudyData | None:
        return None if self.optuna is None else self.optuna.study(name)

    def trials(self, study: str) -> list[dict[str, Any]] | None:
        data = self._optuna_study(study)
        return None if data is None else [_trial_json(t) for t in data.trials]

    def curve(self, study: str) -> dict[str, Any] | None:
        data = self._optuna_study(study)
        if data is not None:
            metric = self._metric_name(study)
            return _curve_json(
                study, "optuna", metric, data.direction, curve(data.trials, data.direction)
            )
        finals = [t for t in self.registry.query(TeacherQuery(study=study, final=True)) if t.final]
        if not finals:
            return None
        direction = finals[0].direction.value
        values = sorted((t.trial_number, t.metric_value) for t in finals)
        c = registry_curve(_one_per_trial(values), direction)
        return _curve_json(study, "registry", finals[0].metric_name, direction, c)

    def compare(self, plain: str, recycled: str) -> dict[str, Any] | None:
        a, b = self._optuna_study(plain), self._optuna_study(recycled)
        if a is None or b is None:
            return None
        cmp = compare(curve(a.trials, a.direction), curve(b.trials, b.direction), b.direction)
        return {
            "plain": plain,
            "recycled": recycled,
            "direction": b.direction,
            "target": cmp.target,
            "plain_s": cmp.plain_s,
            "recycled_s": cmp.recycled_s,
            "time_saved_s": cmp.time_saved_s,
            "speedup": cmp.speedup,
            "equal_time_s": cmp.equal_time_s,
            "plain_at_equal": cmp.plain_at_equal,
            "recycled_at_equal": cmp.recycled_at_equal,
        }

    def _metric_name(self, study: str) -> str | None:
        found = self.registry.query(TeacherQuery(study=study, limit=1))
        return found[0].metric_name if found else None


def _add_teacher(node: dict[str, Any], t: TeacherRecord) -> None:
    if t.id not in node["teacher_ids"]:
        node["teacher_ids"].append(t.id)
        node["teacher_ids"].sort()
    if t.final and t.metric_value is not None:
        node["metric_value"] = t.metric_value


def _node_order(n: Mapping[str, Any]) -> tuple[bool, str, int]:
    return (not n["in_study"], n["study"], n["trial_number"])


def _one_per_trial(values: Sequence[tuple[int, float | None]]) -> list[tuple[int, float | None]]:
    seen: dict[int, float | None] = {}
    for number, value in values:
        if seen.get(number) is None:
            seen[number] = value
    return sorted(seen.items())


def _summary_json(s: StudySummary) -> dict[str, Any]:
    return {
        "study": s.study,
        "teachers": {st.value: 0 for st in Status} | dict(s.teachers),
        "ready": int(dict(s.teachers).get(Status.READY.value, 0)),
        "trials": s.trials,
        "metric_name": s.metric_name,
        "direction": None if s.direction is None else s.direction.value,
        "best_value": s.best_value,
        "students": s.students,
        "lineage_rows": s.lineage_rows,
        "steps_distilled": s.steps_distilled,
        "mean_overhead": s.mean_overhead,
        "last_registered": s.last_registered,
    }


def _optuna_summary(data: StudyData) -> dict[str, Any]:
    finished = [t for t in data.trials if t.state in ("complete", "pruned")]
    values = [t.value for t in data.trials if t.state == "complete" and t.value is not None]
    best = None
    if values:
        best = min(values) if data.direction == "minimize" else max(values)
    seconds = [s for t in finished if (s := t.seconds) is not None]
    forward = [
        float(t.recycler["teacher_forward_s"])
        for t in data.trials
        if t.recycler is not None and isinstance(t.recycler.get("teacher_forward_s"), (int, float))
    ]
    return {
        "trials": len(data.trials),
        "complete": sum(1 for t in data.trials if t.state == "complete"),
        "pruned": sum(1 for t in data.trials if t.state == "pruned"),
        "direction": data.direction,
        "best_value": best,
        "trial_seconds": round(sum(seconds), 6) if seconds else None,
        "teacher_forward_s": round(sum(forward), 6) if forward else None,
        "kd_trials": sum(1 for t in data.trials if t.recycler is not None and t.recycler.get("kd")),
    }


def _when(stamp: float | None) -> dt.datetime | None:
    return None if stamp is None else dt.datetime.fromtimestamp(stamp, dt.timezone.utc)


def _trial_json(t: TrialData) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state,
        "value": t.value,
        "params": dict(t.params),
        "datetime_start": _when(t.started),
        "datetime_complete": _when(t.completed),
        "duration_s": None if t.seconds is None else round(t.seconds, 6),
        "intermediate": [list(p) for p in t.intermediate],
        "recycler": None if t.recycler is None else dict(t.recycler),
    }


def _curve_json(
    study: str, source: str, metric: str | None, direction: str, c: Curve
) -> dict[str, Any]:
    return {
        "study": study,
        "source": source,
        "metric_name": metric,
        "direction": direction,
        "wall_clock": c.wall_clock,
        "trials": [
            {
                "number": s.number,
                "state": s.state,
                "value": s.value,
                "start_s": s.start_s,
                "end_s": s.end_s,
            }
            for s in c.trials
        ],
        "best_by_trial": [list(p) for p in c.best_by_trial],
        "best_by_time": [list(p) for p in c.best_by_time],
    }
