"""Teacher-logit cache: exactly the online result, bounded, and refusing when it can't be exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _kd_helpers import batch, fill, make_net

from recycler.config import RecycleConfig
from recycler.demo.task import Split
from recycler.demo.train import train
from recycler.distiller import Distiller
from recycler.errors import RecyclerError
from storage import Registry


def data(n: int = 96) -> tuple[Split, Split]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 40, generator=g), torch.randint(0, 10, (n,), generator=g)
    split = Split(x, y, torch.arange(n))
    return split, split


def run(
    reg: Registry,
    tmp_path: Path,
    *,
    cache: bool,
    max_bytes: int = 1 << 20,
    per_step: int | str = 1,
    fused: bool = True,
) -> Distiller:
    cfg = RecycleConfig.from_dict(
        {
            "registry": f"sqlite:///{tmp_path / 'r.db'}",
            "blobs": str(tmp_path / "blobs"),
            "distill": {"cache": cache, "cache_max_bytes": max_bytes},
            # every step's lookups are counted: no teacher retires (on this data the student
            # may lead a teacher by chance, and a rounding apart can flip who leads)
            "teachers": {"seed": 1, "per_step": per_step, "fused": fused, "retire": False},
        }
    )
    student = make_net(seed=3)
    kd = Distiller(cfg, study="s", trial_number=9, registry=reg, model=student)
    train(student, data(), lr=0.05, epochs=4, batch_size=32, seed=5, kd=kd)
    return kd


def weights(kd: Distiller) -> list[torch.Tensor]:
    assert kd.model is not None
    return list(kd.model.state_dict().values())


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    fill(registry, 3)
    return registry


# one teacher a step and all three (each one table, rows stored standardised), two of three
# (raw rows averaged); a roomy cache, and one full after 40 rows. The ensemble runs as a loop
# here: the fused ensemble's matmuls round a sample's logits differently (~1e-7) when the
# shuffled batches around it change, so online it is not bit-exact epoch to epoch itself.
@pytest.mark.parametrize("per_step", [1, 2, "all"])
@pytest.mark.parametrize("max_bytes", [1 << 20, 4 * 10 * 40])
def test_cached_training_equals_online_training(
    reg: Registry, tmp_path: Path, max_bytes: int, per_step: int | str
) -> None:
    online = run(reg, tmp_path, cache=False, per_step=per_step, fused=False)
    cached = run(reg, tmp_path, cache=True, max_bytes=max_bytes, per_step=per_step, fused=False)
    assert all(torch.equal(a, b) for a, b in zip(weights(online), weights(cached), strict=True))
    stats = cached.stats()["cache"]
    per_batch = 2 if per_step == 2 else 1  # lookups a step: the ensemble of all is one table
    assert stats["hits"] + stats["misses"] == 12 * per_batch  # 4 epochs x 3 batches
    if max_bytes == 1 << 20:
        assert stats["misses"] == 3  # one per batch of epoch 1: it fills every teacher's rows


def test_cached_fused_ensemble_equals_online_to_rounding(reg: Registry, tmp_path: Path) -> None:
    online = run(reg, tmp_path, cache=False, per_step="all")
    cached = run(reg, tmp_path, cache=True, per_step="all")
    assert cached.pool is not None and cached.pool.fusion == "wide"
    for a, b in zip(weights(online), weights(cached), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert cached.stats()["cache"] == {"hits": 9, "misses": 3}  # one table: the ensemble


def test_cache_needs_sample_ids(reg: Registry, tmp_path: Path) -> None:
    cfg = RecycleConfig(distill={"cache": True})
    student = make_net()
    kd = Distiller(cfg, study="s", trial_number=9, registry=reg, model=student)
    x, y = batch()
    with pytest.raises(RecyclerError, match="sample_ids"):
        kd.loss(student(x), y, x)


def test_cache_refuses_changing_inputs(reg: Registry, tmp_path: Path) -> None:
    cfg = RecycleConfig(distill={"cache": True})
    student = make_net()
    kd = Distiller(cfg, study="s", trial_number=9, registry=reg, model=student)
    x, y = batch()
    ids = torch.arange(len(y))
    kd.loss(student(x), y, x, sample_ids=ids)
    augmented = x + 0.5 * torch.randn_like(x)  # "random augmentation" of the same samples
    with pytest.raises(RecyclerError, match="random augmentation"):
        kd.loss(student(augmented), y, augmented, sample_ids=ids)


@pytest.mark.parametrize("per_step", [1, "all"])
def test_quality_gate_still_drops_a_non_finite_teacher_with_the_cache(
    reg: Registry, tmp_path: Path, per_step: int | str
) -> None:
    """Rows are checked once when stored; a teacher whose rows are not finite is still dropped."""
    good = reg.query(study="s")[-1].id  # the best of the three
    broken = make_net(seed=9)
    with torch.no_grad():
        broken[-1].bias.fill_(float("nan"))
    bad = reg.register(
        broken.state_dict(),
        study="s",
        trial_number=3,
        metric_value=0.99,
        metric_name="accuracy",
        output_signature="logits/2d/10",
    ).id
    cfg = RecycleConfig(
        distill={"cache": True}, teachers={"per_step": per_step, "policy": "best", "pool": 2}
    )
    student = make_net(seed=7)
    kd = Distiller(cfg, study="s", trial_number=9, registry=reg, model=student)
    x, y = batch()
    ids = torch.arange(len(y))
    with pytest.warns(RuntimeWarning, match=f"teacher {bad} .* not finite"):
        losses = [kd.loss(student(x), y, x, sample_ids=ids) for _ in range(8)]
    assert all(bool(torch.isfinite(loss)) for loss in losses)
    assert [r.id for r in kd.teachers] == [good]
    assert kd.stats()["teachers_used"] == [good]
    assert kd.stats()["cache"]["hits"] > 0
