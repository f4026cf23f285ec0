"""Several teachers of one architecture evaluated in one batched call (``torch.func.vmap``).

:class:`FusedEnsemble` stacks the teachers' parameters and buffers once
(``torch.func.stack_module_state``) and maps ``functional_call`` over the stack with the input
shared, so N teachers cost one call per layer instead of N. :func:`loop_forward` is the plain
loop with the same result shape, ``[N, ...]``; the two agree to float rounding.

When it pays: vmap turns a layer of N teachers into one batched kernel (a wider or grouped
convolution, a batched matmul), saving N-1 kernel launches per layer, which is what costs on a
GPU. On a CPU it does not pay: measured with ``python tests/recycler/test_fused.py`` (2 cores,
torch 2.14, 5 teachers, batch 128), fused was 2.6x slower than the loop for a small CNN and
1.6x slower for a small MLP: vmap's batching rules add layout copies and grouped convolutions
that oneDNN runs slower than N plain ones, and its per-call overhead exceeds the dispatch it
saves. Use the loop on CPUs (for conv nets, a channels_last input halved the loop's time there).

Teachers are constants: both paths run under ``torch.inference_mode()`` and in eval mode.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

__all__ = ["FusedEnsemble", "call_args", "can_fuse", "loop_forward", "why_not_fusable"]

#: Picks the logits out of a model's output (e.g. ``lambda out: out.scores``).
OutputFn = Callable[[Any], Tensor]


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


def _signature(model: nn.Module) -> list[tuple[str, str, tuple[int, ...], torch.dtype, str]]:
    return [
        (kind, name, tuple(t.shape), t.dtype, str(t.device))
        for kind, named in (("param", model.named_parameters()), ("buffer", model.named_buffers()))
        for name, t in named
    ]


def why_not_fusable(models: Sequence[nn.Module]) -> str | None:
    """Why ``models`` cannot be fused, or None if they can (see :func:`can_fuse`).

    Example:
        >>> why_not_fusable([nn.Linear(2, 3).eval(), nn.Linear(2, 4).eval()])
        'model 1 differs from model 0 in its parameters or buffers (names, shapes, dtypes, devices)'
    """
    if len(models) == 0:
        return "no models"
    first = models[0]
    sig, text = _signature(first), repr(first)
    for i, model in enumerate(models):
        if model.training:
            return f"model {i} is in training mode (teachers are evaluated in eval mode)"
        if type(model) is not type(first):
            return f"model {i} is a {type(model).__name__}, model 0 a {type(first).__name__}"
        if i and _signature(model) != sig:
            return (
                f"model {i} differs from model 0 in its parameters or buffers "
                "(names, shapes, dtypes, devices)"
            )
        if i and repr(model) != text:
            return f"model {i} differs from model 0 in its layers' settings: {repr(model)!r}"
    return None


def can_fuse(models: Sequence[nn.Module]) -> bool:
    """Whether :class:`FusedEnsemble` can evaluate ``models`` in one call.

    True when there is at least one model, all are in eval mode, of one class, with the same
    parameter and buffer names, shapes, dtypes and devices, and the same ``repr`` (which shows
    layer settings such as stride, padding, eps). Non-tensor attributes that ``repr`` does not
    show are taken from the first model.

    Example:
        >>> can_fuse([nn.Linear(2, 3).eval(), nn.Linear(2, 3).eval()])
        True
    """
    return why_not_fusable(models) is None


def _logits(out: Any, output: OutputFn | None) -> Tensor:
    """The logits in a model's output: ``output(out)`` if given, else the tensor itself, its
    ``.logits`` (or ``["logits"]``), or the first item of a tuple."""
    if output is not None:
        out = output(out)
    elif not isinstance(out, Tensor):
        if isinstance(out, Mapping) and "logits" in out:
            out = out["logits"]
        elif hasattr(out, "logits"):
            out = out.logits
        elif isinstance(out, (tuple, list)) and out:
            out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(
            f"a teacher returned {type(out).__name__}, not logits; pass output= to pick them "
            "out of it (e.g. output=lambda out: out.scores)"
        )
    return out


def loop_forward(
    models: Sequence[nn.Module],
    args: Any = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    output: OutputFn | None = None,
) -> Tensor:
    """Every model on the same input, one after the other; logits stacked as ``[N, ...]``.

    ``args`` is a tuple of positional arguments or a single tensor. Runs under
    ``torch.inference_mode()``; each model runs in the mode it is in.

    Example:
        >>> models = [nn.Linear(4, 3).eval() for _ in range(2)]
        >>> loop_forward(models, torch.randn(8, 4)).shape
        torch.Size([2, 8, 3])
    """
    if len(models) == 0:
        raise ValueError("loop_forward needs at least one model")
    pos = args if isinstance(args, tuple) else (args,)
    kw = dict(kwargs or {})
    with torch.inference_mode():
        return torch.stack([_logits(m(*pos, **kw), output) for m in models])


class _EvalBatchNorm(nn.Module):
    """Eval-mode BatchNorm as one multiply-add; same parameter and buffer names as BatchNorm.

    Under vmap, ``F.batch_norm`` with per-teacher running statistics is decomposed into several
    passes over the activations; folding it into ``x * scale + shift`` makes it one.
    """

    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps = bn.eps
        self.weight = bn.weight
        self.bias = bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        shape = (-1,) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.view(shape), x, scale.view(shape))


def _fold_batchnorms(module: nn.Module) -> None:
    """Swap, in place, every affine BatchNorm with running statistics for _EvalBatchNorm."""
    for name, child in module.named_children():
        if (
            isinstance(child, nn.modules.batchnorm._BatchNorm)
            and child.affine
            and child.track_running_stats
            and child.running_mean is not None
        ):
            setattr(module, name, _EvalBatchNorm(child))
        else:
            _fold_batchnorms(child)


class FusedEnsemble:
    """N teachers of one architecture as one batched call returning ``[N, ...]`` logits.

    The weights are stacked once at construction (a copy: the teachers may be dropped or
    changed afterwards without effect). Inputs are shared by all teachers and given as the
    teachers take them: ``ens(x)``, ``ens(x, y)``, ``ens(**batch)``, or as the student got them
    with ``ens.run(inputs)`` (a tensor, a tuple of args, a dict of kwargs). Outputs that are not
    tensors give their ``.logits`` or first item unless ``output`` says otherwise. BatchNorm
    uses its running statistics (eval mode). ``chunk_size`` bounds how many teachers vmap runs
    at once (memory).

    Example:
        >>> teachers = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        ...             for _ in range(5)]
        >>> ens = FusedEnsemble(teachers)
        >>> x = torch.randn(16, 4)
        >>> ens(x).shape
        torch.Size([5, 16, 3])
        >>> torch.allclose(ens(x), loop_forward(teachers, x), atol=1e-6)
        True
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        chunk_size: int | None = None,
        output: OutputFn | None = None,
    ) -> None:
        why = why_not_fusable(models)
        if why is not None:
            raise ValueError(f"cannot fuse these teachers: {why}; evaluate them with loop_forward")
        params, buffers = stack_module_state(list(models))
        self.params: dict[str, Tensor] = {k: v.detach() for k, v in params.items()}
        self.buffers: dict[str, Tensor] = {k: v.detach() for k, v in buffers.items()}
        self._base = copy.deepcopy(models[0]).to("meta").eval()
        _fold_batchnorms(self._base)
        self._output = output
        self._n = len(models)

        def one(p: dict[str, Tensor], b: dict[str, Tensor], a: Any, kw: Any) -> Tensor:
            return _logits(functional_call(self._base, (p, b), a, kw), self._output)

        self._mapped = vmap(one, in_dims=(0, 0, None, None), chunk_size=chunk_size)

    def __len__(self) -> int:
        return self._n

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """Logits of every teacher for the same input, stacked as ``[N, ...]``."""
        with torch.inference_mode():
            out: Tensor = self._mapped(self.params, self.buffers, args, kwargs)
        return out

    __call__ = forward

    def run(self, inputs: Any) -> Tensor:
        """:meth:`forward` on inputs as the student got them: a tensor, a tuple, or a dict.

        Example:
            >>> ens.run({"input_ids": ids, "attention_mask": mask})  # doctest: +SKIP
        """
        args, kwargs = call_args(inputs)
        return self.forward(*args, **kwargs)

    def to(self, device: torch.device | str) -> FusedEnsemble:
        """Move the stacked weights to ``device`` (in place); returns self."""
        self.params = {k: v.to(device) for k, v in self.params.items()}
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        return self

    def __repr__(self) -> str:
        return f"FusedEnsemble({self._n} x {type(self._base).__name__})"
