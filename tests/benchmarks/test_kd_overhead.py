"""examples/benchmarks/kd_overhead.py runs end to end: every mode timed, every target judged.

Timings themselves are not asserted (the machine is shared and noisy); the script's table is
what the README reports.
"""

from __future__ import annotations

import re

from _scripts import run_script

MODES = [
    "plain",
    "floor",
    "sample-1",
    "2-of-20 epochs",
    "cached",
    "KD by hand",
    "all-5 loop",
    "all-5 fused",
    "all-5 vmap",
    "all-5 Distiller",
]


def test_quick_run_times_every_mode_and_judges_every_target() -> None:
    done = run_script("kd_overhead.py", "--quick", "--rounds", "1", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "all-5 fused ran as: wide" in out  # the wide rewrite, no fallback
    assert re.search(r"^2-of-20 epochs: [01]\.\d{3} of the steps distilled$", out, re.M)
    steps, _, whole = out.partition("Whole trials (")
    row = r"^(\S+(?: \S+)*?)\s+(\d+\.\d{3})\s+\d+\.\d{3}\s+\d+\.\d{3}$"
    rows = dict(re.findall(row, steps, re.M))
    assert list(rows) == MODES
    assert float(rows["plain"]) > 0
    verdicts = re.findall(r"\(<= [\d.]+\): (met|MISSED)$", steps, re.M)
    assert len(verdicts) == 4
    # the whole-trial table: every mode as complete trials, both targets judged
    assert whole.startswith("3 epochs x 10 steps, pool of 5, sample-1)")
    assert list(dict(re.findall(row, whole, re.M))) == ["plain", "floor", "online", "cached"]
    assert len(re.findall(r"\(<= 1\.08\): (met|MISSED)$", whole, re.M)) == 2
