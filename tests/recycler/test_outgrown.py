"""Teachers the student outgrew stop teaching: the count, the verdict, the trial, a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _kd_helpers import SIG, batch, make_net

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from recycler.distiller._outgrown import Outgrown
from storage import Registry


def logits(labels: torch.Tensor, right: int, classes: int = 10) -> torch.Tensor:
    """Logits that get the first ``right`` labels right and the rest wrong."""
    predicted = labels.clone()
    predicted[right:] = (labels[right:] + 1) % classes
    return 5.0 * torch.nn.functional.one_hot(predicted, classes).float()


LABELS = torch.arange(10) % 10


def test_a_teacher_is_retired_once_the_student_leads_it_over_a_window() -> None:
    tracker = Outgrown(every=1)
    for _ in range(10):
        assert tracker.judge() == []  # no full window yet
        tracker.observe((3,), logits(LABELS, 9), logits(LABELS, 5), LABELS)
        tracker.observe((4,), logits(LABELS, 9), logits(LABELS, 10), LABELS)  # ahead of it
        tracker.observe((5,), logits(LABELS, 5), logits(LABELS, 5), LABELS)  # level
    assert tracker.judge() == [3]
    assert tracker.retired == {
        3: "the student outgrew it: 90.0% of the labels right over the last 10 steps it "
        "taught, against the teacher's 50.0%"
    }
    assert tracker.judge() == []  # the windows start again


def test_only_labelled_rows_count_and_soft_targets_count_nothing() -> None:
    tracker = Outgrown(window=1, every=1)
    tokens = LABELS.clone().reshape(1, 10)
    tokens[0, 5:] = -100  # not masked out: only the first 5 positions have labels
    student = logits(LABELS, 5).reshape(1, 10, 10)
    teacher = logits(LABELS, 4).reshape(1, 10, 10)
    tracker.observe((1,), student, teacher, tokens, tokens != -100)  # as KDStep passes it
    assert tracker.judge() == [1] and "100.0% of the labels" in tracker.retired[1]
    assert "against the teacher's 80.0%" in tracker.retired[1]
    soft = torch.softmax(torch.randn(10, 10), dim=-1)
    tracker.observe((2,), logits(LABELS, 9), logits(LABELS, 1), soft)
    tracker.observe((2,), logits(LABELS, 9), logits(LABELS, 1), None)
    assert tracker.judge() == [] and 2 not in tracker.retired


def test_an_ensemble_the_student_outgrew_retires_every_member() -> None:
    tracker = Outgrown(window=2, every=1)
    for _ in range(2):
        tracker.observe((1, 2), logits(LABELS, 8), logits(LABELS, 6), LABELS)
    assert tracker.judge() == [1, 2]
    assert "against the teachers' 60.0%" in tracker.retired[2]


def test_one_step_in_every_is_counted() -> None:
    tracker = Outgrown(window=2, every=4)
    for step in range(5):  # counted: steps 0 and 4
        assert tracker.judge() == []
        right = 9 if step in (0, 4) else 0  # the uncounted steps would say the opposite
        tracker.observe((3,), logits(LABELS, right), logits(LABELS, 5), LABELS)
    assert (
        tracker.judge() == [3]
        and "90.0% of the labels right over the last 8" in (tracker.retired[3])
    )


def test_the_open_windows_survive_a_resume() -> None:
    whole, first = Outgrown(), Outgrown()
    for tracker in (whole, first):
        for _ in range(21):  # 6 of 10 counts (steps 1, 5, ..., 21)
            tracker.observe((3,), logits(LABELS, 9), logits(LABELS, 5), LABELS)
    resumed = Outgrown()
    resumed.load_state_dict(first.state_dict())
    for tracker in (whole, resumed):
        for _ in range(16):  # the 10th count is the 37th step
            assert tracker.judge() == []
            tracker.observe((3,), logits(LABELS, 9), logits(LABELS, 5), LABELS)
        assert tracker.judge() == [3]
    assert resumed.retired == whole.retired
    again = Outgrown()
    again.load_state_dict(resumed.state_dict())
    assert again.retired == whole.retired


# -- in a trial ------------------------------------------------------------------------------


def always_class_zero(reg: Registry) -> int:
    """A registered teacher that answers class 0 whatever the input (right on ~1 in 10)."""
    net = make_net()
    with torch.no_grad():
        net[-1].weight.zero_()
        net[-1].bias.copy_(torch.tensor([10.0] + [0.0] * 9))
    rec = reg.register(net.state_dict(), study="s", trial_number=0, metric_name="accuracy",
                       metric_value=0.5, output_signature=SIG)  # fmt: skip
    return rec.id


def distiller(tmp_path: Path, reg: Registry, **teachers: object) -> Distiller:
    cfg = RecycleConfig.from_dict(
        {"registry": reg.url, "blobs": str(tmp_path / "blobs"), "teachers": teachers}
    )
    return Distiller(cfg, study="s", trial_number=9, registry=reg, model=make_net(seed=1),
                     background_refresh=False)  # fmt: skip


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")


def train(kd: Distiller, steps: int) -> None:
    x, y = batch()
    perfect = 10.0 * torch.nn.functional.one_hot(y, 10).float()
    for _ in range(steps):
        kd.loss(perfect.clone().requires_grad_(), y, x)


def test_a_trial_stops_distilling_from_a_teacher_it_outgrew(reg: Registry, tmp_path: Path) -> None:
    teacher = always_class_zero(reg)
    kd = distiller(tmp_path, reg)
    train(kd, 60)
    stats = kd.stats()  # 10 counts, one step in 4: 37 steps; it retires at the 37th
    assert stats["steps_distilled"] == 37 and stats["teachers_used"] == [teacher]
    assert list(stats["retired"]) == [str(teacher)] and stats["pool"] == []
    assert stats["retired"][str(teacher)].startswith("the student outgrew it: 100.0% of the")
    assert f"retired [{teacher}] (the student outgrew them)" in kd.summary()
    keep = distiller(tmp_path, reg, retire=False)
    train(keep, 60)
    assert keep.stats()["steps_distilled"] == 60 and "retired" not in keep.stats()


def test_a_resumed_trial_retires_at_the_same_step(reg: Registry, tmp_path: Path) -> None:
    always_class_zero(reg)
    whole = distiller(tmp_path, reg)
    train(whole, 50)
    first = distiller(tmp_path, reg)
    train(first, 23)
    resumed = distiller(tmp_path, reg)
    resumed.load_state_dict(first.state_dict())
    train(resumed, 27)
    assert resumed.stats()["steps_distilled"] == whole.stats()["steps_distilled"] == 37
    assert resumed.stats()["retired"] == whole.stats()["retired"]
    after = distiller(tmp_path, reg)  # resumed once more, after the verdict: it stays out
    after.load_state_dict(resumed.state_dict())
    train(after, 5)
    assert after.stats()["steps_distilled"] == 37 and after.stats()["pool"] == []
