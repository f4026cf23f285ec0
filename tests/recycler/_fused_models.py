"""Small teacher architectures for the fused-ensemble tests, with non-trivial BatchNorm."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

N = 5


def cnn(width: int = 8, stride: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, stride=stride),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(2 * width, 10),
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.GELU(), nn.Linear(32, 7))


def teachers(build: Callable[[], nn.Module], n: int = N, seed: int = 0) -> list[nn.Module]:
    """n models with distinct weights and non-trivial BatchNorm running statistics, in eval."""
    torch.manual_seed(seed)
    models = [build() for _ in range(n)]
    for m in models:
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                assert mod.running_mean is not None and mod.running_var is not None
                mod.running_mean.uniform_(-1.0, 1.0)
                mod.running_var.uniform_(0.3, 3.0)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.5, 0.5)
        m.eval()
    return models
