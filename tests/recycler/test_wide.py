"""The wide rewrite of a fused ensemble: equal to the loop for every supported pattern, falls
back to vmap (with one warning) for what it does not support or gets wrong, and the teacher
pool uses it on the CPU."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from _fused_models import N, cnn, mlp, teachers
from torch import Tensor, nn

from recycler.demo.task import ConvNet1D
from recycler.fused import FusedEnsemble, WideEnsemble, WideUnsupported, loop_forward
from recycler.fused._kernels import CHUNKS, im2col_conv


class ResBlockNet(nn.Module):
    """Residual block, in-place adds, global mean pooling and a view(size(0), -1) head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 6)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn0(self.stem(x)))
        h2 = self.bn1(self.conv1(h))
        h2 += h
        h = torch.relu(h2)
        h = self.conv2(h).relu().mean((2, 3))
        out: Tensor = self.head(h.view(h.size(0), -1))
        return out


class Depthwise1d(nn.Module):
    """A grouped first convolution on the shared input, a scale parameter, LayerNorm, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv1d(4, 8, 3, padding=1, groups=4)
        self.pool = nn.AdaptiveAvgPool1d(5)
        self.norm = nn.LayerNorm(40)
        self.scale = nn.Parameter(torch.rand(1) + 0.5)
        self.out = nn.Linear(40, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(F.gelu(self.dw(x))).flatten(1)
        logits: Tensor = self.out(self.norm(h)) * self.scale
        return torch.log_softmax(logits, dim=-1)


class TokenMlp(nn.Module):
    """Token logits [B, T, V] with a LayerNorm on the shared input (a transformer's tail)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(12)
        self.up = nn.Linear(12, 24)
        self.down = nn.Linear(24, 9)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.down(F.silu(self.up(self.norm(x)))) + 0.5
        return out


class Concat(nn.Module):
    """torch.cat of two branches: outside the wide rewrite's set."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


class OptionalMask(nn.Module):
    """``mask is not None`` is always true while tracing, so the trace assumes a mask."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 4)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h: Tensor = self.lin(x)
        if mask is not None:
            h = h * mask.unsqueeze(-1)
        return h


CASES: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("demo-cnn", lambda: ConvNet1D(16), (32, 1, 40)),
    ("cnn-batchnorm-pools", cnn, (16, 3, 12, 12)),
    ("mlp-batchnorm1d", mlp, (16, 20)),
    ("resnet-block", ResBlockNet, (6, 3, 8, 8)),
    ("depthwise-layernorm", Depthwise1d, (7, 4, 10)),
    ("token-logits", TokenMlp, (3, 5, 12)),
    (
        "conv3d",
        lambda: nn.Sequential(nn.Conv3d(2, 4, 3), nn.BatchNorm3d(4), nn.Flatten()),
        (3, 2, 4, 4, 4),
    ),
]


@pytest.mark.parametrize(("name", "build", "shape"), CASES, ids=[c[0] for c in CASES])
def test_wide_equals_the_loop(
    name: str, build: Callable[[], nn.Module], shape: tuple[int, ...]
) -> None:
    models = teachers(build)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        ens = FusedEnsemble(models)
        assert ens.kind == "wide", ens.why_not_wide
        fused = ens(x)
        again = ens(x)
    loop = loop_forward(models, x)
    assert ens.kind == "wide" and ens.why_not_wide == ""
    assert fused.shape == loop.shape and fused.shape[:2] == (N, shape[0])
    assert (fused - loop).abs().max() < 1e-5
    assert torch.equal(fused, again)
    assert not torch.allclose(fused[0], fused[1])  # the teachers really differ
    assert all(not m.training for m in models)


def test_chunked_batch_equals_one_pass_and_a_chunk_size_is_kept() -> None:
    models = teachers(lambda: ConvNet1D(16))
    wide = WideEnsemble(models)
    x = torch.randn(30, 1, 40)
    with torch.inference_mode():
        whole = wide._chunked((x,), {}, 30, 30)
        for rows in (7, 8, 15, 29):  # uneven chunks included
            assert (wide._chunked((x,), {}, 30, rows) - whole).abs().max() < 1e-6
        assert wide.rows is None
        wide(x)
    assert wide.rows in {-(-30 // k) for k in CHUNKS}


def test_unsupported_operations_use_vmap_and_say_why() -> None:
    models = teachers(Concat)
    x = torch.randn(5, 4)
    ens = FusedEnsemble(models)
    assert ens.kind == "vmap"
    assert "'cat' is not supported" in ens.why_not_wide
    assert (ens(x) - loop_forward(models, x)).abs().max() < 1e-6
    with pytest.raises(ValueError, match=r"cannot rewrite the teachers as one wide net: .*'cat'"):
        FusedEnsemble(models, strategy="wide")
    with pytest.raises(WideUnsupported, match=r"torch\.fx cannot trace the model"):
        WideEnsemble(teachers(ControlFlow))
    with pytest.raises(ValueError, match="strategy must be 'auto', 'wide' or 'vmap', got 'fast'"):
        FusedEnsemble(models, strategy="fast")
    assert FusedEnsemble(teachers(mlp), strategy="vmap").kind == "vmap"


class ControlFlow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.lin(x)
        return out if out.sum() > 0 else -out


def test_a_trace_that_does_not_fit_a_later_call_falls_back_once() -> None:
    models = teachers(OptionalMask)
    x, mask = torch.randn(4, 3, 6), (torch.rand(4, 3) > 0.5).float()
    ens = FusedEnsemble(models)
    assert ens.kind == "wide"
    assert (ens(x, mask) - loop_forward(models, (x, mask))).abs().max() < 1e-6
    with pytest.warns(RuntimeWarning, match="wide fused ensemble failed .*; using vmap") as got:
        without = ens(x)  # the trace multiplies by a mask that is not there
    assert len(got) == 1 and ens.kind == "vmap"
    assert (without - loop_forward(models, x)).abs().max() < 1e-6


def test_a_wrong_wide_result_is_caught_by_the_first_call_check() -> None:
    models = teachers(lambda: ConvNet1D(8))
    x = torch.randn(8, 1, 40)
    ens = FusedEnsemble(models)
    assert ens._wide is not None
    ens._wide.weights["head.b"] = ens._wide.weights["head.b"] + 1.0  # a rewrite bug, simulated
    with pytest.warns(RuntimeWarning, match="differs from the teachers' by up to 1"):
        out = ens(x)
    assert ens.kind == "vmap"
    assert (out - loop_forward(models, x)).abs().max() < 1e-5
    strict = FusedEnsemble(models, strategy="wide")
    assert strict._wide is not None
    strict._wide.weights["head.b"] = strict._wide.weights["head.b"] + 1.0
    with pytest.raises(WideUnsupported, match="differs from the teachers'"):
        strict(x)


@pytest.mark.parametrize(
    ("conv", "shape"),
    [
        (nn.Conv1d(1, 12, 5, padding=2), (4, 1, 40)),
        (nn.Conv1d(3, 6, 3, stride=2, padding=1, dilation=2), (4, 3, 17)),
        (nn.Conv2d(3, 10, 3, padding=1), (2, 3, 9, 9)),
        (nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), (2, 2, 8, 7)),
    ],
    ids=["1d", "1d-strided-dilated", "2d", "2d-asymmetric"],
)
def test_im2col_convolution_equals_the_convolution(conv: nn.Module, shape: tuple[int, ...]) -> None:
    assert isinstance(conv, (nn.Conv1d, nn.Conv2d)) and conv.bias is not None
    x = torch.randn(*shape)
    with torch.no_grad():
        got = im2col_conv(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
        assert got.shape == conv(x).shape
        assert (got - conv(x)).abs().max() < 1e-5
