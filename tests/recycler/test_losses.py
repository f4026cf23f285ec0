"""KD losses: a float64 reference, gradients to the student only, errors, and stability."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from recycler import losses
from recycler.errors import ConfigError
from recycler.losses import (
    KDTerm,
    average_teachers,
    combine,
    get_loss,
    kd_loss,
    loss_names,
    register_loss,
    standardize_logits,
)

F64 = NDArray[np.float64]


# ---------------------------------------------------------------- float64 reference (numpy, loops)


def _ref_rows(logits: F64, mask: NDArray[np.bool_] | None) -> list[F64]:
    if logits.ndim == 2:
        return [logits[i] for i in range(logits.shape[0])]
    rows = []
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if mask is None or mask[b, t]:
                rows.append(logits[b, t])
    return rows


def _ref_standardize(row: F64) -> F64:
    mean = sum(row) / len(row)
    var = sum((x - mean) ** 2 for x in row) / len(row)
    return np.array([(x - mean) / (var + losses.VAR_EPS) ** 0.5 for x in row])


def _ref_log_softmax(row: F64) -> F64:
    peak = max(row)
    log_z = peak + np.log(sum(np.exp(x - peak) for x in row))
    return np.array([x - log_z for x in row])


def reference(
    s: Tensor, t: Tensor, kind: str, tau: float, standardize: bool, mask: Tensor | None
) -> float:
    m = None if mask is None else mask.numpy()
    s_rows = _ref_rows(s.detach().double().numpy(), m)
    t_rows = _ref_rows(t.detach().double().numpy(), m)
    if standardize:
        s_rows = [_ref_standardize(r) for r in s_rows]
        t_rows = [_ref_standardize(r) for r in t_rows]
    if not s_rows:
        return 0.0
    if kind == "mse":
        total = sum(((a - b) ** 2).sum() for a, b in zip(s_rows, t_rows, strict=True))
        return float(total / (len(s_rows) * len(s_rows[0])))
    total = 0.0
    for a, b in zip(s_rows, t_rows, strict=True):
        log_ps, log_pt = _ref_log_softmax(a / tau), _ref_log_softmax(b / tau)
        total += float((np.exp(log_pt) * (log_pt - log_ps)).sum())
    return total / len(s_rows) * tau * tau


def _logits(*shape: int, scale: float, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale + 3.0


CASES = [
    pytest.param((6, 10), None, id="class"),
    pytest.param((3, 5, 7), None, id="token"),
    pytest.param((3, 5, 7), "mask", id="token-masked"),
]


@pytest.mark.parametrize("kind", ["mse", "kl"])
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize(("shape", "masked"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_float64_reference(
    kind: str, standardize: bool, shape: tuple[int, ...], masked: str | None, dtype: torch.dtype
) -> None:
    s = _logits(*shape, scale=2.0, seed=1).to(dtype)
    t = _logits(*shape, scale=15.0, seed=2).to(dtype)
    mask = None
    if masked:
        mask = torch.rand(shape[:-1], generator=torch.Generator().manual_seed(3)) < 0.4
        assert 0 < int(mask.sum()) < mask.numel()
    got = kd_loss(s, t, kind=kind, temperature=2.5, standardize=standardize, mask=mask)
    want = reference(s, t, kind, 2.5, standardize, mask)
    assert got.dim() == 0
    assert got.dtype == dtype
    rel = 1e-10 if dtype == torch.float64 else 2e-5
    assert float(got) == pytest.approx(want, rel=rel, abs=rel)


def test_mask_ignores_unmasked_positions() -> None:
    s, t = _logits(2, 4, 6, scale=1, seed=4), _logits(2, 4, 6, scale=1, seed=5)
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    base = kd_loss(s, t, mask=mask)
    t2 = t.clone()
    t2[~mask] = 1e6
    assert torch.equal(kd_loss(s, t2, mask=mask), base)
    assert torch.allclose(base, kd_loss(s[mask], t[mask]))


@pytest.mark.parametrize("kind", ["mse", "kl"])
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("student_dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_prepared_teacher_gives_the_same_term_bit_for_bit(
    kind: str, standardize: bool, student_dtype: torch.dtype
) -> None:
    """What a cache stores (KDTerm.target, row by row, from a whole batch) changes nothing."""
    s = _logits(4, 6, 9, scale=2.0, seed=11).to(student_dtype).requires_grad_()
    t = _logits(4, 6, 9, scale=15.0, seed=12).half()  # a teacher run under fp16 autocast
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(13)) < 0.5
    term = KDTerm(kind, 2.5, standardize)
    stored = term.target(torch.cat([t, -t]), s)  # prepared with other samples in the batch
    for m in (mask, None):
        want = kd_loss(s, t, kind=kind, temperature=2.5, standardize=standardize, mask=m)
        got = term(s, stored[:4], m, prepared=True)
        assert got.dtype == want.dtype and torch.equal(got, want)
    want_loss = kd_loss(s, t, kind=kind, temperature=2.5, standardize=standardize)
    (want_grad,) = torch.autograd.grad(want_loss, s)
    (got_grad,) = torch.autograd.grad(term(s, stored[:4], prepared=True), s)
    assert torch.equal(got_grad, want_grad)


def test_token_logits_without_mask_are_rows() -> None:
    s, t = _logits(2, 3, 5, scale=1, seed=6), _logits(2, 3, 5, scale=4, seed=7)
    for kind in ("mse", "kl"):
        assert torch.allclose(
            kd_loss(s, t, kind=kind), kd_loss(s.reshape(6, 5), t.reshape(6, 5), kind=kind)
        )


def test_empty_mask_is_zero_and_differentiable() -> None:
    s = torch.randn(2, 3, 5, requires_grad=True)
    for kind in ("mse", "kl"):
        loss = kd_loss(s, torch.randn(2, 3, 5), kind=kind, mask=torch.zeros(2, 3, dtype=torch.bool))
        loss.backward()
        assert float(loss.detach()) == 0.0
        assert s.grad is not None and not s.grad.any()


def test_standardize_logits() -> None:
    x = _logits(6, 10, scale=5, seed=13)
    z = standardize_logits(x)
    var = x.var(dim=1, correction=0, keepdim=True)
    assert torch.allclose(z.mean(dim=1), torch.zeros(6), atol=1e-6)
    assert torch.allclose(z.pow(2).mean(dim=1, keepdim=True), var / (var + losses.VAR_EPS))
    assert torch.equal(standardize_logits(torch.full((2, 4), 5.0)), torch.zeros(2, 4))  # not NaN
    assert torch.allclose(standardize_logits(x, eps=0.0).std(dim=1, correction=0), torch.ones(6))


def test_standardized_target_ignores_teacher_shift_and_large_scale() -> None:
    s, t = _logits(5, 10, scale=1, seed=8), _logits(5, 10, scale=1, seed=9)
    t = standardize_logits(t, eps=0.0)  # std exactly 1 per row
    for kind in ("mse", "kl"):
        big, bigger = kd_loss(s, 20 * t, kind=kind), kd_loss(s, 200 * t - 7, kind=kind)
        assert torch.allclose(kd_loss(s, 20 * t + 50, kind=kind), big, atol=1e-5)
        assert float(bigger) == pytest.approx(float(big), rel=0.01)  # bounded by the scale


def test_kd_gradient_is_bounded_for_a_constant_student() -> None:
    # A zero-initialised head gives constant logits (std 0): the z-score's gradient would be
    # 1/std; the variance floor keeps it of order one.
    s = torch.zeros(16, 10, requires_grad=True)
    t = _logits(16, 10, scale=20, seed=14)
    for kind in ("mse", "kl"):
        s.grad = None
        kd_loss(s, t, kind=kind).backward()
        assert s.grad is not None and torch.isfinite(s.grad).all()
        assert 0 < float(s.grad.abs().max()) < 0.1


def test_kl_is_zero_on_equal_logits_and_mse_scale() -> None:
    x = _logits(4, 6, scale=3, seed=10)
    assert float(kd_loss(x, x.clone(), kind="kl", standardize=False)) == pytest.approx(0, abs=1e-6)
    # mean over all elements: a constant offset d gives exactly d**2
    assert float(kd_loss(x, x + 2.0, standardize=False)) == pytest.approx(4.0)


def test_half_precision_logits_are_computed_in_float32() -> None:
    s, t = _logits(4, 8, scale=2, seed=11), _logits(4, 8, scale=15, seed=12)
    got = kd_loss(s.bfloat16(), t.bfloat16())
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(kd_loss(s.bfloat16().float(), t.bfloat16().float())))


# ---------------------------------------------------------------- gradients reach the student only


def test_teacher_tensor_gets_no_grad() -> None:
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    for kind in ("mse", "kl"):
        for standardize in (True, False):
            s.grad = None
            kd_loss(s, t * 3, kind=kind, standardize=standardize).backward()
            assert t.grad is None
            assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("context", ["inference_mode", "no_grad", "none"])
@pytest.mark.parametrize("standardize", [True, False])
def test_teacher_module_params_get_no_grad_and_stay_in_eval(
    context: str, standardize: bool
) -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    teacher = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 4))
    teacher.eval()
    x = torch.randn(32, 8)
    if context == "inference_mode":
        with torch.inference_mode():
            t = teacher(x)
    elif context == "no_grad":
        with torch.no_grad():
            t = teacher(x)
    else:  # a careless caller: teacher logits carry a graph; kd_loss must detach them
        t = teacher(x)
    task = nn.functional.cross_entropy(student(x), torch.randint(0, 4, (32,)))
    combine(task, kd_loss(student(x), t, standardize=standardize), 0.5).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert not teacher.training


# ---------------------------------------------------------------- registry, errors, helpers


def test_unknown_kind_lists_known_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown KD loss 'l2'.*kl, mse"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), kind="l2")
    with pytest.raises(ValueError, match="mse"):  # ConfigError is a ValueError
        get_loss("nope")


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(2, 4, dtype=torch.bool), r"mask shape \(2, 4\) must equal .* \(2, 3\)"),
        (torch.ones(2, 3, 5, dtype=torch.bool), r"mask shape \(2, 3, 5\)"),
        (torch.ones(2, 3), "mask must be a bool tensor"),
    ],
)
def test_bad_mask_is_a_clear_error(mask: Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kd_loss(torch.zeros(2, 3, 5), torch.zeros(2, 3, 5), mask=mask)


def test_bad_shapes_and_temperature() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\) and teacher logits \(2, 4\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[B, C\] or \[B, T, V\]"):
        kd_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), kind="kl", temperature=0.0)


@pytest.fixture
def scratch_name() -> Iterator[str]:
    yield "test-l1"
    losses._REGISTRY.pop("test-l1", None)


def test_register_loss(scratch_name: str) -> None:
    register_loss(scratch_name, lambda s, t, tau: (s - t).abs().mean())
    assert scratch_name in loss_names()
    got = kd_loss(torch.zeros(2, 3), torch.full((2, 3), 2.0), kind=scratch_name, standardize=False)
    assert float(got) == 2.0
    with pytest.raises(ConfigError, match="already registered"):
        register_loss(scratch_name, lambda s, t, tau: s.sum())
    register_loss(scratch_name, lambda s, t, tau: s.sum() * 0 + 7, replace=True)
    assert float(kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), kind=scratch_name)) == 7.0
    with pytest.raises(ConfigError, match="non-empty"):
        register_loss("", lambda s, t, tau: s.sum())


def test_average_teachers() -> None:
    ts = [_logits(3, 4, scale=1, seed=i) for i in range(3)]
    want = (ts[0].double() + ts[1].double() + ts[2].double()) / 3
    assert torch.allclose(average_teachers(ts).double(), want)
    assert torch.allclose(average_teachers(torch.stack(ts)).double(), want)
    assert torch.equal(average_teachers([ts[0]]), ts[0])
    assert torch.equal(ts[0], _logits(3, 4, scale=1, seed=0))  # inputs not modified in place
    with pytest.raises(ValueError, match="at least one"):
        average_teachers([])
    with pytest.raises(ValueError, match="share one shape"):
        average_teachers([torch.zeros(2, 3), torch.zeros(2, 4)])


# ---------------------------------------------------------------- stability on a real small task

# Digits (shipped with scikit-learn): 1797 8x8 images, 10 classes. A small MLP trained by SGD at
# a sweep-like learning rate (0.1, momentum 0.9). The teacher's logits are scaled to a per-row std
# of 15 (peaks about 50, as a teacher trained long with high LR produces): MSE on these raw logits
# at lambda = 1 collapses the student to chance; the default (standardised) KD does not.

N_TRAIN, EPOCHS, BATCH, LR = 1400, 10, 64, 0.1


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: deterministic and fast for these tiny matmuls; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits

    x_np, y_np = load_digits(return_X_y=True)
    x, y = torch.tensor(x_np / 16.0, dtype=torch.float32), torch.tensor(y_np)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x, y, perm[:N_TRAIN], perm[N_TRAIN:]


def _train(
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    teacher_logits: Tensor | None = None,
    zero_head: bool = False,
    **kd: object,
) -> float:
    x, y, train, test = data
    model = _mlp(0)
    if zero_head:  # a common init for classifier heads: constant logits at the start
        nn.init.zeros_(model[2].weight)
        nn.init.zeros_(model[2].bias)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        order = train[torch.randperm(len(train), generator=gen)]
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            out = model(x[idx])
            loss = nn.functional.cross_entropy(out, y[idx])
            if teacher_logits is not None:
                loss = combine(loss, kd_loss(out, teacher_logits[idx], **kd), 1.0)  # type: ignore[arg-type]
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((model(x[test]).argmax(1) == y[test]).float().mean())


def test_default_kd_is_stable_with_large_teacher_logits(
    digits: tuple[Tensor, Tensor, Tensor, Tensor], one_thread: None
) -> None:
    x, y, train, test = digits
    teacher = _mlp(100)
    opt = torch.optim.SGD(teacher.parameters(), lr=0.1, momentum=0.9)
    for _ in range(15):
        for i in range(0, N_TRAIN, BATCH):
            idx = train[i : i + BATCH]
            loss = nn.functional.cross_entropy(teacher(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.inference_mode():
        logits = teacher(x)
    logits = logits * (15.0 / logits.std(dim=1).mean())
    assert 14 < float(logits.std(dim=1).mean()) < 16 and float(logits.max()) > 40
    teacher_acc = float((logits[test].argmax(1) == y[test]).float().mean())

    plain = _train(digits)
    raw = _train(digits, logits, standardize=False)
    default = _train(digits, logits)
    default_kl = _train(digits, logits, kind="kl")
    zero_head = _train(digits, logits, zero_head=True)
    print(
        f"teacher {teacher_acc:.3f} plain {plain:.3f} raw-mse {raw:.3f} "
        f"std-mse {default:.3f} std-kl {default_kl:.3f} std-mse zero-init head {zero_head:.3f}"
    )
    assert teacher_acc > 0.9 and plain > 0.9
    assert raw < 0.2  # collapsed to chance (10 classes)
    assert default >= plain - 0.02
    assert default_kl >= plain - 0.02
    assert zero_head >= plain - 0.02
