"""Types, constants and weights shared by the CLI tests and their fixtures."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from storage import Registry

RunCli = Callable[..., subprocess.CompletedProcess[str]]

#: The run keys of the two runs of study lr-sweep whose student trial 3 has lineage.
RUN_A = "4f1c2a9be0d34c6f8a7b1e2d3c4b5a69"
RUN_B = "c0ffee5e1a2b4c6d8e0f1a2b3c4d5e6f"


@dataclass(frozen=True)
class Filled:
    """A registry with known contents, and the ids of its teachers by role."""

    url: str
    blobs: Path
    registry: Registry
    ids: Mapping[str, int]


def weights(seed: float) -> dict[str, torch.Tensor]:
    """The state dict a teacher of ``filled`` registered (``seed``: its trial; bert 10, odd 11)."""
    return {"fc.weight": torch.full((3, 4), seed), "fc.bias": torch.zeros(3)}
