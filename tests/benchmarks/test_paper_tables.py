"""examples/benchmarks/paper_tables.py: its outputs' structure and sanity, and its bad arguments."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from _scripts import run_script

from recycler.schedule import Clock, Schedule

SCRIPT = "paper_tables.py"
QUICK_EPOCHS, QUICK_SEEDS, QUICK_TRAIN, BATCH = 6, 2, 500, 64
TEACHERS = [f"{group}{i}" for group in "AB" for i in range(5)]
STUDENTS = [
    "baseline",
    "baseline 3ep",
    "wide (64 ch)",
    "fine-tune best B",
    *(f"KD A best {k}" for k in range(1, 6)),
    "KD B all 5",
    *(f"KD B sample {k}" for k in (1, 2, 3)),
    *(f"KD B {key}" for key in ("first", "middle", "last", "first+last", "every", "every2")),
    "KD B first+last sample 1",
    "KD B every sample 1",
    "KD best",
    "KD worst",
    "KD both sample 1",
    "KD both",
    "KD both only correct",
    "KD best kl",
    "KD best mse 3ep",
    "KD best kl 3ep",
]
HEADINGS = [
    "## 1. Liu et al. Tables 1-2",
    "## 2. Liu et al. Tables 3-4",
    "## 3. Liu et al. Tables 5-6",
    "## 4. Liu et al. Table 7",
    "## 5. Liu et al. Table 8",
    "## 6. Liu et al. App. A / Blakeney et al. §5.3",
    "## 7. Liu et al. App. B",
    "## 8. Blakeney et al. §5.1",
]


def scheduled_epochs(schedule: str, epochs: int) -> int:
    """How many of ``epochs`` epochs the schedule string distils, counted epoch by epoch."""
    parsed = Schedule.parse(schedule)
    return sum(parsed.active(Clock(epoch=e)) for e in range(epochs))


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("paper_tables")
    done = run_script(SCRIPT, "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "paper_tables.json").read_text())


@pytest.mark.slow
def test_markdown_has_every_table(quick: tuple[Path, dict[str, Any]]) -> None:
    markdown = (quick[0] / "paper_tables.md").read_text()
    for heading in HEADINGS:
        assert heading in markdown, heading
    assert markdown.count("**Paper's finding:**") == len(HEADINGS)
    assert markdown.count("**Here:**") == len(HEADINGS)


@pytest.mark.slow
def test_json_has_every_run_of_every_seed(quick: tuple[Path, dict[str, Any]]) -> None:
    data = quick[1]
    assert (data["epochs"], data["seeds"]) == (QUICK_EPOCHS, QUICK_SEEDS)
    labels: dict[int, list[str]] = defaultdict(list)
    for run in data["runs"]:
        labels[run["replicate"]].append(run["label"])
        epochs = run["config"].get("epochs") or QUICK_EPOCHS
        assert len(run["accuracy"]) == len(run["seconds"]) == epochs, run["label"]
        assert all(0.0 <= a <= 1.0 for a in run["accuracy"]), run["label"]
    assert sorted(labels) == list(range(QUICK_SEEDS))
    for seen in labels.values():
        assert sorted(seen) == sorted(TEACHERS + STUDENTS)
    assert len(data["tables"]) == len(HEADINGS)


@pytest.mark.slow
def test_teachers_learn(quick: tuple[Path, dict[str, Any]]) -> None:
    finals = [r["accuracy"][-1] for r in quick[1]["runs"] if r["config"]["role"] == "teacher"]
    assert len(finals) == len(TEACHERS) * QUICK_SEEDS
    assert statistics.fmean(finals) > 0.1  # better than chance on 10 classes


@pytest.mark.slow
def test_kd_runs_distil_exactly_their_schedule(quick: tuple[Path, dict[str, Any]]) -> None:
    data = quick[1]
    per_epoch = data["steps_per_epoch"]
    assert per_epoch == math.ceil(QUICK_TRAIN / BATCH)
    for run in data["runs"]:
        kd = run["config"].get("kd")
        if kd is None:
            assert run["kd"] == {}, run["label"]
            continue
        epochs, stats = len(run["accuracy"]), run["kd"]
        assert stats["steps"] == epochs * per_epoch, run["label"]
        assert stats["steps_distilled"] > 0, run["label"]
        expected = scheduled_epochs(kd["schedule"], epochs) * per_epoch
        assert stats["steps_distilled"] == expected, (run["label"], kd["schedule"])


@pytest.mark.slow
def test_plot_is_a_png(quick: tuple[Path, dict[str, Any]]) -> None:
    assert (quick[0] / "paper_tables.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "option"),
    [(["--seeds", "0"], "--seeds"), (["--task", "cifar100"], "--data")],
)
def test_bad_argument_is_one_line(args: list[str], option: str, tmp_path: Path) -> None:
    done = run_script(SCRIPT, *args, "--out", str(tmp_path), timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and option in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())
