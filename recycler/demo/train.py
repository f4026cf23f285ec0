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
    device = next(model.parameters()).device
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(split.y), batch_size):
            pred = model(split.x[i : i + batch_size].to(device)).argmax(dim=1)
            correct += int((pred == split.y[i : i + batch_size].to(device)).sum())
    return correct / len(split.y)


Augment = Callable[[torch.Tensor], torch.Tensor]


class Run:
    """One training run, an epoch at a time: SGD with momentum, cosine decay, optional KD.

    Its :meth:`state` (weights, momentum buffers, epochs done) is all tensors plus one integer,
    so a run can be checkpointed as safetensors and resumed (e.g. by Population Based Training)
    with a new learning rate: the cosine position is kept, its peak becomes the new ``lr``.

    Example:
        >>> from recycler.demo.task import ConvNet1D, load_mnist1d
        >>> run = Run(ConvNet1D(8), load_mnist1d(200, 100), lr=0.1, epochs=2)
        >>> 0.0 <= run.epoch() <= 1.0, run.epochs_done
        (True, 1)
    """

    def __init__(
        self,
        model: nn.Module,
        data: tuple[Split, Split],
        *,
        lr: float,
        epochs: int,
        batch_size: int = 64,
        weight_decay: float = 5e-4,
        seed: int = 0,
        kd: Distiller | None = None,
        augment: Augment | None = None,
    ) -> None:
        self.model, self.data, self.kd, self.augment = model, data, kd, augment
        self.lr, self.epochs, self.batch_size = lr, epochs, batch_size
        self.steps_per_epoch = math.ceil(len(data[0].y) / batch_size)
        self.opt = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay
        )
        self.gen = torch.Generator().manual_seed(seed)
        self.epochs_done = 0
        if kd is not None:
            # with ``budget`` a trial that has a pool trains fewer epochs (and ``init`` may set
            # its weights): the loop and its cosine schedule follow the effective plan
            kd.attach(model).plan(epochs=epochs, steps_per_epoch=self.steps_per_epoch)
            self.epochs = kd.epochs or epochs

    def set_hyperparameters(self, *, lr: float, weight_decay: float) -> None:
        """New peak learning rate and weight decay from the next step on."""
        self.lr = lr
        for group in self.opt.param_groups:
            group["weight_decay"] = weight_decay

    def _lr_at(self, step: int) -> float:
        total = self.epochs * self.steps_per_epoch
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    def epoch(self) -> float:
        """Train one epoch (the data in a fresh seeded order); the test accuracy after it."""
        train_split, test_split = self.data
        device = next(self.model.parameters()).device
        n = len(train_split.y)
        self.model.train()
        order = torch.randperm(n, generator=self.gen).to(train_split.y.device)
        step = self.epochs_done * self.steps_per_epoch
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            x, y = train_split.x[idx].to(device), train_split.y[idx].to(device)
            if self.augment is not None:
                x = self.augment(x)
            logits = self.model(x)
            if self.kd is None:
                loss = F.cross_entropy(logits, y)
            else:
                loss = self.kd.loss(logits, y, x, sample_ids=train_split.ids[idx])
            for group in self.opt.param_groups:
                group["lr"] = self._lr_at(step)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.opt.step()
            step += 1
        self.epochs_done += 1
        return evaluate(self.model, test_split)

    def state(self) -> dict[str, torch.Tensor]:
        """Weights (``model.*``), momentum buffers (``momentum.<i>``) and ``epochs_done``."""
        out = {f"model.{k}": v.detach().cpu() for k, v in self.model.state_dict().items()}
        for i, p in enumerate(self.model.parameters()):
            buf = self.opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[f"momentum.{i}"] = buf.detach().cpu()
        out["epochs_done"] = torch.tensor(self.epochs_done)
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from :meth:`state` (another run's, for PBT's exploit step)."""
        self.model.load_state_dict(
            {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        )
        device = next(self.model.parameters()).device
        for i, p in enumerate(self.model.parameters()):
            if f"momentum.{i}" in state:
                self.opt.state[p]["momentum_buffer"] = state[f"momentum.{i}"].to(device).clone()
        self.epochs_done = int(state["epochs_done"])
        if self.kd is not None:
            self.kd.resume_at(self.epochs_done * self.steps_per_epoch, self.epochs_done)


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
    augment: Augment | None = None,
) -> TrainResult:
    """SGD with momentum and cosine decay; ``kd`` adds distillation; ``on_epoch`` may stop early.

    ``on_epoch(epoch, accuracy)`` returning True stops training (e.g. a pruned trial).
    ``augment`` transforms each training batch's inputs (the teachers see the same batch).
    """
    run = Run(
        model,
        data,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        weight_decay=weight_decay,
        seed=seed,
        kd=kd,
        augment=augment,
    )
    result = TrainResult()
    start = time.perf_counter()
    for epoch in range(run.epochs):  # the effective plan: fewer epochs under ``budget``
        result.accuracy.append(run.epoch())
        result.seconds.append(time.perf_counter() - start)
        if on_epoch is not None and on_epoch(epoch, result.accuracy[-1]):
            break
    return result
