"""Item 5: failures after a teacher loads never kill the trial: a teacher whose forward
raises (a sweep over input length), ``build(params)`` raising anything, a blob store's own
errors (not FileNotFoundError), a student whose state dict holds a non-tensor
``_extra_state``. The teacher is dropped with one warning; the trial's value is kept."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from storage import FsspecBlobStore, Registry, Status

X, Y = torch.randn(8, 3), torch.tensor([0, 1] * 4)


def _cfg(tmp_path: Path, **teachers: Any) -> RecycleConfig:
    return RecycleConfig.from_dict(
        {
            "registry": f"sqlite:///{tmp_path / 'r.db'}",
            "blobs": str(tmp_path / "blobs"),
            "teachers": {"pool": 3, "per_step": "all", "quality_gate": False, **teachers},
        }
    )


def _teach(reg: Registry, trial: int, width: int, **params: Any) -> int:
    torch.manual_seed(trial)
    net = nn.Linear(width, 2)
    rec = reg.register(
        net.state_dict(),
        study="s",
        trial_number=trial,
        metric_value=0.5 + trial / 10,
        params={"width": width, **params},
    )
    return rec.id


def _build(params: Any) -> nn.Module:
    if params.get("broken") == "attr":
        raise AttributeError("'Config' object has no attribute 'hidden'")
    if params.get("broken") == "assert":
        raise AssertionError("width must be even")
    return nn.Linear(int(params["width"]), 2)


def _train(kd: Distiller, net: nn.Module, steps: int = 4) -> None:
    for _ in range(steps):
        kd.loss(net(X), Y, X).backward()
        with torch.no_grad():  # plain SGD: torch.optim's first use imports torch._dynamo
            for param in net.parameters():
                if param.grad is not None:
                    param -= 0.1 * param.grad
                    param.grad = None


def test_a_teacher_whose_forward_raises_is_dropped_once(tmp_path: Path) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    fits = _teach(reg, 0, 3)
    wrong = _teach(reg, 1, 5)  # from a sweep over the input length: 5 features, not 3
    net = nn.Linear(3, 2)
    kd = Distiller(
        _cfg(tmp_path),
        study="s",
        trial_number=9,
        registry=reg,
        model=net,
        build=_build,
        background_refresh=False,
    )
    with pytest.warns(RuntimeWarning, match=f"teacher {wrong} .*dropped: its forward raised"):
        _train(kd, net)
    assert [t.id for t in kd.teachers] == [fits]
    assert kd.stats()["steps_distilled"] == 3  # the first step fell back to the task loss
    outcome = kd.finish("complete", 0.8)
    assert outcome.record is not None and outcome.record.metric_value == 0.8


@pytest.mark.parametrize("broken", ["attr", "assert"])
def test_build_raising_anything_skips_the_teacher(tmp_path: Path, broken: str) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    fits = _teach(reg, 0, 3)
    bad = _teach(reg, 1, 3, broken=broken)
    net = nn.Linear(3, 2)
    kd = Distiller(
        _cfg(tmp_path),
        study="s",
        trial_number=9,
        registry=reg,
        model=net,
        build=_build,
        background_refresh=False,
    )
    with pytest.warns(RuntimeWarning, match=f"teacher {bad} .*build\\(params\\) raised"):
        _train(kd, net)
    assert [t.id for t in kd.teachers] == [fits] and kd.stats()["steps_distilled"] == 4


class _Down(Exception):
    """What an HTTP-backed filesystem raises when its server is down (not an OSError)."""


@pytest.mark.parametrize("error", [_Down("502 Bad Gateway"), IsADirectoryError(21, "dir")])
def test_a_blob_stores_own_errors_skip_the_teacher(
    tmp_path: Path, error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FsspecBlobStore(f"memory://r16-{tmp_path.name}")
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", store)
    tid = _teach(reg, 0, 3)

    def fail(*_args: Any, **_kw: Any) -> bytes:
        raise error

    monkeypatch.setattr(store._fs, "cat_file", fail)  # (fsspec shares the instance)
    net = nn.Linear(3, 2)
    kd = Distiller(
        _cfg(tmp_path), study="s", trial_number=9, registry=reg, model=net, background_refresh=False
    )
    with pytest.warns(RuntimeWarning, match=f"teacher {tid} .*did not load"):
        _train(kd, net, steps=2)
    assert kd.teachers == [] and reg.get(tid).status is Status.READY  # nothing proven bad
    with pytest.warns(RuntimeWarning, match="registering the model failed.*could not be read"):
        outcome = kd.finish("complete", 0.7)  # the store fails its reads: recorded, not raised
    assert outcome.state == "complete" and outcome.record is None
    assert outcome.info["registry_errors"]


class _WithExtraState(nn.Module):
    """A module whose state dict holds a non-tensor ``_extra_state`` (as some libraries do)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.note = {"vocab": ["a", "b"], "version": 3}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def get_extra_state(self) -> Any:
        return self.note

    def set_extra_state(self, state: Any) -> None:
        self.note = state


def test_a_student_with_non_tensor_extra_state_keeps_its_value_and_teaches(
    tmp_path: Path,
) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    net = _WithExtraState()
    assert not isinstance(net.state_dict()["_extra_state"], torch.Tensor)
    kd = Distiller(_cfg(tmp_path), study="s", trial_number=0, registry=reg, model=net)
    _train(kd, net, steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either: the teacher is stored
        outcome = kd.finish("complete", 0.8)
    assert outcome.state == "complete" and outcome.record is not None
    assert outcome.record.metric_value == 0.8 and "registry_errors" not in outcome.info
    student = _WithExtraState()
    later = Distiller(
        _cfg(tmp_path),
        study="s",
        trial_number=1,
        registry=reg,
        model=student,
        background_refresh=False,
    )
    _train(later, student, steps=2)
    assert [t.id for t in later.teachers] == [outcome.record.id]  # it loads as a teacher
    assert later.stats()["steps_distilled"] == 2
