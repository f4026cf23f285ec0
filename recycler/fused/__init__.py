"""Several same-architecture teachers in one batched call (the wide rewrite, or vmap).

Imports only torch. :class:`FusedEnsemble` evaluates N teachers on shared inputs and returns
``[N, ...]`` logits; :func:`loop_forward` is the plain loop with the same result;
:func:`logits_of` is the one rule that finds the logits in a model's output.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from recycler.fused import FusedEnsemble
    >>> teachers = [nn.Linear(4, 3).eval() for _ in range(3)]
    >>> FusedEnsemble(teachers).run(torch.randn(8, 4)).shape
    torch.Size([3, 8, 3])
"""

from __future__ import annotations

from ._ensemble import FusedEnsemble, can_fuse, loop_forward, why_not_fusable
from ._outputs import NotLogitsError, OutputFn, average_teachers, call_args, logits_of
from ._wide import WideEnsemble, WideUnsupported

__all__ = [
    "FusedEnsemble",
    "NotLogitsError",
    "OutputFn",
    "WideEnsemble",
    "WideUnsupported",
    "average_teachers",
    "call_args",
    "can_fuse",
    "logits_of",
    "loop_forward",
    "why_not_fusable",
]
