"""The transformers adapter's arithmetic and helpers that need no transformers import.

The Distiller's clock counts forward passes (micro-batches, one ``kd.loss`` each); the
Trainer counts optimizer steps, each ``gradient_accumulation_steps`` micro-batches (fewer
at the end of an epoch that does not divide evenly). :class:`LoopLength` converts between
the two exactly as the Trainer walks its epochs. :func:`kd_scale` is the factor that gives
a micro-batch's KD term the Trainer's loss scale.

Example:
    >>> loop = LoopLength(batches_per_epoch=10, accumulation=4, max_steps=9, epochs=3)
    >>> loop.updates_per_epoch, loop.micro(9), loop.updates(30)
    (3, 30, 9)
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .._imports import require
from .._storage import Registry, StorageError, TeacherQuery
from ..config import DistillConfig, RecycleConfig
from ..errors import ConfigError

_REGISTRIES: dict[tuple[str, str], Registry] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoopLength:
    """The Trainer's plan in micro-batches: batches per epoch (None: the data has no
    length), accumulation, optimizer steps, and whole epochs when the plan is epochs."""

    batches_per_epoch: int | None
    accumulation: int
    max_steps: int
    epochs: int | None

    @classmethod
    def of(cls, args: Any, dataloader: Any) -> LoopLength:
        """The plan the Trainer derives from its arguments and its training dataloader."""
        try:
            batches: int | None = len(dataloader)
        except (TypeError, NotImplementedError):
            batches = None
        accumulation = max(1, int(args.gradient_accumulation_steps))
        epochs_arg = float(args.num_train_epochs)
        if batches is None or args.max_steps > 0:
            return cls(batches, accumulation, int(args.max_steps), None)
        updates = max(math.ceil(batches / accumulation), 1)
        whole = int(epochs_arg) if epochs_arg.is_integer() and epochs_arg > 0 else None
        return cls(batches, accumulation, math.ceil(epochs_arg * updates), whole)

    @property
    def updates_per_epoch(self) -> int | None:
        """Optimizer steps per epoch."""
        if self.batches_per_epoch is None:
            return None
        return max(math.ceil(self.batches_per_epoch / self.accumulation), 1)

    def micro(self, updates: int) -> int:
        """Micro-batches (forward passes) in the first ``updates`` optimizer steps."""
        per_epoch = self.updates_per_epoch
        if self.batches_per_epoch is None or per_epoch is None:
            return updates * self.accumulation
        full, rest = divmod(updates, per_epoch)
        return full * self.batches_per_epoch + min(rest * self.accumulation, self.batches_per_epoch)

    def updates(self, micro: int) -> int:
        """Optimizer steps that hold ``micro`` micro-batches (the last one maybe partial)."""
        per_epoch = self.updates_per_epoch
        if self.batches_per_epoch is None or per_epoch is None:
            return math.ceil(micro / self.accumulation)
        full, rest = divmod(micro, self.batches_per_epoch)
        return full * per_epoch + math.ceil(rest / self.accumulation)

    def plan(self) -> dict[str, int | None]:
        """``kd.plan``'s arguments: whole epochs of micro-batches, or micro-batch steps."""
        if self.epochs is not None:
            return {"epochs": self.epochs, "steps_per_epoch": self.batches_per_epoch}
        return {"steps_per_epoch": self.batches_per_epoch, "steps": self.micro(self.max_steps)}


def kd_scale(
    trainer: Any,
    kept: torch.Tensor | int,
    num_items_in_batch: torch.Tensor | int | float | None,
) -> torch.Tensor | float:
    """The factor for a micro-batch's KD term (a mean over its ``kept`` items) such that
    the accumulated KD gradient is that of the whole accumulated batch's mean.

    The Trainer either treats the loss as normalised over the accumulated batch already
    (the model takes ``num_items_in_batch``, or a ``compute_loss_func``, or
    ``loss_is_scaled_for_ga``) or divides it by its accumulation steps G. Knowing the
    batch's item count N (``num_items_in_batch``, the labels that are not -100), the term is
    weighted by ``kept / N``, times G in the second case (times the devices that average
    tokens, as the Trainer does); without N, by 1/G or 1: the mean of the micro-batches'
    means, as the Trainer treats its own loss then.
    """
    scaled = getattr(trainer, "loss_is_scaled_for_ga", None)
    accepts = bool(getattr(trainer, "model_accepts_loss_kwargs", False))
    own_loss = getattr(trainer, "compute_loss_func", None) is not None
    if scaled is None:
        scaled = (accepts and num_items_in_batch is not None) or own_loss
    steps = max(1, int(getattr(trainer, "current_gradient_accumulation_steps", 1)))
    if num_items_in_batch is None:
        return 1.0 / steps if scaled else 1.0
    factor: torch.Tensor | float = kept / num_items_in_batch
    if not scaled:
        return factor * steps
    args = trainer.args
    if getattr(args, "average_tokens_across_devices", False) and (accepts or own_loss):
        tp = trainer.get_tp_size() if hasattr(trainer, "get_tp_size") else 1
        devices = trainer.accelerator.num_processes // tp if args.n_gpu <= 1 else args.n_gpu
        factor = factor * devices
    return factor


def registry_for(config: RecycleConfig) -> Registry:
    """One open registry per (database, blobs) in this process (a Ray worker opens its own)."""
    key = (config.registry, config.blobs)
    with _LOCK:
        found = _REGISTRIES.get(key)
        if found is None:
            found = _REGISTRIES[key] = Registry(config.registry, config.blobs)
        return found


def next_trial_number(registry: Registry, study: str) -> int:
    """The next free trial number of a study run without a search (1 + the largest one).

    A registry that cannot be reached gives 0: the trial trains and says so in its stats.
    """
    try:
        last = registry.query(
            TeacherQuery(
                study=study, status=None, order_by="trial_number", descending=True, limit=1
            )
        )
    except StorageError:
        return 0
    return last[0].trial_number + 1 if last else 0


def names_schedule(
    source: RecycleConfig | Mapping[str, Any] | str | os.PathLike[str] | None,
) -> bool:
    """Whether the user's config sets ``distill.schedule`` (so the MLM default stays out).

    A dict or YAML is read for the key; a built :class:`RecycleConfig` counts as setting it
    when its schedule is not the default ``always``.
    """
    if source is None:
        return False
    if isinstance(source, RecycleConfig):
        return source.distill.schedule != DistillConfig().schedule
    if isinstance(source, (str, os.PathLike)):
        import yaml

        text = str(source)
        try:
            if isinstance(source, os.PathLike) or ("\n" not in text and os.path.isfile(text)):
                with open(source, encoding="utf-8") as f:
                    text = f.read()
            data = yaml.safe_load(text)
        except (OSError, yaml.YAMLError):
            return False
        source = data if isinstance(data, Mapping) else {}
    distill = source.get("distill") if isinstance(source, Mapping) else None
    return isinstance(distill, Mapping) and "schedule" in distill


def kd_mask(
    logits: torch.Tensor, labels: Any, shift: Any, *, causal: bool
) -> tuple[torch.Tensor | None, torch.Tensor | int]:
    """The positions that distil, and how many items the Trainer counts in this batch.

    Token logits ``[B, T, V]``: where the label is not -100 (a causal LM's logit t predicts
    token t+1: its shifted labels, or the batch's ``shift_labels``). Class logits: the rows
    whose label is not -100. The count is the Trainer's ``num_items_in_batch`` rule.

    Example:
        >>> mask, kept = kd_mask(torch.zeros(1, 3, 5), torch.tensor([[-100, 4, 2]]), None,
        ...                      causal=False)
        >>> mask.tolist(), int(kept)
        ([[False, True, True]], 2)
    """
    if isinstance(shift, torch.Tensor):
        keep = shift != -100
        return (keep if logits.dim() == 3 else None), keep.sum()
    if not isinstance(labels, torch.Tensor):
        return None, int(logits.shape[0])
    if logits.dim() == 3 and causal:
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[..., :-1] = labels[..., 1:] != -100
        return keep, keep.sum()
    keep = labels != -100
    if tuple(keep.shape) == tuple(logits.shape[:-1]):
        return keep, keep.sum()
    return None, keep.sum()  # e.g. float labels [B, C]: all rows, the Trainer's count


def forget_finished_dataloaders() -> None:
    """Drop accelerate's dead references to the dataloaders of earlier runs in this process.

    accelerate's shared ``GradientState`` keeps weak references to the dataloaders it has
    iterated; once one is stale, no Trainer of this process pickles, and Ray's search ships
    the Trainer to its workers. Only references whose dataloader is gone are dropped.
    """
    accelerate = require("accelerate.state", "transformers", feature="the Trainer")
    state = accelerate.GradientState()
    live = [d for d in state.dataloader_references if d is not None]
    state.dataloader_references = live or [None]


def parse_schedule(value: str | None) -> Any:
    """``mlm_schedule``: a schedule string parsed as ``distill.schedule`` is (None: none)."""
    if value is None:
        return None
    try:
        return DistillConfig.from_dict({"schedule": value}).schedule
    except ConfigError as exc:
        raise ConfigError(f"mlm_schedule: {exc}".replace("distill.schedule: ", "")) from exc


def student_logits(outputs: Any) -> torch.Tensor:
    """The logits of the student's output: ``.logits`` of a ``ModelOutput`` (or a dict's
    ``"logits"``), else the first tensor of a tuple that is not the loss (a scalar)."""
    found = outputs.get("logits") if isinstance(outputs, Mapping) else None
    if found is None and not isinstance(outputs, Mapping):
        found = getattr(outputs, "logits", None)
    if found is None and isinstance(outputs, (tuple, list)):
        found = next((t for t in outputs if isinstance(t, torch.Tensor) and t.dim() > 0), None)
    if found is None and isinstance(outputs, torch.Tensor):
        found = outputs
    if not isinstance(found, torch.Tensor):
        raise TypeError(
            f"recycler: the model returned {type(outputs).__name__} without logits; return a "
            "ModelOutput with .logits (or a tuple whose first tensor after the loss is them)"
        )
    return found


def args_params(args: Any) -> dict[str, Any]:
    """A run's hyperparameters as a teacher records them, without a search."""
    names = ("learning_rate", "weight_decay", "per_device_train_batch_size", "num_train_epochs")
    return {name: getattr(args, name) for name in (*names, "seed") if hasattr(args, name)}
