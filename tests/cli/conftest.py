"""Fixtures of the CLI tests: a filled SQLite registry and a runner of the real command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from _cli_helpers import RUN_A, RUN_B, Filled, RunCli, weights

from storage import Registry
from storage._rdb.engine import dispose_all

#: Trial state and final flag of the lr-sweep trials that are not complete, final checkpoints.
_STATES = {0: ("running", False), 3: ("pruned", True)}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    """lr-sweep trials 0-5 (5th QUARANTINED, 6th DELETED), a minimize study, odd names, lineage.

    Trial 0's teacher is an intermediate checkpoint of a running trial, trial 3 was pruned and
    bert-mlm's trial failed (``_STATES``). Lineage: student trial 2 (an old row: no run, no
    trial id), and student trial 3 in two runs of the study (``RUN_A``, ``RUN_B``).
    """
    root = tmp_path_factory.mktemp("cli-registry")
    url = f"sqlite:///{root / 'registry.db'}"
    reg = Registry(url, root / "blobs")
    ids: dict[str, int] = {}
    for trial, acc in enumerate([0.61, 0.72, 0.68, 0.55, 0.90, 0.50]):
        state, final = _STATES.get(trial, ("complete", True))
        rec = reg.register(
            weights(float(trial)),
            study="lr-sweep",
            trial_number=trial,
            metric_name="accuracy",
            metric_value=acc,
            params={"lr": 0.1 / (trial + 1), "depth": 8},
            step=1000,
            epoch=10,
            framework="optuna",
            output_signature="logits[3]",
            tags={"model": "mlp"},
            trial_state=state,
            final=final,
        )
        ids[f"lr{trial}"] = rec.id
    ids["bert"] = reg.register(
        weights(10.0),
        study="bert-mlm",
        trial_number=0,
        metric_name="loss",
        metric_value=2.31,
        direction="minimize",
        trial_state="fail",
    ).id
    ids["odd"] = reg.register(weights(11.0), study="o'neil; DROP TABLE x -- ü", trial_number=0).id
    reg.quarantine(ids["lr4"], "manual: suspicious")
    reg.delete(ids["lr5"])
    a, b = {"run": RUN_A, "trial_id": "4cc34_00003"}, {"run": RUN_B, "trial_id": "9e0f1_00003"}
    for teacher, steps, run in (("lr1", 500, a), ("lr2", 480, a), ("lr1", 300, b)):
        reg.add_lineage(
            "lr-sweep",
            3,
            ids[teacher],
            steps_distilled=steps,
            overhead=0.12 if run is a else None,
            run=run["run"],
            trial_id=run["trial_id"],
        )
    reg.add_lineage("lr-sweep", 2, ids["lr1"], steps_distilled=900, weight=0.5)
    yield Filled(url=url, blobs=root / "blobs", registry=reg, ids=ids)
    dispose_all()


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """Run ``python -m recycler.cli ARGS`` (or ``script=True``: the installed ``recycler``).

    The child starts in an empty folder, without ``RECYCLER_*`` variables unless ``env`` sets them.
    """

    def run(
        *args: str, env: Mapping[str, str] | None = None, script: bool = False
    ) -> subprocess.CompletedProcess[str]:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("RECYCLER_")}
        child_env.update(env or {})
        if script:
            found = Path(sys.executable).with_name("recycler")
            script_path = str(found) if found.exists() else shutil.which("recycler")
            assert script_path, "the `recycler` console script is not installed"
            command = [script_path, *args]
        else:
            command = [sys.executable, "-m", "recycler.cli", *args]
        return subprocess.run(
            command,
            cwd=tmp_path,
            env=child_env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
            check=False,
        )

    return run
