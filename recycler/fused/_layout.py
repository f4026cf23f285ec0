"""How the N teachers' values of one activation are held in one tensor (the wide ensemble).

* ``SHARED``: one value for all teachers (the inputs), as is.
* ``WIDE``: ``[B, N*C, ...]``, teacher n's channels at ``n*C:(n+1)*C`` (convolutional nets).
* ``STACKED``: ``[N, B, ...]``, teacher first.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

SHARED, WIDE, STACKED = "shared", "wide", "stacked"


class Value(NamedTuple):
    """A tensor of the wide program and the layout of the N teachers' values in it."""

    t: Tensor
    layout: str


def as_stacked(v: Value, n: int) -> Tensor:
    """``v`` as ``[N, ...]`` (teacher first)."""
    if v.layout == STACKED:
        return v.t
    if v.layout == SHARED:
        return v.t.unsqueeze(0).expand(n, *v.t.shape)
    t = v.t
    return t.reshape(t.shape[0], n, t.shape[1] // n, *t.shape[2:]).transpose(0, 1)


def as_wide(v: Value, n: int) -> Tensor:
    """``v`` as ``[B, N*C, ...]`` (teachers side by side along dim 1)."""
    if v.layout == WIDE:
        return v.t
    if v.layout == SHARED:
        return v.t.repeat(1, n, *[1] * (v.t.dim() - 2))
    t = v.t.transpose(0, 1)
    return t.reshape(t.shape[0], -1, *t.shape[3:])


def teacher_rank(v: Value) -> int:
    """Rank of one teacher's value."""
    return v.t.dim() - (v.layout == STACKED)


def teacher_size(v: Value, n: int) -> torch.Size:
    """Shape of one teacher's value."""
    shape = v.t.shape
    if v.layout == STACKED:
        return shape[1:]
    if v.layout == WIDE:
        return torch.Size((shape[0], shape[1] // n, *shape[2:]))
    return shape


def shift_dims(dims: Any) -> Any:
    """A teacher's dim(s) as dims of the stacked tensor (non-negative ones move by one)."""
    if isinstance(dims, (tuple, list)):
        return type(dims)(shift_dims(d) for d in dims)
    return dims + 1 if isinstance(dims, int) and dims >= 0 else dims


def unwrap(value: Any) -> Any:
    return value.t if isinstance(value, Value) else value
