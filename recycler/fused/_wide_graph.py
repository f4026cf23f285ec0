"""What the wide rewrite reads from a traced model: supported operations and graph patterns."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.node import Node

from ._layout import SHARED, WIDE, Value

CONV: dict[type, Callable[..., Tensor]] = {
    nn.Conv1d: F.conv1d,
    nn.Conv2d: F.conv2d,
    nn.Conv3d: F.conv3d,
}
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
POOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
}  # fmt: skip
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)  # fmt: skip
ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.mish, F.softplus, F.dropout, torch.relu, torch.sigmoid, torch.tanh,
    torch.exp, torch.abs, torch.clamp, operator.neg,
}  # fmt: skip
ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "tanh", "exp", "abs", "neg", "clamp", "clamp_min",
    "contiguous", "float",
}  # fmt: skip
BINARY_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul,
    torch.add, torch.sub, torch.mul, torch.div,
}  # fmt: skip
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.softmax, torch.log_softmax}
REDUCE_FUNCTIONS |= {F.softmax, F.log_softmax}
REDUCE_METHODS = {"mean", "sum", "amax", "softmax", "log_softmax"}
REDUCING: set[object] = {torch.mean, torch.sum, torch.amax, "mean", "sum", "amax"}
OUT_OF_PLACE = {operator.iadd: operator.add, operator.imul: operator.mul}
SIZE_ATTRIBUTES = {"shape", "ndim", "dtype", "device"}


class WideUnsupported(Exception):
    """The model uses something the wide rewrite does not handle (the message says what)."""


def is_relu(node: Node, modules: Mapping[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules[str(node.target)]) is nn.ReLU
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu) and not node.kwargs and len(node.args) == 1
    return node.op == "call_method" and node.target == "relu" and len(node.args) == 1


def sole_use(node: Node) -> bool:
    """Whether ``node`` is the only reader of its input, a computed activation."""
    src = node.args[0] if node.args else None
    return (
        isinstance(src, Node)
        and src.op in ("call_module", "call_function", "call_method")
        and len(src.users) == 1
    )


def relu_in_place(x: Value) -> Value:
    """ReLU, in place on a wide activation nobody else reads (one large allocation fewer)."""
    return Value(torch.relu_(x.t), WIDE) if x.layout == WIDE else Value(torch.relu(x.t), x.layout)


def no_step(*_: Any) -> None:
    return None


def identity(x: Value) -> Value:
    return x


def method(name: str) -> Callable[..., Tensor]:
    return lambda x, *a, **k: getattr(x, name)(*a, **k)


def name_of(target: Any) -> str:
    return getattr(target, "__name__", str(target))


def bind(node: Node, positional: Iterator[Any], kwargs: Mapping[str, Any]) -> Any:
    name = str(node.target)
    if name.startswith("*"):
        raise WideUnsupported(f"argument {name!r}: *args/**kwargs are not supported")
    value = next(positional, _MISSING)
    if value is _MISSING:
        if name in kwargs:
            value = kwargs[name]
        elif node.args:
            value = node.args[0]
        else:
            raise TypeError(f"the teachers' forward() is missing the argument {name!r}")
    return Value(value, SHARED) if isinstance(value, Tensor) else value


_MISSING = object()


def attribute(model: nn.Module, path: str) -> Any:
    value: Any = model
    for part in path.split("."):
        value = getattr(value, part)
    return value


def param(module: nn.Module, name: str) -> Tensor:
    value = getattr(module, name)
    assert isinstance(value, Tensor)
    return value.detach()


def has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def is_eval_batchnorm(bn: nn.Module) -> bool:
    return (
        isinstance(bn, BATCHNORM)
        and not bn.training
        and bn.track_running_stats
        and bn.running_mean is not None
    )


def bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval BatchNorm as ``x * scale + shift``."""
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None
    scale = torch.rsqrt(var.detach() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach()
    shift = -mean.detach() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach()
    return scale, shift


def foldable_batchnorms(graph: fx.Graph, modules: Mapping[str, nn.Module]) -> dict[Node, Node]:
    """Eval BatchNorm nodes whose input is a convolution used by nothing else: bn -> conv."""
    out: dict[Node, Node] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not is_eval_batchnorm(modules[str(node.target)]):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, Node)
            and src.op == "call_module"
            and type(modules[str(src.target)]) in CONV
            and len(src.users) == 1
            and len(node.args) == 1
            and not node.kwargs
        ):
            out[node] = src
    return out
