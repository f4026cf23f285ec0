"""The registry conformance suite: every test runs on SQLite and on PostgreSQL (``db_url``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _storage_helpers import store_files, tiny_state
from sqlalchemy import text

from storage import (
    ORDER_FIELDS,
    BlobError,
    Direction,
    GcReport,
    LocalBlobStore,
    Registry,
    Status,
    TeacherNotFoundError,
    TeacherQuery,
    TeacherRecord,
)
from storage._rdb.engine import get_engine, writing
from storage.blobs import key_for


def _reg(registry: Registry, seed: int, **kw: object) -> TeacherRecord:
    kw.setdefault("study", "s")
    kw.setdefault("trial_number", seed)
    return registry.register(tiny_state(seed), **kw)  # type: ignore[arg-type]


def _ids(records: list[TeacherRecord]) -> list[int]:
    return [r.id for r in records]


def test_register_then_get_round_trips_every_field(registry: Registry) -> None:
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    rec = registry.register(
        tiny_state(1),
        study="lr-sweep",
        trial_number=3,
        trial_id="optuna-17",
        framework="optuna",
        params={"lr": 0.01, "layers": [64, 32], "opt": "adam"},
        metric_name="accuracy",
        metric_value=0.71,
        direction="maximize",
        step=120,
        epoch=4,
        final=False,
        trial_state="running",
        output_signature="logits[10]",
        tags={"team": "vision", "seed": "7"},
    )
    got = registry.get(rec.id)
    assert got == rec
    assert got.status is Status.READY and got.reason is None
    assert (got.study, got.trial_number, got.trial_id, got.framework) == (
        "lr-sweep",
        3,
        "optuna-17",
        "optuna",
    )
    assert dict(got.params) == {"lr": 0.01, "layers": [64, 32], "opt": "adam"}
    assert (got.metric_name, got.metric_value, got.direction) == (
        "accuracy",
        0.71,
        Direction.MAXIMIZE,
    )
    assert (got.step, got.epoch, got.final, got.trial_state) == (120, 4, False, "running")
    assert got.output_signature == "logits[10]"
    assert dict(got.tags) == {"team": "vision", "seed": "7"}
    assert got.blob_key == key_for(got.sha256)
    assert got.blob_uri.endswith(got.blob_key)
    assert got.format == "safetensors"
    assert registry.blobs.exists(got.blob_key)
    assert got.size_bytes == len(registry.blobs.get(got.blob_key))
    assert got.created_at.tzinfo is not None
    assert before <= got.created_at <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)


def test_reregister_is_idempotent(registry: Registry, db_url: str) -> None:
    first = _reg(registry, 1, metric_value=0.5)
    again = _reg(registry, 1, metric_value=0.5)
    assert again.id == first.id
    assert again == first
    other_step = _reg(registry, 1, metric_value=0.5, step=10)
    other_weights = registry.register(tiny_state(2), study="s", trial_number=1)
    assert len({first.id, other_step.id, other_weights.id}) == 3
    with writing(get_engine(db_url)) as conn:
        rows = conn.execute(text("SELECT count(*) FROM recycler_teachers")).scalar()
    assert rows == 3


def test_load_returns_exactly_equal_tensors(registry: Registry) -> None:
    state = tiny_state(5)
    state["half"] = torch.linspace(-1, 1, 7, dtype=torch.float16)
    state["flag"] = torch.tensor([True, False])
    state["view"] = state["layer0.weight"][:, 1]  # a non-contiguous view is copied
    rec = registry.register(state, study="s", trial_number=0, params={"lr": 0.1})
    ckpt = registry.load(rec.id)
    assert ckpt.teacher == rec
    assert set(ckpt.tensors) == set(state)
    for name, ref in state.items():
        got = ckpt.tensors[name]
        assert got.dtype == ref.dtype and got.shape == ref.shape, name
        assert torch.equal(got, ref), name
    assert ckpt.metadata["study"] == "s" and ckpt.metadata["params"] == {"lr": 0.1}
    assert registry.load(rec).tensors.keys() == ckpt.tensors.keys()


def _filter_fixture(registry: Registry) -> dict[str, int]:
    specs: dict[str, dict[str, object]] = {
        "a": dict(study="s1", framework="optuna", metric_value=0.1, trial_state="complete"),
        "b": dict(study="s1", framework="ray", metric_value=0.5, final=False, trial_state="pruned"),
        "c": dict(study="s1", framework="optuna", metric_value=0.9, output_signature="logits[10]"),
        "d": dict(study="s2", framework="optuna", metric_value=0.7, tags={"team": "x", "k": "v"}),
        "e": dict(study="s2", framework="manual", metric_value=None, tags={"team": "y"}),
    }
    ids = {}
    for seed, (name, kw) in enumerate(specs.items()):
        ids[name] = registry.register(tiny_state(seed), trial_number=seed, **kw).id  # type: ignore[arg-type]
    return ids


def test_query_filters(registry: Registry) -> None:
    ids = _filter_fixture(registry)
    a, b, c, d, e = (ids[k] for k in "abcde")

    def q(**kw: object) -> list[int]:
        return _ids(registry.query(**kw))

    assert q() == [a, b, c, d, e]
    assert q(study="s1") == [a, b, c]
    assert q(study="nope") == []
    assert q(framework="optuna") == [a, c, d]
    assert q(study="s1", framework="optuna") == [a, c]
    assert q(trial_states=["pruned"]) == [b]
    assert q(trial_states=["complete", "pruned"]) == [a, b, c, d, e]
    assert q(trial_states=[]) == []
    assert q(final=False) == [b]
    assert q(final=True) == [a, c, d, e]
    assert q(min_metric=0.5) == [b, c, d]
    assert q(max_metric=0.5) == [a, b]
    assert q(min_metric=0.2, max_metric=0.8) == [b, d]
    assert q(output_signature="logits[10]") == [c]
    assert q(output_signature="") == [a, b, d, e]
    assert q(tags={"team": "x"}) == [d]
    assert q(tags={"team": "x", "k": "v"}) == [d]
    assert q(tags={"team": "x", "k": "w"}) == []
    assert q(tags={"team": "z"}) == []
    assert q(exclude_trials=[0, 2]) == [b, d, e]  # trial numbers are the seeds 0..4
    assert q(trial_below=2) == [a, b]
    assert q(trial_below=0) == []
    assert q(limit=2) == [a, b]
    assert registry.query(TeacherQuery(study="s2")) == registry.query(study="s2")
    registry.quarantine(c, "bad")
    assert q(study="s1") == [a, b]
    assert q(status=Status.QUARANTINED) == [c]
    assert q(status="QUARANTINED", study="s1") == [c]
    assert q(status=None) == [a, b, c, d, e]


def test_top_k_honours_each_direction_and_skips_missing_metrics(registry: Registry) -> None:
    values = [0.3, None, 0.9, 0.1, float("nan"), 0.7, 0.5]
    maxi = [_reg(registry, i, study="max", metric_value=v).id for i, v in enumerate(values)]
    mini = [
        _reg(registry, i, study="min", metric_value=v, direction=Direction.MINIMIZE).id
        for i, v in enumerate(values)
    ]
    assert _ids(registry.query(study="max", top_k=3)) == [maxi[2], maxi[5], maxi[6]]
    assert _ids(registry.query(study="min", top_k=3)) == [mini[3], mini[0], mini[6]]
    # k larger than the candidates: every row with a metric, best first, none without one
    assert _ids(registry.query(study="max", top_k=50)) == [maxi[i] for i in (2, 5, 6, 0, 3)]
    assert _ids(registry.query(study="min", top_k=50)) == [mini[i] for i in (3, 0, 6, 5, 2)]
    top = registry.query(study="max", top_k=1, min_metric=0.2, max_metric=0.8)
    assert _ids(top) == [maxi[5]]
    # ties keep registration order
    t1 = _reg(registry, 100, study="tie", metric_value=1.0).id
    t2 = _reg(registry, 101, study="tie", metric_value=1.0).id
    assert _ids(registry.query(study="tie", top_k=2)) == [t1, t2]


def test_order_by_allow_list(registry: Registry) -> None:
    ids = [_reg(registry, i, metric_value=v).id for i, v in enumerate([0.2, 0.9, 0.4])]
    assert _ids(registry.query(order_by="metric")) == [ids[0], ids[2], ids[1]]
    assert _ids(registry.query(order_by="metric", descending=True)) == [ids[1], ids[2], ids[0]]
    assert _ids(registry.query(order_by="trial_number", descending=True, limit=1)) == [ids[2]]
    for bad in ("sha256", "metric_value; DROP TABLE recycler_teachers", "status", ""):
        with pytest.raises(ValueError, match="choose one of") as info:
            registry.query(order_by=bad)
        for name in ORDER_FIELDS:
            assert name in str(info.value)
    for bad_k in (0, -1, 1.5):
        with pytest.raises(ValueError, match="top_k must be a positive int"):
            TeacherQuery(top_k=bad_k)  # type: ignore[arg-type]
    assert len(registry.query(status=None)) == 3  # the table is still there


def test_quarantine(registry: Registry) -> None:
    rec = _reg(registry, 1, metric_value=0.9)
    out = registry.quarantine(rec.id, "looked wrong")
    assert out.status is Status.QUARANTINED and out.reason == "looked wrong"
    assert registry.get(rec.id) == out
    assert registry.query() == []
    assert registry.query(top_k=5) == []
    with pytest.raises(BlobError, match="QUARANTINED, not READY"):
        registry.load(rec.id)
    assert registry.blobs.exists(rec.blob_key)  # kept for inspection
    assert registry.gc(grace_seconds=0).blobs_removed == 0
    assert registry.blobs.exists(rec.blob_key)


def test_delete_then_gc_removes_the_blob(registry: Registry, tmp_path: Path) -> None:
    keep = _reg(registry, 1)
    gone = _reg(registry, 2)
    assert registry.delete(gone.id).status is Status.DELETED
    assert registry.query() == [keep]
    report = registry.gc()
    assert (report.blobs_removed, report.orphans_removed, report.kept_leased) == (1, 0, 0)
    assert not registry.blobs.exists(gone.blob_key)
    assert registry.blobs.exists(keep.blob_key)
    assert store_files(tmp_path / "blobs") == {keep.blob_key}
    assert registry.get(gone.id).status is Status.DELETED
    assert registry.gc().blobs_removed == 0
    assert registry.load(keep.id).teacher == keep


def test_reregister_after_delete_revives_the_same_teacher(registry: Registry) -> None:
    rec = _reg(registry, 1, metric_value=0.3)
    registry.delete(rec.id)
    assert registry.gc(grace_seconds=0).blobs_removed == 1
    again = _reg(registry, 1, metric_value=0.3)
    assert again.id == rec.id and again.status is Status.READY and again.reason is None
    assert registry.blobs.exists(rec.blob_key)
    assert registry.gc(grace_seconds=0).blobs_removed == 0
    assert torch.equal(registry.load(rec.id).tensors["bias"], tiny_state(1)["bias"])


def test_gc_keeps_a_blob_while_a_lease_is_held(registry: Registry) -> None:
    rec = _reg(registry, 1)
    registry.delete(rec.id)
    with registry.lease(rec.id):
        report = registry.gc(grace_seconds=0)
        assert (report.kept_leased, report.blobs_removed) == (1, 0)
        assert registry.blobs.exists(rec.blob_key)
        with registry.lease(rec.id, seconds=1):  # a shorter nested lease changes nothing
            pass
        assert registry.gc(grace_seconds=0).kept_leased == 1
    report = registry.gc(grace_seconds=0)
    assert (report.kept_leased, report.blobs_removed) == (0, 1)
    assert not registry.blobs.exists(rec.blob_key)


def test_expired_lease_does_not_keep_a_blob(registry: Registry) -> None:
    rec = _reg(registry, 1)
    registry.delete(rec.id)
    with registry.lease(rec.id, seconds=-1):
        assert registry.gc(grace_seconds=0).blobs_removed == 1


def test_gc_removes_stale_pending_rows_and_orphans(registry: Registry, db_url: str) -> None:
    rec = _reg(registry, 1)
    pend = _reg(registry, 2)
    with writing(get_engine(db_url)) as conn:
        conn.execute(
            text("UPDATE recycler_teachers SET status = 'PENDING' WHERE id = :i"), {"i": pend.id}
        )
    data = b"orphan bytes"  # any bytes under a generated key, with no row
    okey = key_for(hashlib.sha256(data).hexdigest())
    registry.blobs.put(okey, data)
    young = registry.gc()  # default grace: a fresh PENDING row (or orphan) may be registering
    assert (young.pending_removed, young.orphans_removed, young.blobs_removed) == (0, 0, 0)
    assert young.kept_young == 1  # the orphan honours the grace period too (issue 16, item 1)
    assert registry.get(pend.id).status is Status.PENDING
    assert registry.blobs.exists(pend.blob_key)
    assert registry.blobs.exists(okey)
    old = registry.gc(grace_seconds=0)
    assert (old.pending_removed, old.orphans_removed) == (1, 2)  # the planted one, pend's blob
    assert not registry.blobs.exists(okey)
    with pytest.raises(TeacherNotFoundError):
        registry.get(pend.id)
    assert not registry.blobs.exists(pend.blob_key)
    assert registry.blobs.exists(rec.blob_key)


def test_lineage_add_upserts_and_queries(registry: Registry) -> None:
    t1, t2, t3 = (_reg(registry, i).id for i in range(3))
    registry.add_lineage("student's", 4, t2, steps_distilled=100, weight=0.5, overhead=0.1)
    registry.add_lineage("student's", 4, t1, steps_distilled=50)
    registry.add_lineage("student's", 2, t3, steps_distilled=10, weight=2.0)
    registry.add_lineage("other", 4, t1, steps_distilled=1)
    registry.add_lineage("student's", 4, t2, steps_distilled=300, weight=0.25)  # replaces
    rows = registry.lineage("student's")
    assert [(r.trial_number, r.teacher_id) for r in rows] == [(2, t3), (4, t1), (4, t2)]
    by_teacher = {r.teacher_id: r for r in registry.lineage("student's", 4)}
    assert set(by_teacher) == {t1, t2}
    assert (by_teacher[t2].steps_distilled, by_teacher[t2].weight) == (300, 0.25)
    assert by_teacher[t2].overhead is None
    assert (by_teacher[t1].steps_distilled, by_teacher[t1].weight) == (50, 1.0)
    assert all(r.study == "student's" and r.created_at.tzinfo for r in rows)
    assert registry.lineage("student's", 9) == []
    assert [r.teacher_id for r in registry.lineage("other")] == [t1]


def test_count_finished_trials(registry: Registry) -> None:
    assert registry.count_finished_trials("s") == 0
    _reg(registry, 0, trial_number=0)
    _reg(registry, 1, trial_number=0, step=5)  # same trial twice: counted once
    _reg(registry, 2, trial_number=1)
    _reg(registry, 3, trial_number=2, final=False)  # intermediate: not finished
    quarantined = _reg(registry, 4, trial_number=3)
    registry.quarantine(quarantined.id, "x")
    _reg(registry, 5, trial_number=4, study="other")
    assert registry.count_finished_trials("s") == 2
    assert registry.count_finished_trials("other") == 1


def test_stamp_changes_exactly_when_the_ready_teachers_do(registry: Registry) -> None:
    assert registry.stamp(["s"]) == (0, 0, 0)
    a = _reg(registry, 0, final=False)  # an intermediate checkpoint
    first = registry.stamp(["s"])
    assert first == (1, a.id, 0)
    _reg(registry, 0, final=False)  # idempotent re-registration: nothing changed
    _reg(registry, 9, study="other")  # another study
    assert registry.stamp(["s"]) == first
    _reg(registry, 0, final=True)  # the same checkpoint turned out to be the last one
    assert registry.stamp(["s"]) == (1, a.id, 1)
    b = _reg(registry, 1)
    assert registry.stamp(["s"]) == (2, a.id + b.id, 2)
    registry.quarantine(a.id, "bad")
    assert registry.stamp(["s"]) == (1, b.id, 1)
    assert registry.stamp(["s", "other"])[0] == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_metric_is_stored_as_none(registry: Registry, bad: float) -> None:
    rec = _reg(registry, 1, metric_value=bad)
    assert rec.metric_value is None and registry.get(rec.id).metric_value is None
    good = _reg(registry, 2, metric_value=-math.pi)
    assert _ids(registry.query(top_k=5)) == [good.id]
    assert registry.query(min_metric=-1e308) == [good]


def test_verify_reports_and_quarantines_missing_blobs(registry: Registry, tmp_path: Path) -> None:
    recs = [_reg(registry, i) for i in range(4)]
    report = registry.verify()
    assert (report.checked, report.ok, report.quarantined) == (4, 4, ())
    (tmp_path / "blobs" / recs[1].blob_key).unlink()
    report = registry.verify()
    assert (report.checked, report.ok, report.quarantined) == (4, 3, (recs[1].id,))
    bad = registry.get(recs[1].id)
    assert bad.status is Status.QUARANTINED and "missing" in (bad.reason or "")
    assert registry.verify().checked == 3


def test_unknown_ids_raise_teacher_not_found(registry: Registry) -> None:
    _reg(registry, 1)
    for call in (
        lambda: registry.get(999),
        lambda: registry.load(999),
        lambda: registry.quarantine(999, "x"),
        lambda: registry.delete(999),
    ):
        with pytest.raises(TeacherNotFoundError, match="no teacher with id 999"):
            call()
    assert issubclass(TeacherNotFoundError, LookupError)


def test_register_refuses_bad_input(registry: Registry) -> None:
    with pytest.raises(ValueError, match="study"):
        registry.register(tiny_state(0), study="", trial_number=0)
    with pytest.raises(ValueError, match="study"):
        registry.register(tiny_state(0), study="a\x00b", trial_number=0)
    with pytest.raises(ValueError, match="trial_number"):
        registry.register(tiny_state(0), study="s", trial_number=-1)
    with pytest.raises(ValueError, match="params"):
        registry.register(tiny_state(0), study="s", trial_number=0, params={"x": float("nan")})
    with pytest.raises(ValueError, match="tags"):
        registry.register(tiny_state(0), study="s", trial_number=0, tags={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="not a tensor"):
        registry.register({"w": [1, 2]}, study="s", trial_number=0)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        registry.register(tiny_state(0), study="s", trial_number=0, direction="sideways")
    assert registry.query(status=None) == []


def test_load_of_a_stale_record_rechecks_the_status(registry: Registry) -> None:
    rec = _reg(registry, 1)
    registry.delete(rec.id)
    with pytest.raises(BlobError, match="DELETED, not READY"):
        registry.load(rec)  # the caller's record still says READY
    registry.gc(grace_seconds=0)
    with pytest.raises(BlobError, match="DELETED, not READY"):
        registry.load(rec)
    assert registry.get(rec.id).status is Status.DELETED  # not turned into QUARANTINED


class _GcDuringPut:
    """A blob store whose first ``put`` lets a gc (grace 0) run first, as a racing gc would."""

    def __init__(self, inner: LocalBlobStore) -> None:
        self.inner = inner
        self.registry: Registry | None = None
        self.reports: list[GcReport] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes) -> None:
        if self.registry is not None and not self.reports:
            self.reports.append(self.registry.gc(grace_seconds=0))
        self.inner.put(key, data)


def test_registration_survives_a_gc_that_drops_its_pending_row(db_url: str, tmp_path: Path) -> None:
    store = _GcDuringPut(LocalBlobStore(tmp_path / "blobs"))
    reg = Registry(db_url, store)  # type: ignore[arg-type]
    store.registry = reg
    rec = reg.register(tiny_state(1), study="s", trial_number=0, metric_value=0.5)
    assert store.reports[0].pending_removed == 1  # the race really happened
    assert rec.status is Status.READY
    assert [r.id for r in reg.query(status=None)] == [rec.id]
    assert torch.equal(reg.load(rec.id).tensors["bias"], tiny_state(1)["bias"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("framework", "f" * 65),
        ("trial_state", "s" * 33),
        ("metric_name", "m" * 256),
        ("trial_id", "t" * 513),
        ("output_signature", "o" * 1025),
        ("study", "s" * 513),
    ],
    ids=lambda v: v if len(v) < 20 else f"{len(v)}-chars",
)
def test_overlong_text_is_refused_on_every_backend(
    registry: Registry, field: str, value: str
) -> None:
    kw: dict[str, Any] = {"study": "s", "trial_number": 0, field: value}
    with pytest.raises(ValueError, match=field):
        registry.register(tiny_state(0), **kw)
    assert registry.query(status=None) == []
    kw[field] = value[:-1]  # the longest allowed value round-trips
    rec = registry.register(tiny_state(0), **kw)
    assert getattr(registry.get(rec.id), field) == value[:-1]


def test_reregistering_an_intermediate_checkpoint_as_final_marks_it_final(
    registry: Registry,
) -> None:
    first = registry.register(tiny_state(0), study="s", trial_number=0, step=5, final=False)
    again = registry.register(tiny_state(0), study="s", trial_number=0, step=5, final=True)
    assert again.id == first.id and not first.final and again.final
    assert registry.count_finished_trials("s") == 1


def test_an_unwritable_blob_store_is_a_blob_error_and_close_reopens(
    tmp_path: Path, db_url: str
) -> None:
    (tmp_path / "file").write_text("not a folder")
    reg = Registry(db_url, tmp_path / "file")
    with pytest.raises(BlobError, match="cannot write blob"):
        reg.register(tiny_state(0), study="s", trial_number=0)
    assert reg.query(status=None) == []  # the PENDING row went with the failed write
    reg.close()
    assert reg.query(status=Status.READY) == []  # a closed registry reconnects on use
