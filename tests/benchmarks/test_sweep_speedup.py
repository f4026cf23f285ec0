"""examples/benchmarks/sweep_speedup.py: its outputs' structure and sanity, and bad arguments.

``--quick`` runs for real (MNIST-1D, Optuna studies, a SQLite registry, Ray Tune PBT on
loopback); the assertions are about what it wrote, never about timings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _scripts import run_script

SCRIPT = "sweep_speedup.py"
SEEDS, TRIALS, EPOCHS, STEPS_PER_EPOCH = 2, 6, 6, 8  # --quick: 500 samples, batch 64
SEQUENTIAL = ["plain", "sample-1", "periodic", "warm-start"]
PERIODIC_EPOCHS = 2  # "every 10ep for 2ep" over 6 epochs: epochs 0 and 1


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
            assert sorted(r["traces"]) == sorted([*SEQUENTIAL, "pbt"])
            assert len(r["params"]) == TRIALS
            for method in SEQUENTIAL:
                curves = r["curves"][method]
                # the same hyperparameters, in the same order, for every method
                assert [c["params"] for c in curves] == r["params"], (sweep, method)
                assert all(len(c["accuracy"]) == EPOCHS for c in curves)
                assert all(0.0 <= a <= 1.0 for c in curves for a in c["accuracy"])
                assert len(r["traces"][method]) == TRIALS * EPOCHS


@pytest.mark.slow
@pytest.mark.ray
def test_recycled_trials_distil_as_configured(quick: tuple[Path, dict[str, Any]]) -> None:
    _, data = quick
    for results in data["results"].values():
        for r in results:
            plain, sample, periodic = (r["curves"][m] for m in SEQUENTIAL[:3])
            # the first trial has no teacher: it is the plain trial, bit for bit
            assert sample[0]["accuracy"] == plain[0]["accuracy"]
            assert sample[0]["kd"]["steps_distilled"] == 0
            for i in range(1, TRIALS):
                assert sample[i]["kd"]["steps_distilled"] == EPOCHS * STEPS_PER_EPOCH
                assert len(sample[i]["kd"]["teachers_used"]) <= min(i, 5)
                steps = periodic[i]["kd"]["steps_distilled"]
                assert steps == PERIODIC_EPOCHS * STEPS_PER_EPOCH
                assert len(periodic[i]["kd"]["teachers_used"]) == min(i, 5)  # the ensemble
            assert all(not c["kd"] for c in plain)


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
            assert len(r["traces"]["pbt"]) >= EPOCHS  # members may inherit a clone's epochs
    text = (out / "sweep_speedup.md").read_text()
    for heading in ("## Sweep `lr`", "## Sweep `width-lr-wd`"):
        assert heading in text
    assert text.count("Best accuracy at equal wall-clock") == 2
    assert text.count("| pbt |") == 4  # equal-cost and cost-to-target tables of both sweeps
    assert (out / "sweep_speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--trials", "1"], "--trials"),
        (["--seeds", "0"], "--seeds"),
        (["--task", "cifar100"], "--data"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], names: str) -> None:
    done = run_script(SCRIPT, *args, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], done.stderr
    assert "Traceback" not in done.stderr
