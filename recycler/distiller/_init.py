"""Weight recycling: a student starts from the best compatible earlier teacher.

θ = shrink·θ_teacher + perturb·θ_fresh, in place (the optimizer keeps its parameters):
``shrink=1, perturb=0`` is a warm start; e.g. 0.5/0.1 shrink-and-perturb (Ash & Adams 2020).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(2, 1)
    >>> blend(net, {"weight": torch.ones(1, 2), "bias": torch.zeros(1)}, shrink=0.5, perturb=0.0)
    >>> net.weight.tolist()
    [[0.5, 0.5]]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def mismatch(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``tensors`` cannot initialise ``model`` (names or shapes differ), or None."""
    own = model.state_dict()
    if set(own) != set(tensors):
        missing = sorted(set(own) - set(tensors))[:3]
        extra = sorted(set(tensors) - set(own))[:3]
        return f"its weights have other names (missing {missing}, unexpected {extra})"
    for name, value in own.items():
        if tuple(value.shape) != tuple(tensors[name].shape):
            return (
                f"{name} has shape {tuple(tensors[name].shape)}, the student's {tuple(value.shape)}"
            )
    return None


@torch.no_grad()
def blend(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], *, shrink: float, perturb: float
) -> None:
    """Set the model's weights to ``shrink·teacher + perturb·fresh`` (integers: the teacher's)."""
    for name, value in model.state_dict().items():
        teacher = tensors[name].to(device=value.device, dtype=value.dtype)
        if value.is_floating_point():
            value.copy_(teacher * shrink + value * perturb)
        else:
            value.copy_(teacher)
