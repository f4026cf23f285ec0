"""MNIST-1D (generated locally by the ``mnist1d`` package, no download) and a small 1-D CNN."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from .._imports import require


@dataclass(frozen=True)
class Split:
    """Tensors of one split: inputs [N, 1, 40] float32, labels [N] int64, ids [N] int64."""

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor


@functools.lru_cache(maxsize=4)
def load_mnist1d(n_train: int = 1000, n_test: int = 1000, seed: int = 42) -> tuple[Split, Split]:
    """Generate MNIST-1D locally: ``n_train`` training and ``n_test`` test samples.

    Example:
        >>> train, test = load_mnist1d(200, 100)
        >>> train.x.shape
        torch.Size([200, 1, 40])
    """
    mnist1d = require("mnist1d.data", "demo", feature="MNIST-1D")
    args = mnist1d.get_dataset_args()
    split = args.train_split
    args.num_samples = int(max(n_train / split, n_test / (1 - split))) + 10
    args.seed = seed
    data = mnist1d.make_dataset(args)
    x_train = torch.tensor(data["x"][:n_train], dtype=torch.float32).unsqueeze(1)
    y_train = torch.tensor(data["y"][:n_train], dtype=torch.int64)
    x_test = torch.tensor(data["x_test"][:n_test], dtype=torch.float32).unsqueeze(1)
    y_test = torch.tensor(data["y_test"][:n_test], dtype=torch.int64)
    return (
        Split(x_train, y_train, torch.arange(len(y_train))),
        Split(x_test, y_test, torch.arange(len(y_test))),
    )


class ConvNet1D(nn.Module):
    """Three Conv1d+BatchNorm+ReLU layers of ``channels`` channels and a linear head.

    Example:
        >>> ConvNet1D(32)(torch.zeros(8, 1, 40)).shape
        torch.Size([8, 10])
    """

    def __init__(self, channels: int = 32, classes: int = 10, length: int = 40) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 1
        for _ in range(3):
            layers += [
                nn.Conv1d(width, channels, 5, padding=2, stride=2 if width > 1 else 1),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
            ]
            width = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * (length // 4), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x).flatten(1))
        return out
