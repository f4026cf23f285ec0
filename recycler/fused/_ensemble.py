"""Several teachers of one architecture evaluated in one batched call.

:class:`FusedEnsemble` evaluates N teachers with their inputs shared and returns ``[N, ...]``
logits; :func:`loop_forward` is the plain loop with the same result shape. Two ways to fuse:

* ``wide`` (:mod:`recycler.fused._wide`): the N teachers rewritten as one network N times wider --
  the first layer as one layer with N times the outputs, later convolutions as grouped ones,
  BatchNorm folded into the convolution before it, linear layers as one batched matmul. One
  kernel per layer and no copies between layers. Convolutional nets and MLPs that
  ``torch.fx`` can trace; measured faster than the loop on a CPU too
  (``examples/benchmarks/kd_overhead.py``: 5 teachers of the demo CNN, batch 128).
* ``vmap``: ``torch.func.stack_module_state`` + ``vmap(functional_call)``, for any model vmap
  can batch (transformers included). Pays on accelerators (N-1 fewer kernel launches per
  layer); on a CPU its batching rules add layout copies and it measured ~2x slower than the
  loop, so the teacher pool uses it on accelerators only.

``strategy="auto"`` takes the wide rewrite where the model allows it, else vmap. The first
call with each pattern of arguments is checked against the teachers one by one; a mismatch
or any failure of the wide path switches to vmap for good, with one warning.

Teachers are constants: both paths run under ``torch.inference_mode()`` and in eval mode.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ._outputs import NotLogitsError, OutputFn, call_args, logits_of
from ._wide import WideEnsemble, WideUnsupported

__all__ = ["FusedEnsemble", "can_fuse", "loop_forward", "why_not_fusable"]


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
        return torch.stack([logits_of(m(*pos, **kw), output) for m in models])


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
    uses its running statistics (eval mode). ``strategy``: ``"auto"`` (the wide rewrite where
    the model allows it, else vmap), ``"wide"`` or ``"vmap"``; :attr:`kind` says which runs.
    ``chunk_size`` bounds how many teachers vmap runs at once (memory).

    Example:
        >>> teachers = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        ...             for _ in range(5)]
        >>> ens = FusedEnsemble(teachers)
        >>> x = torch.randn(16, 4)
        >>> ens(x).shape, ens.kind
        (torch.Size([5, 16, 3]), 'wide')
        >>> torch.allclose(ens(x), loop_forward(teachers, x), atol=1e-6)
        True
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        chunk_size: int | None = None,
        output: OutputFn | None = None,
        strategy: str = "auto",
    ) -> None:
        if strategy not in ("auto", "wide", "vmap"):
            raise ValueError(f"strategy must be 'auto', 'wide' or 'vmap', got {strategy!r}")
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
        self._strict = strategy == "wide"
        self._wide: WideEnsemble | None = None
        #: Why the wide rewrite is not used ("" while it is).
        self.why_not_wide = "strategy 'vmap'" if strategy == "vmap" else ""
        if strategy != "vmap":
            try:
                self._wide = WideEnsemble(models)
            except WideUnsupported as exc:
                if self._strict:
                    raise ValueError(f"cannot rewrite the teachers as one wide net: {exc}") from exc
                self.why_not_wide = str(exc)
        self._checked: set[tuple[Any, ...]] = set()

        def one(p: dict[str, Tensor], b: dict[str, Tensor], a: Any, kw: Any) -> Tensor:
            return logits_of(functional_call(self._base, (p, b), a, kw), self._output)

        self._one = one
        self._mapped = vmap(one, in_dims=(0, 0, None, None), chunk_size=chunk_size)

    def __len__(self) -> int:
        return self._n

    @property
    def kind(self) -> str:
        """``"wide"`` or ``"vmap"``: how the next call evaluates the teachers."""
        return "wide" if self._wide is not None else "vmap"

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """Logits of every teacher for the same input, stacked as ``[N, ...]``."""
        with torch.inference_mode():
            if self._wide is not None:
                try:
                    return self._wide_forward(args, kwargs)
                except NotLogitsError:
                    raise  # the user's output= picker or the model's output: vmap would fail too
                except Exception as exc:  # any other failure: fall back to vmap, which is general
                    if self._strict:
                        raise
                    self._wide, self.why_not_wide = None, f"{type(exc).__name__}: {exc}"
                    warnings.warn(
                        f"recycler: the wide fused ensemble failed ({self.why_not_wide}); "
                        "using vmap from now on",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            out: Tensor = self._mapped(self.params, self.buffers, args, kwargs)
        return out

    __call__ = forward

    def _wide_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        assert self._wide is not None
        out = logits_of(self._wide(*args, **kwargs), self._output)
        pattern = _pattern(args, kwargs)
        if pattern not in self._checked:  # first call of this shape: check against the teachers
            ref = torch.stack([self._teacher(i, args, kwargs) for i in range(self._n)])
            if out.shape != ref.shape:
                raise WideUnsupported(f"shape {tuple(out.shape)}, the teachers' {tuple(ref.shape)}")
            _check_close(
                out.float(), ref.float(), half=out.dtype not in (torch.float32, torch.float64)
            )
            self._checked.add(pattern)
        return out

    def _teacher(self, i: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        params = {k: v[i] for k, v in self.params.items()}
        buffers = {k: v[i] for k, v in self.buffers.items()}
        return self._one(params, buffers, args, kwargs)

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
        if self._wide is not None:
            self._wide.to(device)
        return self

    def __repr__(self) -> str:
        return f"FusedEnsemble({self._n} x {type(self._base).__name__})"


def _check_close(out: Tensor, ref: Tensor, *, half: bool) -> None:
    """Raise WideUnsupported unless ``out`` equals ``ref`` to rounding (NaN/inf where it is)."""
    finite = ref[torch.isfinite(ref)]
    scale = 1.0 + (float(finite.abs().max()) if finite.numel() else 0.0)
    atol = (3e-2 if half else 1e-4) * scale
    if not bool(torch.isclose(out, ref, rtol=0.0, atol=atol, equal_nan=True).all()):
        err = float((out - ref).abs().nan_to_num(nan=math.inf).max())
        raise WideUnsupported(f"its result differs from the teachers' by up to {err:.3g}")


def _pattern(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a call looks like apart from the values: arity, keywords, argument types, ranks."""

    def kind(v: Any) -> Any:
        return ("tensor", v.dim(), v.dtype, v.device) if isinstance(v, Tensor) else type(v)

    return (tuple(map(kind, args)), tuple(sorted((k, kind(v)) for k, v in kwargs.items())))
