"""One rule finds the logits in a model's output, on the loop and the fused paths alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _kd_helpers import batch
from torch import Tensor, nn
from transformers.modeling_outputs import SequenceClassifierOutput

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from recycler.fused import FusedEnsemble, logits_of, loop_forward
from recycler.teachers import call_model
from storage import Registry

WRAPS: dict[str, Callable[[Tensor, Tensor], Any]] = {
    "tensor": lambda t, h: t,
    "tuple": lambda t, h: (t, h),
    "dict": lambda t, h: {"logits": t, "hidden": h},
    "ModelOutput": lambda t, h: SequenceClassifierOutput(logits=t),
}


class Net(nn.Module):
    def __init__(self, wrap: str, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.wrap = wrap
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(40, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def body(self, x: Tensor) -> Tensor:
        return self.head(self.hidden(x))

    def forward(self, x: Tensor) -> Any:
        h = self.hidden(x)
        return WRAPS[self.wrap](self.head(h), h)


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_logits_of_each_output_kind(wrap: str) -> None:
    t = torch.randn(3, 10)
    assert logits_of(WRAPS[wrap](t, t.exp())) is t


def test_not_logits_names_what_it_got() -> None:
    with pytest.raises(TypeError, match="a teacher returned str, not logits"):
        logits_of("nope")
    with pytest.raises(TypeError, match="returned dict, not logits"):
        logits_of({"scores": torch.zeros(1)})


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_loop_and_fused_find_the_same_logits(wrap: str) -> None:
    models = [Net(wrap, seed=i).eval() for i in range(3)]
    x, _ = batch()
    want = torch.stack([m.body(x) for m in models]).detach()
    assert torch.allclose(loop_forward(models, x), want, atol=1e-6)
    assert torch.allclose(FusedEnsemble(models)(x), want, atol=1e-5)
    assert torch.allclose(call_model(models[0], x), want[0], atol=1e-6)


@pytest.mark.parametrize("per_step", [1, "all"])
@pytest.mark.parametrize("wrap", list(WRAPS))
def test_distiller_distils_from_any_output_kind(
    wrap: str, per_step: object, tmp_path: Path
) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    for i in range(3):
        reg.register(Net(wrap, seed=10 + i).state_dict(), study="s", trial_number=i,
                     metric_name="accuracy", metric_value=0.5 + i / 10,
                     output_signature="logits/2d/10")  # fmt: skip
    cfg = RecycleConfig.from_dict(
        {
            "registry": reg.url,
            "blobs": str(tmp_path / "blobs"),
            "teachers": {"per_step": per_step, "pool": 3},
        }
    )
    student = Net(wrap, seed=1)
    kd = Distiller(cfg, study="s", trial_number=5, registry=reg, model=student,
                   background_refresh=False)  # fmt: skip
    x, y = batch()
    for _ in range(3):
        kd.loss(logits_of(student(x)), y, x)
    stats = kd.stats()
    assert stats["steps_distilled"] == 3 and len(stats["pool"]) == 3
    assert kd.pool is not None
    if per_step == "all":
        assert kd.pool.fusion == "wide"
