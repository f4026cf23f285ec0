"""The benchmarks' CIFAR-100 path (``--device cuda``) on a small local fixture, on the CPU.

The fixture is written in torchvision's ``cifar-100-python`` format; it fails torchvision's
checksums (which guard the real data), so the loader is called with ``check_md5=False``.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "benchmarks"))

from _cifar import PAD, CifarResNet, augment, cifar100_task, load_cifar100
from _harness import train_curve

N_TRAIN, N_TEST = 64, 32


def write_fixture(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", N_TRAIN), ("test", N_TEST)):
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": [int(v) for v in rng.integers(0, 100, n)],
            "coarse_labels": [0] * n,
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    names = {"fine_label_names": [f"class{i}" for i in range(100)]}
    (folder / "meta").write_bytes(pickle.dumps(names))
    return root


@pytest.fixture
def fixture(tmp_path: Path) -> Path:
    return write_fixture(tmp_path)


def test_loader_returns_normalised_tensors(fixture: Path) -> None:
    train, test = load_cifar100(fixture, check_md5=False, limit=48)
    assert train.x.shape == (48, 3, 32, 32) and test.x.shape == (N_TEST, 3, 32, 32)
    assert train.y.dtype == torch.int64 and int(train.y.max()) < 100
    assert torch.equal(train.ids, torch.arange(48))
    assert abs(float(train.x.mean())) < 0.5  # 0-255 noise, normalised per channel


def test_loader_keeps_checksums_and_says_where_data_is_missing(
    fixture: Path, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="corrupted"):
        load_cifar100(fixture)  # the fixture is not the real CIFAR-100
    with pytest.raises(SystemExit, match="CIFAR-100 not found"):
        load_cifar100(tmp_path / "empty")


def test_augment_crops_and_flips_each_image() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 3, 32, 32)
    out = augment(x)
    assert out.shape == x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    for i in range(len(x)):
        crops = [
            padded[i, :, dy : dy + 32, dx : dx + 32]
            for dy in range(2 * PAD + 1)
            for dx in range(2 * PAD + 1)
        ]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(2)) for c in crops)


def test_resnet_depth_is_checked() -> None:
    assert CifarResNet(depth=20, width=4)(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(depth=21)


def test_a_run_trains_on_the_fixture(fixture: Path) -> None:
    task = cifar100_task(fixture, device="cpu", epochs=2, depth=8, check_md5=False)
    curve = train_curve(task, {"lr": 0.05, "channels": 4}, seed=0)
    assert len(curve.accuracy) == 2 and all(0.0 <= a <= 1.0 for a in curve.accuracy)
    assert task.chance == 0.01 and task.batch_size == 128
