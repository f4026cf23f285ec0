"""Item 1: gc honours --grace for orphans, and never deletes another registry's blobs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from _r16 import blob_path, fill, weights

from recycler.cli import main
from storage import Registry, Status
from storage.blobs import key_for


def _pair(tmp_path: Path) -> tuple[Registry, Registry, Path]:
    store = tmp_path / "shared-teachers"  # e.g. the default ./recycler-teachers of two sweeps
    a = Registry(f"sqlite:///{tmp_path / 'a.db'}", store)
    b = Registry(f"sqlite:///{tmp_path / 'b.db'}", store)
    return a, b, store


def test_gc_of_one_registry_keeps_the_blobs_of_another_on_the_same_store(
    tmp_path: Path,
) -> None:
    a, b, _ = _pair(tmp_path)
    ids = fill(a, 5, study="a")  # registered seconds ago, by another registry
    fill(b, 1, study="b")
    report = b.gc(grace_seconds=0)
    assert (report.orphans_removed, report.blobs_removed) == (0, 0)
    assert report.kept_shared == 5
    assert a.verify().ok == 5
    assert all(a.load(i).teacher.status is Status.READY for i in ids)


def test_a_blob_both_registries_hold_goes_only_when_neither_needs_it(tmp_path: Path) -> None:
    a, b, store = _pair(tmp_path)
    ta = a.register(weights(7), study="s", trial_number=0)
    tb = b.register(weights(7), study="s", trial_number=0)  # the very same bytes: one blob
    assert ta.blob_key == tb.blob_key
    a.delete(ta.id)
    assert a.gc(grace_seconds=0).kept_shared == 1  # b still uses it
    assert b.load(tb.id).teacher.id == tb.id
    b.delete(tb.id)
    assert b.gc(grace_seconds=0).blobs_removed == 1  # now nobody does
    assert not blob_path(store, ta.blob_key).exists()


def test_orphans_honour_the_grace_period_and_a_dry_run_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    keep = fill(reg, 1)[0]
    data = b"an orphan: bytes under a generated key, with no row anywhere"
    key = key_for(hashlib.sha256(data).hexdigest())
    reg.blobs.put(key, data)
    young = reg.gc()  # default grace 3600 s: the orphan is seconds old
    assert (young.orphans_removed, young.kept_young) == (0, 1)
    assert reg.blobs.exists(key)
    dry = reg.gc(grace_seconds=0, dry_run=True)
    assert dry.dry_run and dry.removed == (key,) and dry.orphans_removed == 1
    assert reg.blobs.exists(key)
    where = ["--registry", f"sqlite:///{tmp_path / 'r.db'}", "--blobs", str(tmp_path / "blobs")]
    assert main([*where, "teachers", "gc", "--grace", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would remove 0 blobs of deleted teachers, 1 orphan blobs") and key in out
    assert reg.blobs.exists(key)
    assert main([*where, "teachers", "gc", "--grace", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["orphans_removed"], report["removed"]) == (1, [key])
    assert not reg.blobs.exists(key) and reg.load(keep).teacher.id == keep


def test_blobs_registered_before_references_are_claimed_by_their_registrys_gc(
    tmp_path: Path,
) -> None:
    a, b, store = _pair(tmp_path)
    ids = fill(a, 3, study="a")
    shutil.rmtree(store / "refs")  # as a registry of round 1 left them: no references
    assert a.gc(grace_seconds=0).blobs_removed == 0  # writes the references its rows lack
    report = b.gc(grace_seconds=0)
    assert (report.orphans_removed, report.kept_shared) == (0, 3)
    assert a.verify().ok == 3 and len(ids) == 3
