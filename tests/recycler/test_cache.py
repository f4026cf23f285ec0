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


def run(reg: Registry, tmp_path: Path, *, cache: bool, max_bytes: int = 1 << 20) -> Distiller:
    cfg = RecycleConfig.from_dict(
        {
            "registry": f"sqlite:///{tmp_path / 'r.db'}",
            "blobs": str(tmp_path / "blobs"),
            "distill": {"cache": cache, "cache_max_bytes": max_bytes},
            "teachers": {"seed": 1},
        }
    )
    student = make_net(seed=3)
    kd = Distiller(cfg, study="s", trial_number=9, registry=reg, model=student)
    train(student, data(), lr=0.05, epochs=4, batch_size=32, seed=5, kd=kd)
    return kd


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    fill(registry, 3)
    return registry


@pytest.mark.parametrize("max_bytes", [1 << 20, 4 * 10 * 40])  # roomy, and full after 40 rows
def test_cached_training_equals_online_training(
    reg: Registry, tmp_path: Path, max_bytes: int
) -> None:
    online = run(reg, tmp_path, cache=False)
    cached = run(reg, tmp_path, cache=True, max_bytes=max_bytes)
    for a, b in zip(
        online._model.state_dict().values(),  # type: ignore[union-attr]
        cached._model.state_dict().values(),  # type: ignore[union-attr]
        strict=True,
    ):
        assert torch.equal(a, b)
    stats = cached.stats()["cache"]
    assert stats["hits"] + stats["misses"] == 12  # 4 epochs x 3 batches, one teacher per step
    if max_bytes == 1 << 20:
        assert stats["hits"] >= 6  # most of epochs 2-4 come from the cache


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
