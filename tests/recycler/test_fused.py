"""Fused ensemble: equal to the loop (CNN with BatchNorm, MLP, tuple and keyword inputs).

Timings are not asserted (they depend on the machine); print them with
``python tests/recycler/test_fused.py``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _fused_models import N, cnn, mlp, teachers
from torch import Tensor, nn

from recycler.fused import FusedEnsemble, call_args, can_fuse, loop_forward, why_not_fusable


class TwoInputs(nn.Module):
    """Takes a tensor, an optional mask and a flag, as a transformer-style model does."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 12)
        self.head = nn.Linear(12, 5)

    def forward(self, x: Tensor, mask: Tensor | None = None, *, double: bool = False) -> Tensor:
        h = torch.tanh(self.embed(x))
        if mask is not None:
            h = h * mask.unsqueeze(-1)
        out: Tensor = self.head(h)
        return out * 2 if double else out


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": self.lin(x)}


@pytest.mark.parametrize(
    ("build", "shape", "classes"),
    [(cnn, (16, 3, 12, 12), 10), (mlp, (16, 20), 7)],
    ids=["cnn-batchnorm", "mlp"],
)
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_fused_equals_loop(
    build: Callable[[], nn.Module], shape: tuple[int, ...], classes: int, chunk_size: int | None
) -> None:
    models = teachers(build)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    ens = FusedEnsemble(models, chunk_size=chunk_size)
    fused, loop = ens(x), loop_forward(models, (x,))
    assert len(ens) == N
    assert fused.shape == loop.shape == (N, shape[0], classes)
    assert torch.allclose(fused, loop, rtol=1e-5, atol=1e-5)
    assert (fused - loop).abs().max() < 1e-5
    for i, m in enumerate(models):  # row i is teacher i
        with torch.no_grad():
            assert torch.allclose(fused[i], m(x), atol=1e-5)
    assert not torch.allclose(fused[0], fused[1])  # the teachers really differ


def test_tuple_and_keyword_inputs() -> None:
    models = teachers(TwoInputs)
    x = torch.randn(4, 9, 6)
    mask = (torch.rand(4, 9) > 0.3).float()
    ens = FusedEnsemble(models)
    for args, kwargs in [((x,), {}), ((x, mask), {}), ((), {"x": x, "mask": mask, "double": True})]:
        fused, loop = ens(*args, **kwargs), loop_forward(models, args, kwargs)
        assert fused.shape == (N, 4, 9, 5)
        assert torch.allclose(fused, loop, atol=1e-5)
    for inputs in [x, (x, mask), [x, mask], {"x": x, "mask": mask}]:  # as the student got them
        args, kwargs = call_args(inputs)
        assert torch.allclose(ens.run(inputs), loop_forward(models, args, kwargs), atol=1e-5)
    assert torch.allclose(ens(x, mask, double=True), 2 * ens(x, mask), atol=1e-6)
    assert call_args(x) == ((x,), {})
    assert call_args((x, mask)) == ((x, mask), {})
    assert call_args([x]) == ((x,), {})
    assert call_args({"x": x}) == ((), {"x": x})


class Scores(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.lin(x), x


@pytest.mark.parametrize("build", [DictOut, Scores], ids=["dict-logits", "tuple"])
def test_non_tensor_outputs_give_their_logits(build: Callable[[], nn.Module]) -> None:
    models = teachers(build, n=3)
    x = torch.randn(5, 4)
    fused, loop = FusedEnsemble(models)(x), loop_forward(models, x)
    assert fused.shape == loop.shape == (3, 5, 3)
    assert torch.allclose(fused, loop, atol=1e-6)


def test_output_picker() -> None:
    models = teachers(Scores, n=3)
    x = torch.randn(5, 4)

    def second(out: tuple[Tensor, Tensor]) -> Tensor:
        return out[1]

    assert torch.equal(FusedEnsemble(models, output=second)(x)[2], x)
    assert torch.equal(loop_forward(models, x, output=second)[0], x)

    def nothing(out: object) -> Tensor:
        return None  # type: ignore[return-value]

    with pytest.raises(TypeError, match="returned NoneType, not logits; pass output="):
        loop_forward(models, x, output=nothing)
    with pytest.raises(TypeError, match="returned NoneType"):
        FusedEnsemble(models, output=nothing)(x)


def test_weights_are_stacked_once_and_teachers_untouched() -> None:
    models = teachers(mlp)
    x = torch.randn(8, 20)
    ens = FusedEnsemble(models)
    before = ens(x).clone()
    with torch.no_grad():
        for p in models[0].parameters():
            p.add_(1.0)
    assert torch.equal(ens(x), before)  # a copy: later changes to a teacher do not leak in
    assert not torch.allclose(loop_forward(models, x)[0], before[0])
    assert all(not m.training for m in models)
    assert all(p.grad is None for m in models for p in m.parameters())
    assert not ens(x).requires_grad and ens(x).is_inference()
    assert not loop_forward(models, x).requires_grad
    assert repr(ens) == "FusedEnsemble(5 x Sequential)"
    assert ens.to("cpu") is ens


def test_single_teacher() -> None:
    models = teachers(cnn, n=1)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(FusedEnsemble(models)(x), loop_forward(models, x), atol=1e-6)


def test_can_fuse() -> None:
    same = teachers(cnn, n=3)
    assert can_fuse(same)
    cases: list[tuple[list[nn.Module], str]] = [
        ([], "no models"),
        ([*same, cnn(width=4).eval()], "model 3 differs from model 0 in its parameters"),
        ([*same, cnn(stride=2).eval()], "model 3 differs from model 0 in its layers' settings"),
        ([*same[:2], cnn()], "model 2 is in training mode"),
        ([*same[:1], nn.Linear(2, 2).eval()], "model 1 is a Linear, model 0 a Sequential"),
        ([*same[:1], cnn().double().eval()], "model 1 differs .* dtypes"),
        ([mlp().eval(), mlp().eval(), _no_buffers()], "model 2 differs .* buffers"),
    ]
    for models, why in cases:
        assert not can_fuse(models)
        reason = why_not_fusable(models)
        assert reason is not None
        assert re.search(why, reason), (why, reason)
        if models:
            with pytest.raises(ValueError, match="cannot fuse these teachers"):
                FusedEnsemble(models)
    with pytest.raises(ValueError, match="at least one model"):
        loop_forward([], torch.zeros(1))


def _no_buffers() -> nn.Module:
    """The mlp's layers, but its BatchNorm keeps no running statistics (no buffers)."""
    bn = nn.BatchNorm1d(32, track_running_stats=False)
    return nn.Sequential(nn.Linear(20, 32), bn, nn.GELU(), nn.Linear(32, 7)).eval()


# ---------------------------------------------------------------- timing (not a test)


def _interleaved_ms(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median ms per call of each fn, timed round-robin so load changes hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[reps // 2] * 1e3 for name, t in times.items()}


def _bench(name: str, build: Callable[[], nn.Module], shape: tuple[int, ...], reps: int) -> None:
    models = teachers(build)
    x = torch.randn(*shape)
    fused, by_one = FusedEnsemble(models), FusedEnsemble(models, chunk_size=1)
    fns: dict[str, Callable[[], Any]] = {
        "one": lambda: loop_forward(models[:1], x),
        "loop-5": lambda: loop_forward(models, x),
        "fused-5": lambda: fused(x),
        "fused-5 chunk 1": lambda: by_one(x),
    }
    if x.dim() == 4:
        xcl = x.contiguous(memory_format=torch.channels_last)
        fns["loop-5 channels_last"] = lambda: loop_forward(models, xcl)
    row = _interleaved_ms(fns, reps)
    cells = "  ".join(f"{k} {v:.2f}" for k, v in row.items())
    print(f"{name:4s} {cells} ms; fused/loop {row['fused-5'] / row['loop-5']:.2f}")


def benchmark(batch: int = 128, reps: int = 20) -> None:
    """Median ms per call for 5 teachers on the CPU: one teacher, the loop, fused, fused by 1.

    For the CNN also the loop on a channels_last input (oneDNN's preferred layout).
    """
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}")
    _bench("cnn", lambda: cnn(width=16), (batch, 3, 32, 32), reps)
    _bench(
        "mlp",
        lambda: nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)),
        (batch, 64),
        reps,
    )


if __name__ == "__main__":
    benchmark(batch=int(sys.argv[1]) if len(sys.argv) > 1 else 128)
