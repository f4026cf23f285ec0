"""A plain SGD training loop with an optional Distiller: the loop a user would write."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..distiller import Distiller
from .task import Split


@dataclass
class TrainResult:
    """Per-epoch test accuracy and cumulative wall-clock seconds of one training run."""

    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def final(self) -> float:
        """Accuracy after the last epoch."""
        return self.accuracy[-1]

    def epochs_to(self, target: float) -> int | None:
        """First epoch (1-based) whose accuracy reaches ``target``, or None."""
        return next((i + 1 for i, a in enumerate(self.accuracy) if a >= target), None)

    def seconds_to(self, target: float) -> float | None:
        """Wall-clock seconds until the accuracy first reaches ``target``, or None."""
        epoch = self.epochs_to(target)
        return None if epoch is None else self.seconds[epoch - 1]


def evaluate(model: nn.Module, split: Split, batch_size: int = 1024) -> float:
    """Accuracy of ``model`` on ``split``."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(split.y), batch_size):
            pred = model(split.x[i : i + batch_size]).argmax(dim=1)
            correct += int((pred == split.y[i : i + batch_size]).sum())
    return correct / len(split.y)


def train(
    model: nn.Module,
    data: tuple[Split, Split],
    *,
    lr: float,
    epochs: int,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    seed: int = 0,
    kd: Distiller | None = None,
    on_epoch: Callable[[int, float], bool | None] | None = None,
) -> TrainResult:
    """SGD with momentum and cosine decay; ``kd`` adds distillation; ``on_epoch`` may stop early.

    ``on_epoch(epoch, accuracy)`` returning True stops training (e.g. a pruned trial).
    """
    train_split, test_split = data
    n = len(train_split.y)
    steps_per_epoch = math.ceil(n / batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    if kd is not None:
        kd.attach(model).plan(epochs=epochs, steps_per_epoch=steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    result = TrainResult()
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x, y = train_split.x[idx], train_split.y[idx]
            logits = model(x)
            if kd is None:
                loss = F.cross_entropy(logits, y)
            else:
                loss = kd.loss(logits, y, x, sample_ids=train_split.ids[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
        result.accuracy.append(evaluate(model, test_split))
        result.seconds.append(time.perf_counter() - start)
        if on_epoch is not None and on_epoch(epoch, result.accuracy[-1]):
            break
    return result
