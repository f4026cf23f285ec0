"""Kernel choices of the wide ensemble, made by measuring: im2col convolution, batch chunks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNKS = (1, 2, 4, 8)  # batch chunk counts the first call times


def im2col_conv(
    x: Tensor,
    w: Tensor,
    b: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """An ungrouped Conv1d/Conv2d (integer padding, a Conv module's tuples) as im2col + matmul.

    Example:
        >>> conv = torch.nn.Conv1d(2, 3, 3, padding=1)
        >>> x = torch.randn(4, 2, 10)
        >>> got = im2col_conv(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
        >>> torch.allclose(got, conv(x), atol=1e-6)
        True
    """
    one_d = x.dim() == 3
    kernel = (1, w.shape[-1]) if one_d else tuple(w.shape[-2:])
    stride, padding, dilation = (
        (pad, int(v[0])) if one_d else (int(v[0]), int(v[1]))
        for v, pad in ((stride, 1), (padding, 0), (dilation, 1))
    )
    image = x.unsqueeze(2) if one_d else x
    cols = F.unfold(image, kernel, dilation, padding, stride)  # [B, Cin*k, L]
    sizes = [
        (image.shape[2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
        for i in range(2)
    ]
    out = torch.matmul(w.reshape(w.shape[0], -1), cols).add_(b.view(-1, 1))
    return out.view(x.shape[0], w.shape[0], *sizes[1 if one_d else 0 :])


def fastest(**ways: Callable[[], Any]) -> str:
    """The name of the fastest way (best of five timed runs each, interleaved)."""
    best = dict.fromkeys(ways, math.inf)
    for _ in range(5):
        for name, way in ways.items():
            start = time.perf_counter()
            out = way()
            while isinstance(out, (tuple, list, dict)) and out:
                out = next(iter(out.values())) if isinstance(out, dict) else out[0]
            if isinstance(out, Tensor) and out.device.type != "cpu":
                getattr(torch, out.device.type).synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return min(best, key=best.__getitem__)


def batch_size(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
    """The common first dim of the tensor inputs (None: no tensor, a scalar, or dims differ)."""
    sizes = {
        v.shape[0] if v.dim() else -1 for v in (*args, *kwargs.values()) if isinstance(v, Tensor)
    }
    return sizes.pop() if len(sizes) == 1 and -1 not in sizes else None


def batch_rows(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], batch: int, start: int, rows: int
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    def part(v: Any) -> Any:
        return v[start : start + rows] if isinstance(v, Tensor) else v

    return tuple(map(part, args)), {k: part(v) for k, v in kwargs.items()}


def join_batches(outs: list[Any]) -> Any:
    """Chunks' outputs as one: stacked tensors joined along the batch (dim 1)."""
    first = outs[0]
    if isinstance(first, Tensor):
        return torch.cat(outs, dim=1)
    if isinstance(first, (tuple, list)):
        return type(first)(join_batches([o[i] for o in outs]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: join_batches([o[k] for o in outs]) for k in first}
    return first
