"""examples/optuna_quickstart.py runs, and the README's diff is the one it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "optuna_quickstart.py"


@pytest.mark.slow
def test_quickstart_runs(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^ +(\d+)  ([\d.]+) +([\d.-]+)  (\w+) +(\d+) +(\d+)$", done.stdout, re.M)
    assert [int(r[0]) for r in rows] == list(range(8))
    assert [int(r[4]) for r in rows[:2]] == [0, 1]  # teachers: the earlier finished trials
    assert (tmp_path / "recycler-demo" / "quickstart.db").exists()


def test_readme_diff_matches_the_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    diff = re.search(r"```diff\n(.*?)```", readme, re.S)
    assert diff is not None, "the README has no quickstart diff"
    lines = diff.group(1).splitlines()
    added = [line[1:].strip() for line in lines if line.startswith("+")]
    removed = [line[1:].strip() for line in lines if line.startswith("-")]
    assert 1 <= len(added) <= 5 and len(removed) <= len(added)
    source = EXAMPLE.read_text(encoding="utf-8").splitlines()
    marked = [
        line.removesuffix("# recycler").strip() for line in source if line.endswith("# recycler")
    ]
    assert sorted(marked) == sorted(added)  # the README's + lines are the example's marked ones
