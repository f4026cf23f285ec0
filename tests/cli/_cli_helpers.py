"""Types shared by the CLI tests and their fixtures."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from storage import Registry

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class Filled:
    """A registry with known contents, and the ids of its teachers by role."""

    url: str
    blobs: Path
    registry: Registry
    ids: Mapping[str, int]
