"""examples/benchmarks/sweep_speedup.py: its outputs' structure and sanity, and bad arguments.

``--quick`` runs for real (MNIST-1D, Optuna studies, a SQLite registry, recycler's budget,
init and teacher-logit cache, Ray Tune PBT on loopback); the assertions are about what it
wrote, never about timings or which method wins.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from _scripts import run_script

SCRIPT = "sweep_speedup.py"
SEEDS, TRIALS, EPOCHS, STEPS_PER_EPOCH = 2, 3, 6, 5  # --quick: 500 samples, batch 100
SEQUENTIAL = [
    "plain", "kd", "kd-half", "kd-auto", "warm-start", "sp-kd-half", "sp-kd-auto",
]  # fmt: skip
METHODS = [*SEQUENTIAL, "pbt"]
HALF = math.ceil(EPOCHS * 0.5)  # budget.scale 0.5, rounded up
AUTO = {
    "kd-auto": (math.ceil(EPOCHS * 0.25), EPOCHS),
    "sp-kd-auto": (math.ceil(EPOCHS * 0.25), HALF),
}
KD = ["kd", "kd-half", "kd-auto", "sp-kd-half", "sp-kd-auto"]
INIT = ["warm-start", "sp-kd-half", "sp-kd-auto"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("sweep_speedup")
    done = run_script(SCRIPT, "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "sweep_speedup.json").read_text())


@pytest.mark.slow
@pytest.mark.ray
def test_every_method_ran_every_trial_of_both_sweeps(quick: tuple[Path, dict[str, Any]]) -> None:
    _, data = quick
    assert sorted(data["results"]) == ["lr", "width-lr-wd"]
    for sweep, results in data["results"].items():
        assert [r["seed"] for r in results] == list(range(SEEDS))
        for r in results:
            # --quick runs PBT on seed 0 only (Ray's start-up is most of its time)
            assert sorted(r["traces"]) == sorted(METHODS if r["seed"] == 0 else SEQUENTIAL)
            assert len(r["params"]) == TRIALS
            for method in SEQUENTIAL:
                curves = r["curves"][method]
                # the same hyperparameters, in the same order, for every method
                assert [c["params"] for c in curves] == r["params"], (sweep, method)
                assert all(0.0 <= a <= 1.0 for c in curves for a in c["accuracy"])
                assert all(len(c["at"]) == len(c["accuracy"]) for c in curves)
                assert len(r["traces"][method]) == sum(len(c["accuracy"]) for c in curves)
                assert len(r["costs"][method]) == TRIALS


@pytest.mark.slow
@pytest.mark.ray
def test_budgets_follow_the_library(quick: tuple[Path, dict[str, Any]]) -> None:
    """Trial lengths are the Distiller's effective plans (kd.epochs), and say so."""
    _, data = quick
    for results in data["results"].values():
        for r in results:
            for method in SEQUENTIAL:
                curves = r["curves"][method]
                assert len(curves[0]["accuracy"]) == EPOCHS  # no pool yet: the whole plan
                for c in curves[1:]:
                    epochs = len(c["accuracy"])
                    fresh = method.startswith("sp-") and c["kd"].get("init_parent") is None
                    if fresh:  # init found no parent (another width): budget.fresh, 1.0
                        assert epochs == EPOCHS, method
                        assert c["kd"]["budget"]["why"] == "init found no parent: budget.fresh 1.0"
                    elif method.endswith("-half"):
                        assert epochs == HALF, method
                        assert c["kd"]["budget"]["fraction"] == 0.5
                    elif method in AUTO:
                        low, high = AUTO[method]
                        assert low <= epochs <= high, (method, epochs)
                        assert c["kd"]["budget"]["why"].startswith("auto"), c["kd"]["budget"]
                    else:
                        assert epochs == EPOCHS, method
                    if method != "plain":
                        assert c["kd"]["planned_epochs"] == EPOCHS
                        assert c["kd"]["effective_epochs"] == epochs


@pytest.mark.slow
@pytest.mark.ray
def test_recycled_trials_distil_and_start_as_configured(
    quick: tuple[Path, dict[str, Any]],
) -> None:
    _, data = quick
    distilled = dict.fromkeys(KD, 0)
    for sweep, results in data["results"].items():
        for r in results:
            plain = r["curves"]["plain"]
            assert all(not c["kd"] for c in plain)
            for method in SEQUENTIAL[1:]:
                curves = r["curves"][method]
                # the first trial has no teacher: it is the plain trial, bit for bit
                assert curves[0]["accuracy"] == plain[0]["accuracy"], method
                assert curves[0]["kd"]["steps_distilled"] == 0
                for i, c in enumerate(curves[1:], start=1):
                    steps = len(c["accuracy"]) * STEPS_PER_EPOCH
                    if method in KD:
                        # every step, unless the quality gate left no earlier trial to teach
                        expected = steps if c["kd"]["pool"] else 0
                        assert c["kd"]["steps_distilled"] == expected, (method, i)
                        assert len(c["kd"]["teachers_used"]) <= min(i, 5)
                        assert c["kd"]["cache"]["hits"] > 0 or not expected  # exact: it is on
                        distilled[method] += expected > 0
                    else:
                        assert c["kd"]["steps_distilled"] == 0, method  # warm-start: no KD
                    if method in INIT and sweep == "lr":  # one width: every teacher fits
                        assert c["kd"]["init_parent"] is not None, (method, i)
                    elif method not in INIT:
                        assert c["kd"].get("init_parent") is None
    assert all(distilled.values()), distilled


@pytest.mark.slow
@pytest.mark.ray
def test_traces_and_report(quick: tuple[Path, dict[str, Any]]) -> None:
    out, data = quick
    for results in data["results"].values():
        for r in results:
            for method, trace in r["traces"].items():
                costs = [s for s, _ in trace]
                assert costs == sorted(costs) and costs[0] > 0, method
                assert all(0.0 <= a <= 1.0 for _, a in trace)
            if r["seed"] == 0:
                assert len(r["traces"]["pbt"]) >= EPOCHS  # members may inherit clones' epochs
            assert r["ratios"]["plain"] == 1.0
            assert r["target"] == max(c["accuracy"][-1] for c in r["curves"]["plain"])
    text = (out / "sweep_speedup.md").read_text()
    for heading in ("## Sweep `lr`", "## Sweep `width-lr-wd`", "## Targets (issue 13)"):
        assert text.count(heading) == 1, heading
    assert text.count("Best accuracy at equal wall-clock") == 2
    for method in METHODS:  # per sweep: the mean ratio and the equal-cost tables (+ per trial)
        rows = re.findall(rf"^\| {method} \|", text, re.M)
        assert len(rows) == (4 if method == "pbt" else 6), method
    # the per-seed tables: one row per seed, a column per method
    for seed in range(SEEDS):
        rows = re.findall(rf"^\| {seed} \| [\d.]+ \| [\d.]+ s \(trial \d\) \| (.*) \|$", text, re.M)
        assert len(rows) == 2  # both sweeps
        for row in rows:
            cells = row.split(" | ")
            assert len(cells) == len(METHODS) - 1
            assert all(re.fullmatch(r"[\d.]+x|never", c) for c in cells[:-1]), cells
            assert re.fullmatch(r"[\d.]+x|never" if seed == 0 else "—", cells[-1]), cells  # pbt
    # the targets block: the best mode named, every target met or MISSED with its numbers
    block = text.split("## Targets (issue 13)")[1].split("\n## ")[0]
    assert re.search(r"Best recycled mode: \*\*(" + "|".join(KD) + r")\*\*", block)
    verdicts = re.findall(r"^- (met|MISSED): (.+)$", block, re.M)
    assert len(verdicts) == 8, verdicts  # lr ratio + stretch; per sweep: seeds, +1 point, warm
    assert sum("sooner than plain" in v for _, v in verdicts) == 2
    assert sum(">= warm-start alone" in v for _, v in verdicts) == 2
    ranked = re.search(r"^Targets met per KD mode \(mean ratio on `lr`\): (.+)\.$", block, re.M)
    assert ranked is not None
    assert sorted(m.split()[0] for m in ranked[1].split(", ")) == sorted(KD)
    assert (out / "sweep_speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.ray
def test_merge_rebuilds_the_report(quick: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """--merge (runs made apart, e.g. one per sweep) trains nothing and writes the same report."""
    out, _ = quick
    done = run_script(SCRIPT, "--merge", str(out / "sweep_speedup.json"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    first, again = ((d / "sweep_speedup.md").read_text().splitlines() for d in (out, tmp_path))
    assert "(runs merged)" in again[2]
    assert [line for i, line in enumerate(first) if i != 2] == [
        line for i, line in enumerate(again) if i != 2
    ]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--trials", "1"], "--trials"),
        (["--seeds", "0"], "--seeds"),
        (["--task", "cifar100"], "--data"),
        (["--methods", "kd,nope"], "--methods"),
        (["--sweeps", "nope"], "--sweeps"),
        (["--pbt-seeds", "0"], "--pbt-seeds"),
        (["--first-seed", "-1"], "--first-seed"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], names: str) -> None:
    done = run_script(SCRIPT, *args, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], done.stderr
    assert "Traceback" not in done.stderr
