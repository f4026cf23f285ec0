"""The rules of teacher outputs: how a teacher is called, where its logits are, their mean."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

#: Picks the logits out of a model's output (e.g. ``lambda out: out.scores``).
OutputFn = Callable[[Any], Tensor]


class NotLogitsError(TypeError):
    """A model's output holds no logits where they were looked for."""


def call_args(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments for a teacher, from how the student was called.

    A tuple or list is the positional arguments, a mapping the keyword arguments, anything
    else (a tensor) the single positional argument.

    Example:
        >>> call_args({"input_ids": 1})
        ((), {'input_ids': 1})
        >>> call_args((1, 2))
        ((1, 2), {})
    """
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def logits_of(out: Any, output: OutputFn | None = None) -> Tensor:
    """The logits in a model's output.

    ``output(out)`` if given; else the tensor itself, a mapping's ``"logits"``, an object's
    ``.logits`` (Hugging Face ``ModelOutput``), or the first item of a tuple or list.

    Example:
        >>> import torch
        >>> t = torch.zeros(2, 3)
        >>> all(logits_of(o) is t for o in (t, (t, 1), {"logits": t}))
        True
    """
    if output is not None:
        out = output(out)
    elif not isinstance(out, Tensor):
        if isinstance(out, Mapping) and "logits" in out:
            out = out["logits"]
        elif not isinstance(out, Mapping) and isinstance(getattr(out, "logits", None), Tensor):
            out = out.logits
        elif isinstance(out, (tuple, list)) and out:
            out = out[0]
    if not isinstance(out, Tensor):
        raise NotLogitsError(
            f"a teacher returned {type(out).__name__}, not logits; pass output= to pick them "
            "out of it (found without it: a tensor, a tuple whose first item is the logits, "
            "a dict or ModelOutput with 'logits')"
        )
    return out


def average_teachers(logits: Sequence[Tensor] | Tensor) -> Tensor:
    """Mean of several teachers' logits: a list of same-shape tensors or a stacked ``[N, ...]``.

    Example:
        >>> import torch
        >>> average_teachers([torch.zeros(2, 3), torch.ones(2, 3)])[0]
        tensor([0.5000, 0.5000, 0.5000])
    """
    if isinstance(logits, Tensor):
        if logits.dim() < 1 or logits.shape[0] == 0:
            raise ValueError("average_teachers needs at least one teacher's logits")
        return logits[0] if logits.shape[0] == 1 else logits.mean(dim=0)
    if len(logits) == 0:
        raise ValueError("average_teachers needs at least one teacher's logits")
    if len(logits) == 1:
        return logits[0]
    shapes = {tuple(t.shape) for t in logits}
    if len(shapes) != 1:
        raise ValueError(f"teachers' logits must share one shape, got {sorted(shapes)}")
    total = logits[0].clone()
    for t in logits[1:]:
        total.add_(t)
    return total.div_(len(logits))
