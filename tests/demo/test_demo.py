"""`recycler demo` at reduced size: the output's structure and sanity, never its timings."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

from recycler.cli import main
from storage import Registry
from storage._rdb.engine import dispose_all


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == threads  # the demo gives the thread count back
    dispose_all()


@pytest.mark.slow
def test_quick_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out

    assert "CPU, torch threads: 1" in text
    assert len(re.findall(r"^  (plain|recycled) +trial \d/3 ", text, re.M)) == 6  # progress
    rows = re.findall(r"^(plain|recycled) +(\d) +([\d.]+) +(-|\d) +(fresh|#\d+) +(\d+) +(-|\d+) "
                      r"+([\d.]+) +([\d.]+) s", text, re.M)  # fmt: skip
    assert [(r[0], r[1]) for r in rows] == [
        (k, str(i)) for k in ("plain", "recycled") for i in range(3)
    ]
    plain, recycled = rows[:3], rows[3:]
    assert [r[2] for r in plain] == [r[2] for r in recycled]  # the same learning rates, in order
    assert [r[3] for r in recycled] == ["0", "1", "2"]  # teachers in the pool: the earlier trials
    assert recycled[0][7] == plain[0][7]  # trial 0 has no teacher: the same run as plain's
    # plain trials and recycled trial 0 start fresh and train the whole plan (20 epochs); the
    # others start from an earlier teacher (init) and train a quarter to a half of it (budget)
    assert [(r[4], r[5]) for r in plain] == [("fresh", "20")] * 3
    assert (recycled[0][4], recycled[0][5]) == ("fresh", "20")
    assert all(r[4].startswith("#") for r in recycled[1:])
    assert recycled[1][5] == "10"  # budget auto without evidence yet: its max, 0.5
    assert all(5 <= int(r[5]) <= 10 for r in recycled[1:])
    target = max(float(r[7]) for r in plain)
    assert f"target: the plain sweep's best final accuracy, {target:.3f}" in text
    for line in ("plain sweep reached it", "recycled sweep reached it",
                 "best accuracy at equal wall-clock", "best final accuracy"):  # fmt: skip
        assert line in text
    assert re.search(r"^sweep-level speed-up: (the recycled sweep reached the target in "
                     r"[\d.]+x the plain sweep's wall-clock \([\d.]+x (sooner|later)\)|none, .*)$",
                     text, re.M)  # fmt: skip
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the registry it filled: one READY teacher per recycled trial, lineage to earlier ones
    registry = Registry(f"sqlite:///{out / 'demo.db'}", out / "teachers")
    teachers = registry.query(study="demo-recycled")
    assert [t.trial_number for t in teachers] == [0, 1, 2]
    assert [f"{t.metric_value:.3f}" for t in teachers] == [r[7] for r in recycled]
    assert registry.query(study="demo-plain") == []
    for row in registry.lineage("demo-recycled"):
        assert registry.get(row.teacher_id).trial_number < row.trial_number
    study = optuna.load_study(study_name="demo-recycled", storage=f"sqlite:///{out / 'demo.db'}")
    assert [t.user_attrs["recycler"]["registered"] for t in study.trials] == [True] * 3

    # the commands it prints work
    commands = re.findall(r"^  (recycler .*)$", text, re.M)
    assert len(commands) == 3
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    listing = capsys.readouterr().out
    assert "demo-recycled" in listing and "checked 3 READY teachers: 3 ok" in listing


@pytest.mark.slow
def test_rerun_starts_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--epochs", "2", "--trials", "2", "--out", str(out)]
    assert main(args) == 0
    assert "removed the previous demo run" not in capsys.readouterr().out
    assert main(args) == 0
    assert "removed the previous demo run" in capsys.readouterr().out
    registry = Registry(f"sqlite:///{out / 'demo.db'}", out / "teachers")
    assert [t.trial_number for t in registry.query(study="demo-recycled")] == [0, 1]
