"""Running the benchmark scripts of examples/benchmarks/ as a user would: a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "examples" / "benchmarks"


def run_script(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python examples/benchmarks/<name> <args>`` from the repository root."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
