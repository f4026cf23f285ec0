"""The transformers adapter's arithmetic, without a Trainer: lengths, KD scale, masks, names."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from recycler.config import RecycleConfig
from recycler.errors import ConfigError
from recycler.integrations._hf_loop import (
    LoopLength,
    kd_mask,
    kd_scale,
    names_schedule,
    next_trial_number,
    parse_schedule,
    student_logits,
)
from storage import Registry


def loop_args(**kw: Any) -> SimpleNamespace:
    base = {"gradient_accumulation_steps": 1, "num_train_epochs": 3.0, "max_steps": -1}
    return SimpleNamespace(**{**base, **kw})


def test_the_loop_in_micro_batches_as_the_trainer_walks_it() -> None:
    # 10 batches per epoch, accumulation 4: optimizer steps of 4, 4, 2 micro-batches
    loop = LoopLength.of(loop_args(gradient_accumulation_steps=4), list(range(10)))
    assert (loop.updates_per_epoch, loop.max_steps, loop.epochs) == (3, 9, 3)
    assert loop.plan() == {"epochs": 3, "steps_per_epoch": 10}
    assert [loop.micro(u) for u in (0, 1, 2, 3, 4, 9)] == [0, 4, 8, 10, 14, 30]
    assert [loop.updates(m) for m in (0, 4, 5, 10, 11, 30)] == [0, 1, 2, 3, 4, 9]
    steps = LoopLength.of(loop_args(max_steps=5, gradient_accumulation_steps=4), list(range(10)))
    assert steps.epochs is None and steps.plan() == {"steps_per_epoch": 10, "steps": 18}
    half = LoopLength.of(loop_args(num_train_epochs=1.5), list(range(10)))
    assert (half.epochs, half.max_steps, half.plan()["steps"]) == (None, 15, 15)
    stream = LoopLength.of(loop_args(max_steps=7, gradient_accumulation_steps=2), iter(()))
    assert (stream.batches_per_epoch, stream.micro(7), stream.updates(13)) == (None, 14, 7)


def trainer(**kw: Any) -> SimpleNamespace:
    args = SimpleNamespace(average_tokens_across_devices=False, n_gpu=1)
    base = {
        "loss_is_scaled_for_ga": None,
        "model_accepts_loss_kwargs": True,
        "compute_loss_func": None,
        "current_gradient_accumulation_steps": 2,
        "args": args,
    }
    return SimpleNamespace(**{**base, **kw})


def test_the_kd_scale_follows_the_trainers_loss_normalisation() -> None:
    n = torch.tensor(24)
    assert float(kd_scale(trainer(), torch.tensor(6), n)) == 0.25  # its share of the labels
    assert kd_scale(trainer(), 6, None) == 1.0  # the Trainer divides by G itself
    # a loss the Trainer takes as normalised already, without a count: 1/G
    assert kd_scale(trainer(loss_is_scaled_for_ga=True), 6, None) == 0.5
    # a loss the Trainer divides by G, with a count: the share, times G
    unscaled = trainer(loss_is_scaled_for_ga=False)
    assert float(kd_scale(unscaled, torch.tensor(6), n)) == 0.5
    devices = trainer(accelerator=SimpleNamespace(num_processes=4), get_tp_size=lambda: 2)
    devices.args.average_tokens_across_devices = True
    assert float(kd_scale(devices, torch.tensor(6), n)) == 0.5  # x (4 processes / 2 tp)


def test_the_mask_keeps_labelled_positions_and_counts_as_the_trainer() -> None:
    tokens = torch.zeros(2, 4, 7)
    labels = torch.tensor([[-100, 3, -100, 5], [1, -100, -100, -100]])
    mask, kept = kd_mask(tokens, labels, None, causal=False)
    assert mask is not None and mask.tolist() == (labels != -100).tolist() and int(kept) == 3
    mask, kept = kd_mask(tokens, labels, None, causal=True)  # logit t predicts token t+1
    assert mask is not None and int(kept) == 2
    assert mask.tolist() == [[True, False, True, False], [False, False, False, False]]
    shifted = torch.tensor([[1, -100, -100, 2], [-100] * 4])
    mask, kept = kd_mask(tokens, labels, shifted, causal=True)
    assert mask is not None and mask.tolist() == (shifted != -100).tolist() and int(kept) == 2
    rows = torch.zeros(3, 4)
    mask, kept = kd_mask(rows, torch.tensor([0, -100, 2]), None, causal=False)
    assert mask is not None and mask.tolist() == [True, False, True] and int(kept) == 2
    mask, kept = kd_mask(rows, torch.zeros(3, 4), None, causal=False)  # multi-label floats
    assert mask is None and int(kept) == 12
    assert kd_mask(rows, None, None, causal=False) == (None, 3)


def test_the_student_logits_in_every_output_form() -> None:
    logits, loss = torch.ones(2, 3), torch.tensor(0.5)
    assert student_logits({"loss": loss, "logits": logits}) is logits
    assert student_logits(SimpleNamespace(logits=logits)) is logits
    assert student_logits((loss, logits)) is logits and student_logits((logits,)) is logits
    assert student_logits(logits) is logits
    with pytest.raises(TypeError, match="without logits"):
        student_logits({"loss": loss})


def test_whether_a_config_names_its_schedule(tmp_path: Path) -> None:
    assert not names_schedule(None) and not names_schedule({"teachers": {"pool": 2}})
    assert names_schedule({"distill": {"schedule": "always"}})  # named, even as the default
    assert names_schedule("distill:\n  schedule: until 0.5dur\n")
    path = tmp_path / "recycle.yaml"
    path.write_text("distill: {weight: 0.5}\n")
    assert not names_schedule(path) and not names_schedule(str(path))
    assert names_schedule(RecycleConfig(distill={"schedule": "until 10ep"}))
    assert not names_schedule(RecycleConfig())
    assert str(parse_schedule("until 0.25dur")) == "until 0.25dur" and parse_schedule(None) is None
    with pytest.raises(ConfigError, match=r"^mlm_schedule: invalid schedule"):
        parse_schedule("sometimes")


def test_the_next_trial_number_of_a_study(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    assert next_trial_number(registry, "runs") == 0
    weights = {"w": torch.zeros(2)}
    for number in (0, 4):
        registry.register(weights, study="runs", trial_number=number, metric_value=1.0)
    assert next_trial_number(registry, "runs") == 5 and next_trial_number(registry, "other") == 0
    away = Registry("postgresql+psycopg://nobody@127.0.0.1:1/none", tmp_path / "b2")
    assert next_trial_number(away, "runs") == 0  # an unreachable registry: trial 0
