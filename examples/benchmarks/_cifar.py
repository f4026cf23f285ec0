"""CIFAR-100 and the CIFAR ResNets of He et al. (2016): the benchmarks' larger scale (GPU).

Nothing is downloaded: the data must already be in ``<root>/cifar-100-python/`` (torchvision's
format, checked against torchvision's MD5 sums). The whole data set is put on the device once;
training batches are augmented there (random 32x32 crop of the 4-pixel zero-padded image and a
horizontal flip), so the CPU never feeds the GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from _harness import Task
from torch import nn

from recycler.demo.task import Split

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
PAD = 4


class _Block(nn.Module):
    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or inp != out:
            self.short = nn.Sequential(
                nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.short(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32x32 images (depth = 6n + 2: 20, 32, 44, 56, 110), base ``width``.

    Example:
        >>> CifarResNet(depth=8, width=4)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 100])
    """

    def __init__(self, depth: int = 56, width: int = 16, classes: int = 100) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        inp = width
        for stage in range(3):
            out = width * 2**stage
            for i in range(n):
                blocks.append(_Block(inp, out, 2 if stage and i == 0 else 1))
                inp = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(inp, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        out: torch.Tensor = self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))
        return out


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random crop (4-pixel zero padding) and horizontal flip of a batch [B, 3, 32, 32]."""
    n, _, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    dy = torch.randint(0, 2 * PAD + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * PAD + 1, (n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, chans, rows, cols]
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def _split(dataset: Any, device: str, limit: int | None) -> Split:
    images = torch.as_tensor(dataset.data[:limit]).permute(0, 3, 1, 2).float().div_(255)
    mean, std = torch.tensor(MEAN)[None, :, None, None], torch.tensor(STD)[None, :, None, None]
    x = ((images - mean) / std).to(device)
    y = torch.as_tensor(dataset.targets[:limit], dtype=torch.int64).to(device)
    return Split(x, y, torch.arange(len(y), device=device))


def load_cifar100(
    root: Path, *, device: str = "cpu", limit: int | None = None, check_md5: bool = True
) -> tuple[Split, Split]:
    """CIFAR-100 from ``root`` (never downloaded) as device tensors: (train, test).

    ``limit``: only the first ``limit`` training images. ``check_md5=False`` skips torchvision's
    checksums (for small test fixtures only).
    """
    try:
        from torchvision.datasets import CIFAR100
    except ImportError as exc:
        raise SystemExit("CIFAR-100 needs torchvision: pip install 'recycler[vision]'") from exc

    dataset: type[Any] = CIFAR100
    if not check_md5:  # torchvision skips a checksum that is None

        class _Unchecked(CIFAR100):  # type: ignore[misc]
            train_list: ClassVar = [[name, None] for name, _ in CIFAR100.train_list]
            test_list: ClassVar = [[name, None] for name, _ in CIFAR100.test_list]
            meta: ClassVar = {**CIFAR100.meta, "md5": None}

        dataset = _Unchecked

    if not (Path(root) / CIFAR100.base_folder).is_dir():
        raise SystemExit(
            f"CIFAR-100 not found: {root}/{CIFAR100.base_folder}/ does not exist. Nothing is "
            "downloaded here: fetch cifar-100-python.tar.gz once where there is internet, "
            "unpack it under a folder and pass that folder as --data"
        )
    train = dataset(str(root), train=True, download=False)
    test = dataset(str(root), train=False, download=False)
    return _split(train, device, limit), _split(test, device, None)


def cifar100_task(
    root: Path,
    *,
    device: str,
    epochs: int,
    limit: int | None = None,
    depth: int = 56,
    check_md5: bool = True,
) -> Task:
    """CIFAR-100 with ResNet-``depth`` (Liu 2022's setup, shorter), batch 128, augmented."""

    def build(params: Mapping[str, Any]) -> nn.Module:
        return CifarResNet(int(params.get("depth", depth)), int(params.get("channels", 16)))

    data = load_cifar100(root, device=device, limit=limit, check_md5=check_md5)
    return Task(f"CIFAR-100 ResNet-{depth}", data, build, epochs, 128, device, augment, classes=100)
