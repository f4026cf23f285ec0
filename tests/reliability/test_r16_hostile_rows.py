"""Item 4: one foreign or hostile READY row is skipped by readers with a warning and
reported by ``verify``; it never crashes a trial, the CLI, or ``verify`` itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _r16 import blob_path, fill, insert_row

from recycler.cli import main
from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from storage import Registry, Status, StorageError

StorageWarning = RuntimeWarning  # storage.StorageWarning subclasses it

HOSTILE: dict[str, dict[str, Any]] = {
    "direction max": {"direction": "max"},
    "params a list": {"params": json.dumps([1, 2, 3])},
    "tags not text": {"tags": json.dumps({"team": 7})},
    "tags a string": {"tags": json.dumps("x")},
    "nested json": {"params": "[" * 50_000 + "]" * 50_000},
    "bad created_at": {"created_at": "yesterday, around noon"},
    "metric as text": {"metric_value": "high", "score": "high"},
    "sha256 not hex": {"sha256": "../../etc/passwd"},
    "step as text": {"step": "ten"},
}


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Registry, list[int], list[int]]:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    reg = Registry(url, tmp_path / "blobs")
    good = fill(reg, 2)
    bad = [insert_row(url, trial_number=900 + i, **row) for i, row in enumerate(HOSTILE.values())]
    return reg, good, bad


def test_readers_skip_each_hostile_row_with_one_warning(
    hostile: tuple[Registry, list[int], list[int]],
) -> None:
    reg, good, bad = hostile
    with pytest.warns(StorageWarning) as caught:
        found = reg.query(study="s")
        again = reg.query(study="s", top_k=5)
    assert [r.id for r in found] == good
    assert [r.id for r in again] == sorted(good, reverse=True)  # the metric ranks them
    assert len(caught) == len(bad)  # one warning per row, not per read
    for tid in bad:
        with pytest.raises(StorageError, match="malformed row"):
            reg.get(tid)


def test_a_trial_trains_past_hostile_rows(
    hostile: tuple[Registry, list[int], list[int]], tmp_path: Path
) -> None:
    reg, _, _ = hostile
    net = torch.nn.Linear(3, 2)
    for i in (0, 1):  # teachers that fit the student: the good rows' weights do not
        reg.register(
            torch.nn.Linear(3, 2).state_dict(), study="t", trial_number=i, metric_value=0.5 + i
        )
    for i, row in enumerate(HOSTILE.values()):
        insert_row(reg._url, study="t", trial_number=950 + i, **row)
    cfg = RecycleConfig(registry=reg._url, blobs=str(tmp_path / "blobs"), study="t")
    kd = Distiller(cfg, study="t", trial_number=5, registry=reg, model=net)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.warns(StorageWarning):
        for _ in range(3):
            kd.loss(net(x), y, x).backward()
    assert kd.stats()["steps_distilled"] == 3
    assert len(kd.teachers) == 2


def test_the_cli_lists_and_verify_reports_without_aborting(
    hostile: tuple[Registry, list[int], list[int]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reg, good, bad = hostile
    corrupt = blob_path(tmp_path / "blobs", reg.get(good[1]).blob_key)  # after the bad sha
    corrupt.write_bytes(corrupt.read_bytes()[:-3] + b"xyz")
    where = ["--registry", reg._url, "--blobs", str(tmp_path / "blobs")]
    with pytest.warns(StorageWarning):
        assert main([*where, "teachers", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("\n") == 3  # the header and the two good rows
    assert main([*where, "teachers", "show", str(bad[0])]) == 2
    assert "malformed row" in capsys.readouterr().err
    assert main([*where, "teachers", "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["quarantined"] == [good[1]]  # verify went on past every bad row
    assert report["malformed"] == bad
    assert "direction is 'max'" in report["reasons"][str(bad[0])]
    assert reg.get(good[1]).status is Status.QUARANTINED
    assert reg.get(good[0]).status is Status.READY
