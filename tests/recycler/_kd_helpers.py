"""Small nets and a filled registry shared by the Distiller tests."""

from __future__ import annotations

import torch
from torch import nn

from storage import Registry

SIG = "logits/2d/10"


def make_net(width: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(1, width, 5, padding=2),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * 40, 10),
    )


def fill(registry: Registry, n: int, *, study: str = "s", width: int = 8) -> list[int]:
    ids = []
    for i in range(n):
        net = make_net(width, seed=100 + i)
        rec = registry.register(
            net.state_dict(),
            study=study,
            trial_number=i,
            metric_name="accuracy",
            metric_value=0.5 + 0.1 * i,
            output_signature=SIG,
        )
        ids.append(rec.id)
    return ids


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 1, 40, generator=g), torch.randint(0, 10, (16,), generator=g)
