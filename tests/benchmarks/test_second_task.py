"""examples/benchmarks/second_task.py: a sweep with diverged trials never teaches from them.

``--quick`` runs for real (digits, an MLP, Optuna studies, a SQLite registry, recycler at its
defaults): 2 seeds of 3 trials of 20 epochs. Its draws hold lr 0.59 and 0.61 as the second
trial, which end at chance, so each seed has a diverged trial that the third could take as a
teacher. The assertions are about what happened and what the report says, never timings.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from _scripts import run_script

SCRIPT = "second_task.py"
SEEDS, TRIALS, EPOCHS, STEPS_PER_EPOCH = 2, 3, 20, 20  # --quick: 1000 samples, batch 50
DIVERGED_BELOW = 0.19  # a tenth of the way from chance (0.1) to perfect


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("second_task")
    done = run_script(SCRIPT, "--quick", "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "second_task.json").read_text())


def pool_and_used(trial: dict[str, Any]) -> set[int]:
    kd = trial["recycled"]["kd"]
    return {*kd["pool"], *kd["teachers_used"]}


@pytest.mark.slow
def test_both_sweeps_ran_the_same_trials(quick: tuple[Path, dict[str, Any]]) -> None:
    _, data = quick
    assert (data["args"]["seeds"], data["args"]["trials"]) == (SEEDS, TRIALS)
    assert [s["seed"] for s in data["seeds"]] == list(range(SEEDS))
    for s in data["seeds"]:
        assert [t["number"] for t in s["trials"]] == list(range(TRIALS))
        for t in s["trials"]:
            assert t["plain"]["params"] == t["recycled"]["params"] == {"lr": t["lr"]}
            assert t["plain"]["kd"] == {}  # no recycler at all
            for method in ("plain", "recycled"):
                assert len(t[method]["accuracy"]) == EPOCHS  # defaults: no budget cut
                assert t[method]["final"] == t[method]["accuracy"][-1]
        assert s["best"] == {m: max(t[m]["final"] for t in s["trials"]) for m in s["best"]}
        assert s["diff"] == s["best"]["recycled"] - s["best"]["plain"]


@pytest.mark.slow
def test_a_diverged_trial_never_teaches(quick: tuple[Path, dict[str, Any]]) -> None:
    _, data = quick
    checked = 0
    for s in data["seeds"]:
        trials = s["trials"]
        assert s["forced_at"] is None  # the draws diverge on their own
        for i, t in enumerate(trials):
            final = t["recycled"]["final"]
            assert t["recycled"]["diverged"] == (final < DIVERGED_BELOW)
            if not t["recycled"]["diverged"]:
                continue
            teacher = t["recycled"]["kd"]["teacher_id"]
            assert teacher is not None  # registered (finite metric): the gate must drop it
            for later in trials[i + 1 :]:
                assert teacher not in pool_and_used(later), (s["seed"], i)
                checked += 1
        assert s["diverged_teachers_kept"] == []
    assert checked >= SEEDS  # every seed: a diverged trial with a later trial to teach
    assert data["summary"]["diverged_teachers_kept"] == 0


@pytest.mark.slow
def test_recycled_trials_distil_from_the_good_ones(quick: tuple[Path, dict[str, Any]]) -> None:
    _, data = quick
    for s in data["seeds"]:
        trials = s["trials"]
        first = trials[0]
        # no teacher yet: the recycled trial is the plain one, bit for bit
        assert first["recycled"]["accuracy"] == first["plain"]["accuracy"]
        assert first["recycled"]["kd"]["steps_distilled"] == 0
        assert first["recycled"]["kd"]["pool"] == []
        for i, t in enumerate(trials[1:], start=1):
            kd = t["recycled"]["kd"]
            assert any(not e["recycled"]["diverged"] for e in trials[:i])
            assert kd["pool"], (s["seed"], i)  # a good earlier trial: it teaches
            steps = EPOCHS * STEPS_PER_EPOCH  # every step, unless the student outgrew them
            assert (
                kd["steps_distilled"] == steps
                if "retired" not in kd
                else kd["steps_distilled"] < steps
            )
            owner = {int(k): v for k, v in s["teacher_trials"].items()}
            assert all(not trials[owner[tid]]["recycled"]["diverged"] for tid in kd["pool"])


@pytest.mark.slow
def test_report_states_the_verdict(quick: tuple[Path, dict[str, Any]]) -> None:
    out, data = quick
    summary = data["summary"]
    diffs = [s["diff"] for s in data["seeds"]]
    mean = sum(diffs) / len(diffs)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    assert summary["diff"]["mean"] == pytest.approx(mean)
    assert summary["se"] == pytest.approx(std / math.sqrt(len(diffs)))
    expected = "within noise or above" if mean >= -2 * summary["se"] - 1e-12 else "BELOW plain"
    assert summary["verdict"] == expected
    text = (out / "second_task.md").read_text()
    verdict = re.findall(
        r"^- Best final accuracy, recycled - plain \(paired per seed\): .+ standard error "
        r"[\d.]+; rule: within noise or above if the mean difference is >= -2 standard "
        r"errors: \*\*(within noise or above|BELOW plain)\*\*$",
        text,
        re.M,
    )
    assert verdict == [expected]
    assert re.search(r"^- Diverged teachers kept in a pool: 0 \(", text, re.M)
    assert re.search(r"^- Wall-clock, recycled sweep / plain sweep: [\d.]+ ± [\d.]+x", text, re.M)
    assert len(re.findall(r"^\| \d \| t\d", text, re.M)) == SEEDS * TRIALS  # per-trial rows
    assert (out / "second_task.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "names"),
    [(["--trials", "1"], "--trials"), (["--seeds", "0"], "--seeds")],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], names: str) -> None:
    done = run_script(SCRIPT, *args, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], done.stderr
