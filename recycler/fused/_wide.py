"""N same-architecture teachers rewritten as one wide network: the fused ensemble for CPUs.

The teachers' first layer sees the same input, so it becomes one layer with the N teachers'
output channels side by side; each later convolution becomes one grouped convolution (group n
is teacher n); BatchNorm folds into the convolution before it; element-wise layers and pooling
run on the wide tensor as they are; a linear layer becomes one batched matmul. N teachers then
cost one kernel per layer with no copies between layers (vmap's batching rules reshuffle the
activations at every layer, which on a CPU cost more than the N calls they save).

The model is traced with ``torch.fx``. Every value of the traced program is held in one of
three layouts of the N teachers' values: *shared* (the same for all: the inputs), *wide*
(``[B, N*C, ...]``: teacher n's channels at ``n*C:(n+1)*C``) or *stacked* (``[N, B, ...]``).
Operations outside the supported set raise :class:`WideUnsupported` naming them; callers
(:class:`~recycler.fused.FusedEnsemble`) then use vmap, and they check the first result
against the teachers one by one.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.node import Node, map_arg

from ._kernels import CHUNKS, batch_rows, batch_size, fastest, im2col_conv, join_batches
from ._layout import (
    SHARED,
    STACKED,
    WIDE,
    Value,
    as_stacked,
    as_wide,
    shift_dims,
    teacher_rank,
    teacher_size,
    unwrap,
)
from ._wide_graph import (
    BATCHNORM,
    BINARY_FUNCTIONS,
    BINARY_METHODS,
    CONV,
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    ELEMENTWISE_MODULES,
    OUT_OF_PLACE,
    POOL_FUNCTIONS,
    POOL_MODULES,
    REDUCE_FUNCTIONS,
    REDUCE_METHODS,
    REDUCING,
    SIZE_ATTRIBUTES,
    WideUnsupported,
    attribute,
    bind,
    bn_affine,
    foldable_batchnorms,
    has_state,
    identity,
    is_eval_batchnorm,
    is_relu,
    method,
    name_of,
    no_step,
    param,
    relu_in_place,
    sole_use,
)

__all__ = ["WideEnsemble", "WideUnsupported"]


class WideEnsemble:
    """N eval-mode teachers of one architecture as one wide network returning ``[N, ...]``.

    Raises :class:`WideUnsupported` at construction when the model cannot be traced or uses an
    operation outside the supported set (convolutions, linear layers, BatchNorm, LayerNorm,
    element-wise activations and arithmetic, pooling, flatten/view, mean/sum/softmax, shape
    queries), and at call time for what only the shapes reveal. The weights are copied.

    Example:
        >>> teachers = [nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(),
        ...             nn.Flatten(), nn.Linear(24, 3)).eval() for _ in range(5)]
        >>> wide = WideEnsemble(teachers)
        >>> x = torch.randn(2, 1, 8)
        >>> torch.allclose(wide(x), torch.stack([m(x) for m in teachers]), atol=1e-5)
        True
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.n = len(models)
        try:
            # a weightless copy: the graph keeps its module, and the teachers are not kept
            graph = fx.symbolic_trace(copy.deepcopy(models[0]).to("meta")).graph
        except Exception as exc:
            raise WideUnsupported(f"torch.fx cannot trace the model: {exc}") from exc
        self._modules = [dict(m.named_modules()) for m in models]
        self._models = models
        self.weights: dict[str, Tensor] = {}
        folded = foldable_batchnorms(graph, self._modules[0])
        last_use = {used: node for node in graph.nodes for used in node.all_input_nodes}
        self._steps: list[tuple[Node, Callable[..., Any], list[Node]]] = []
        for node in graph.nodes:
            done = [used for used in node.all_input_nodes if last_use[used] is node]
            if node.op in ("placeholder", "output"):
                self._steps.append((node, no_step, done))
            elif node in folded:
                self._steps.append((node, identity, done))
            elif is_relu(node, self._modules[0]) and sole_use(node):
                self._steps.append((node, relu_in_place, done))
            else:
                self._steps.append((node, self._compile(node, folded), done))
        self._models, self._modules = (), []  # compiled: the teachers are not kept
        #: Batch rows per chunk (None until the first call has timed the choices).
        self.rows: int | None = None

    def to(self, device: torch.device | str) -> WideEnsemble:
        """Move the wide weights to ``device`` (in place); returns self."""
        self.weights = {k: v.to(device) for k, v in self.weights.items()}
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Every teacher's output for the same input: each tensor in it stacked as ``[N, ...]``.

        A model that returns a tensor gives one ``[N, ...]`` tensor; a tuple, list or dict of
        tensors gives the same structure of stacked tensors.

        The batch may run in chunks: activations N times wider than one teacher's can outgrow
        the CPU's caches and the allocator's reuse (each new large tensor then costs page
        faults; measured here: the wide demo CNN at batch 128 took 2x longer than in chunks of
        32). The first call times the chunk counts in :data:`CHUNKS` and keeps the fastest.
        """
        batch = batch_size(args, kwargs)
        if batch is None:
            return self._run(args, kwargs)
        if self.rows is None:
            ways = {
                str(k): partial(self._chunked, args, kwargs, batch, -(-batch // k)) for k in CHUNKS
            }
            self.rows = -(-batch // int(fastest(**ways)))
        return self._chunked(args, kwargs, batch, self.rows)

    def _chunked(self, args: tuple[Any, ...], kwargs: dict[str, Any], batch: int, rows: int) -> Any:
        """:meth:`_run` on batch chunks of ``rows`` samples, outputs joined along the batch."""
        if rows >= batch:
            return self._run(args, kwargs)
        outs = [
            self._run(*batch_rows(args, kwargs, batch, start, rows))
            for start in range(0, batch, rows)
        ]
        return join_batches(outs)

    def _run(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        env: dict[Node, Any] = {}
        positional: Iterator[Any] = iter(args)
        for node, step, done in self._steps:
            if node.op == "placeholder":
                env[node] = bind(node, positional, kwargs)
            elif node.op == "output":
                return self._outputs(map_arg(node.args[0], env.__getitem__))
            else:
                a = map_arg(node.args, env.__getitem__)
                kw = map_arg(node.kwargs, env.__getitem__)
                env[node] = step(*a, **kw)
                for used in done:  # free activations after their last use, as eager code does
                    del env[used]
        raise WideUnsupported("the traced model has no output")

    def _outputs(self, out: Any) -> Any:
        if isinstance(out, Value):
            return as_stacked(out, self.n)
        if isinstance(out, (tuple, list)):
            return type(out)(self._outputs(v) for v in out)
        if isinstance(out, dict):
            return {k: self._outputs(v) for k, v in out.items()}
        return out

    # -- compiling one node -----------------------------------------------------------

    def _compile(self, node: Node, folded: Mapping[Node, Node]) -> Callable[..., Any]:
        if node.op == "call_module":
            return self._module_step(node, folded)
        if node.op == "get_attr":
            return self._attribute_step(node)
        target = node.target
        if node.op == "call_method":
            assert isinstance(target, str)
            if target in ELEMENTWISE_METHODS:
                return self._elementwise(
                    method(target.rstrip("_") if target != "float" else target)
                )
            if target in BINARY_METHODS:
                return self._binary(method(target.rstrip("_")))
            if target in REDUCE_METHODS:
                return self._reduce(method(target), target in REDUCING)
            if target in ("view", "reshape"):
                return self._reshape
            if target == "flatten":
                return self._flatten
            if target in ("unsqueeze", "transpose"):
                return self._dims_method(target)
            if target in ("size", "dim"):
                return self._size_method(target)
        elif node.op == "call_function":
            if target in ELEMENTWISE_FUNCTIONS:
                return self._elementwise(target)
            if target in BINARY_FUNCTIONS:
                return self._binary(OUT_OF_PLACE.get(target, target))
            if target in REDUCE_FUNCTIONS:
                return self._reduce(target, target in REDUCING)
            if target in POOL_FUNCTIONS:
                return self._pool(target)
            if target is torch.flatten:
                return self._flatten
            if target is torch.reshape:
                return lambda x, shape: self._reshape(x, *shape)
            if target is getattr:
                return self._getattr
            if target is operator.getitem:
                return self._plain(operator.getitem)
        raise WideUnsupported(f"{node.op} {name_of(target)!r} is not supported by the wide rewrite")

    def _module_step(self, node: Node, folded: Mapping[Node, Node]) -> Callable[..., Any]:
        assert isinstance(node.target, str)
        first = self._modules[0][node.target]
        mods = [m[node.target] for m in self._modules]
        if type(first) in CONV:
            bn = next((b for b, conv in folded.items() if conv is node), None)
            bns = None if bn is None else [m[str(bn.target)] for m in self._modules]
            return self._conv(node.target, mods, bns)
        if type(first) is nn.Linear:
            return self._linear(node.target, mods)
        if isinstance(first, BATCHNORM) and is_eval_batchnorm(first):
            scale, shift = zip(*(bn_affine(m) for m in mods), strict=True)
            return self._affine(node.target, torch.stack(scale), torch.stack(shift))
        if type(first) is nn.LayerNorm:
            return self._layer_norm(node.target, mods)
        if isinstance(first, ELEMENTWISE_MODULES + POOL_MODULES) and not has_state(first):
            if isinstance(first, POOL_MODULES):
                return self._pool(first)
            return self._elementwise(first)
        if type(first) is nn.Flatten:
            return lambda x: self._flatten(x, first.start_dim, first.end_dim)
        raise WideUnsupported(f"layer {node.target!r} ({type(first).__name__}) is not supported")

    def _conv(
        self, key: str, convs: list[nn.Module], bns: list[nn.Module] | None
    ) -> Callable[[Value], Value]:
        c = convs[0]
        assert isinstance(c, nn.modules.conv._ConvNd)
        if c.padding_mode != "zeros":
            raise WideUnsupported(f"layer {key!r}: padding_mode {c.padding_mode!r}")
        weights, biases = [], []
        for i, conv in enumerate(convs):
            assert isinstance(conv, nn.modules.conv._ConvNd)
            w = conv.weight.detach()
            b = conv.bias.detach() if conv.bias is not None else w.new_zeros(w.shape[0])
            if bns is not None:
                scale, shift = bn_affine(bns[i])
                w = w * scale.view(-1, *[1] * (w.dim() - 1))
                b = b * scale + shift
            weights.append(w)
            biases.append(b)
        self.weights[key + ".w"] = torch.cat(weights)
        self.weights[key + ".b"] = torch.cat(biases)
        conv_fn = CONV[type(c)]
        groups, n, opts = c.groups, self.n, (c.stride, c.padding, c.dilation)

        unfoldable = isinstance(c, (nn.Conv1d, nn.Conv2d)) and not isinstance(c.padding, str)
        shared_way: list[str] = [] if unfoldable else ["conv"]

        def conv_step(x: Value) -> Value:
            w, b = self.weights[key + ".w"], self.weights[key + ".b"]
            if x.layout != SHARED or groups != 1:
                return Value(conv_fn(as_wide(x, n), w, b, *opts, groups * n), WIDE)
            # shared input: one convolution with N times the outputs. oneDNN slows down sharply
            # with many outputs on few input channels (measured here: 1 -> 160 channels took 8x
            # 1 -> 32); im2col + one matmul does not, so the first call times both ways
            if not shared_way:
                shared_way.append(
                    fastest(
                        conv=lambda: conv_fn(x.t, w, b, *opts, 1),
                        im2col=lambda: im2col_conv(x.t, w, b, *opts),  # type: ignore[arg-type]  # int padding here
                    )
                )
            if shared_way[0] == "im2col":
                return Value(im2col_conv(x.t, w, b, *opts), WIDE)  # type: ignore[arg-type]
            return Value(conv_fn(x.t, w, b, *opts, 1), WIDE)

        return conv_step

    def _linear(self, key: str, mods: list[nn.Module]) -> Callable[[Value], Value]:
        w = torch.stack([param(m, "weight") for m in mods])  # [N, out, in]
        n, out = self.n, w.shape[1]
        self.weights[key + ".w"] = w.reshape(n * out, -1)
        self.weights[key + ".wt"] = w.transpose(1, 2).contiguous()
        has_bias = mods[0].bias is not None
        if has_bias:
            self.weights[key + ".b"] = torch.stack([param(m, "bias") for m in mods])

        def linear_step(x: Value) -> Value:
            b = self.weights[key + ".b"] if has_bias else None
            if x.layout == SHARED:
                y = F.linear(x.t, self.weights[key + ".w"], None if b is None else b.flatten())
                return Value(y.view(*y.shape[:-1], n, out).movedim(-2, 0), STACKED)
            s = as_stacked(x, n)
            rows = s.reshape(n, -1, s.shape[-1])
            wt = self.weights[key + ".wt"]
            y = torch.bmm(rows, wt) if b is None else torch.baddbmm(b.unsqueeze(1), rows, wt)
            return Value(y.reshape(*s.shape[:-1], out), STACKED)

        return linear_step

    def _affine(self, key: str, scale: Tensor, shift: Tensor) -> Callable[[Value], Value]:
        """Per-channel ``x * scale + shift`` (eval BatchNorm) with per-teacher [N, C] factors."""
        self.weights[key + ".scale"], self.weights[key + ".shift"] = scale, shift
        n = self.n

        def affine_step(x: Value) -> Value:
            s, h = self.weights[key + ".scale"], self.weights[key + ".shift"]
            if x.layout == WIDE:
                shape = (1, -1) + (1,) * (x.t.dim() - 2)
                return Value(torch.addcmul(h.view(shape), x.t, s.view(shape)), WIDE)
            t = as_stacked(x, n)
            shape = (n, 1, -1) + (1,) * (t.dim() - 3)
            return Value(torch.addcmul(h.view(shape), t, s.view(shape)), STACKED)

        return affine_step

    def _layer_norm(self, key: str, mods: list[nn.Module]) -> Callable[[Value], Value]:
        first = mods[0]
        assert isinstance(first, nn.LayerNorm)
        shape, eps, n = tuple(first.normalized_shape), first.eps, self.n
        if first.elementwise_affine:
            self.weights[key + ".w"] = torch.stack([param(m, "weight") for m in mods])
            if first.bias is not None:
                self.weights[key + ".b"] = torch.stack([param(m, "bias") for m in mods])

        def layer_norm_step(x: Value) -> Value:
            layout = SHARED if x.layout == SHARED else STACKED
            y = F.layer_norm(x.t if layout == SHARED else as_stacked(x, n), shape, None, None, eps)
            w, b = self.weights.get(key + ".w"), self.weights.get(key + ".b")
            if w is None:
                return Value(y, layout)
            if layout == SHARED:
                y = y.unsqueeze(0)
            view = (n,) + (1,) * (y.dim() - 1 - len(shape)) + shape
            y = y * w.view(view) if b is None else torch.addcmul(b.view(view), y, w.view(view))
            return Value(y, STACKED)

        return layer_norm_step

    def _attribute_step(self, node: Node) -> Callable[[], Value]:
        key = str(node.target)
        values = [attribute(m, key) for m in self._models]
        if not all(isinstance(v, Tensor) for v in values):
            raise WideUnsupported(f"attribute {key!r} is not a tensor")
        self.weights[key] = torch.stack([v.detach() for v in values])
        return lambda: Value(self.weights[key], STACKED)

    # -- layout-generic operations ----------------------------------------------------

    def _elementwise(self, fn: Callable[..., Tensor]) -> Callable[..., Value]:
        def elementwise_step(x: Value, *args: Any, **kwargs: Any) -> Value:
            return Value(fn(x.t, *args, **kwargs), x.layout)

        return elementwise_step

    def _pool(self, fn: Callable[..., Tensor]) -> Callable[..., Value]:
        def pool_step(x: Value, *args: Any, **kwargs: Any) -> Value:
            layout = SHARED if x.layout == SHARED else WIDE
            t = x.t if layout == SHARED else as_wide(x, self.n)
            return Value(fn(t, *args, **kwargs), layout)

        return pool_step

    def _binary(self, fn: Callable[..., Tensor]) -> Callable[..., Value]:
        n = self.n

        def binary_step(*args: Any, **kwargs: Any) -> Value:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Value)]
            layouts = {a.layout for a in tensors}
            if layouts == {SHARED} or (
                len(layouts) == 1  # all wide with one channel count, or all stacked of one rank
                and len({(a.t.dim(), a.t.shape[1] if a.layout == WIDE else 0) for a in tensors})
                == 1
            ):
                out = fn(*map(unwrap, args), **{k: unwrap(v) for k, v in kwargs.items()})
                return Value(out, layouts.pop())
            rank = max(teacher_rank(a) for a in tensors)

            def stacked(a: Any) -> Any:
                if not isinstance(a, Value) or a.layout == SHARED:
                    return unwrap(a)
                s = as_stacked(a, n)
                return s.reshape(n, *[1] * (rank - teacher_rank(a)), *s.shape[1:])

            out = fn(*map(stacked, args), **{k: stacked(v) for k, v in kwargs.items()})
            return Value(out, STACKED)

        return binary_step

    def _reduce(self, fn: Callable[..., Tensor], reduces: bool) -> Callable[..., Value]:
        """mean/sum/amax (``reduces``) or softmax/log_softmax over per-teacher dims."""

        def reduce_step(x: Value, *args: Any, **kwargs: Any) -> Value:
            if x.layout == SHARED:
                return Value(fn(x.t, *args, **kwargs), SHARED)
            dim = kwargs.pop("dim") if "dim" in kwargs else (args[0] if args else None)
            rest, rank = args[1:], teacher_rank(x)
            if dim is None and not reduces:
                raise WideUnsupported(f"{name_of(fn)} without dim is not supported")
            if dim is None:
                dim = tuple(range(rank))
            if isinstance(dim, (tuple, list)):
                dim = type(dim)(d % rank for d in dim)
                dims = set(dim)
            else:
                dim %= rank
                dims = {dim}
            keep = kwargs.get("keepdim", rest[0] if rest and isinstance(rest[0], bool) else False)
            left = rank if keep or not reduces else rank - len(dims)
            if x.layout == WIDE and not dims & {0, 1} and left >= 2:
                return Value(fn(x.t, dim, *rest, **kwargs), WIDE)
            return Value(fn(as_stacked(x, self.n), shift_dims(dim), *rest, **kwargs), STACKED)

        return reduce_step

    def _flatten(self, x: Value, start_dim: int = 0, end_dim: int = -1) -> Value:
        if x.layout == SHARED:
            return Value(x.t.flatten(start_dim, end_dim), SHARED)
        rank = teacher_rank(x)
        if x.layout == WIDE and start_dim == 1 and end_dim % rank == rank - 1:
            return Value(x.t.reshape(x.t.shape[0], self.n, -1).transpose(0, 1), STACKED)
        return Value(
            as_stacked(x, self.n).flatten(shift_dims(start_dim), shift_dims(end_dim)), STACKED
        )

    def _reshape(self, x: Value, *shape: Any) -> Value:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        if x.layout == SHARED:
            return Value(x.t.reshape(shape), SHARED)
        if x.layout == WIDE and len(shape) == 2 and shape[0] == x.t.shape[0] and shape[1] == -1:
            return self._flatten(x, 1)
        return Value(as_stacked(x, self.n).reshape(self.n, *shape), STACKED)

    def _dims_method(self, name: str) -> Callable[..., Value]:
        """unsqueeze / transpose: their int arguments are dims, shifted past the teacher dim."""

        def dims_step(x: Value, *dims: int) -> Value:
            if x.layout == SHARED:
                return Value(getattr(x.t, name)(*dims), SHARED)
            return Value(getattr(as_stacked(x, self.n), name)(*map(shift_dims, dims)), STACKED)

        return dims_step

    def _getattr(self, x: Any, name: str) -> Any:
        if not isinstance(x, Value):
            return getattr(x, name)
        if name not in SIZE_ATTRIBUTES:
            raise WideUnsupported(f"tensor attribute {name!r} is not supported")
        if name == "shape":
            return teacher_size(x, self.n)
        return teacher_rank(x) if name == "ndim" else getattr(x.t, name)

    def _size_method(self, name: str) -> Callable[..., Any]:
        def size_step(x: Value, *args: Any) -> Any:
            if name == "dim":
                return teacher_rank(x)
            size = teacher_size(x, self.n)
            return size[args[0]] if args else size

        return size_step

    @staticmethod
    def _plain(fn: Callable[..., Any]) -> Callable[..., Any]:
        def plain_step(*args: Any, **kwargs: Any) -> Any:
            if any(isinstance(a, Value) for a in (*args, *kwargs.values())):
                raise WideUnsupported(f"{name_of(fn)} on a tensor is not supported")
            return fn(*args, **kwargs)

        return plain_step
