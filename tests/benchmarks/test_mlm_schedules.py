"""examples/benchmarks/mlm_schedules.py --quick: its outputs' structure and sanity (no timing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _scripts import run_script

from recycler.schedule import Clock, Schedule

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

SCRIPT = "mlm_schedules.py"
SCHEDULES = {
    "none": None,
    "always": "always",
    "first 25%": "until 0.25dur",
    "first 50%": "until 0.5dur",
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("mlm_schedules")
    done = run_script(SCRIPT, "--quick", "--out", str(out), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "mlm_schedules.json").read_text()), done.stdout


@pytest.mark.slow
def test_every_run_has_a_whole_curve_and_kd_exactly_as_scheduled(
    quick: tuple[Path, dict[str, Any], str],
) -> None:
    out, data, stdout = quick
    assert (out / "mlm_schedules.md").is_file() and (out / "mlm_schedules.png").is_file()
    assert data["setup"]["seeds"] == 2 and len(data["teachers"]) == 2
    assert set(data["students"]) == set(SCHEDULES)
    runs = [*data["teachers"], *(r for rs in data["students"].values() for r in rs)]
    for run in runs:
        steps, seconds, accuracy = run["steps"], run["seconds"], run["accuracy"]
        assert len(steps) == len(seconds) == len(accuracy) >= 3
        assert steps[0] == 0 and steps[-1] == run["kd"]["steps"]  # from start to the last step
        assert seconds == sorted(seconds) and seconds[0] >= 0
        assert all(0.0 <= a <= 1.0 for a in accuracy)
    teacher_ids = {r["kd"]["teacher_id"] for r in data["teachers"]}
    assert len(teacher_ids) == 2  # the sweep's models became teachers
    for label, schedule in SCHEDULES.items():
        for run in data["students"][label]:
            kd, n = run["kd"], run["kd"]["steps"]
            expected = 0
            if schedule is not None:
                parsed = Schedule.parse(schedule)
                expected = sum(parsed.active(Clock(step=s, planned_steps=n)) for s in range(n))
                assert set(kd["teachers_used"]) <= teacher_ids and kd["teachers_used"], stdout
            assert kd["steps_distilled"] == expected, label
            assert kd["registered"] is False
    assert {r["seed"] for r in data["students"]["none"]} == {1, 2}


@pytest.mark.slow
def test_the_report_has_the_table_and_a_verdict(quick: tuple[Path, dict[str, Any], str]) -> None:
    markdown = (quick[0] / "mlm_schedules.md").read_text()
    assert markdown.startswith("# Blakeney et al. §5.2 at small scale")
    for label in SCHEDULES:
        assert f"\n| {label} |" in markdown
    assert "**Paper's finding:**" in markdown
    assert "Early-phase KD better than KD throughout: **" in markdown
    assert "speed-up to none's final" in markdown
    assert "wrote " in quick[2]
