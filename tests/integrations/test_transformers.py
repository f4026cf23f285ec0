"""The transformers adapter on real Trainer runs (CPU, a 2-layer BERT of hidden 32, seconds each).

One MLM teacher is trained and registered per module (a standalone ``trainer.train()``); the
students distil from it. Searches are in ``test_transformers_search.py``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _hf_helpers import args, bert, mlm, one_thread, recycle_config, topics, transformers

from recycler.demo import text
from recycler.errors import ConfigError, MissingExtraError
from recycler.integrations.transformers import (
    MLM_SCHEDULE,
    RecycleMixin,
    RecycleTrainer,
    is_language_model,
)
from recycler.schedule import Clock, Schedule
from storage import Registry, Status

__all__ = ["one_thread"]  # the autouse fixture

Teacher = tuple[dict[str, Any], int]


@pytest.fixture(scope="module")
def mlm_teacher(tmp_path_factory: pytest.TempPathFactory) -> Teacher:
    """An MLM run of study 'mlm' (trial 0), registered as a teacher by RecycleTrainer."""
    tmp = tmp_path_factory.mktemp("hf-teacher")
    cfg = recycle_config(tmp, study="mlm")
    train, evals = mlm()
    trainer = RecycleTrainer(
        model=bert(seed=1),
        args=args(tmp / "run", num_train_epochs=2, eval_strategy="epoch"),
        train_dataset=train,
        eval_dataset=evals,
        recycle=cfg,
    )
    trainer.train()
    outcome = trainer.recycle_outcome
    assert outcome is not None and outcome.record is not None
    assert outcome.info["kd"] is False and outcome.state == "complete"
    rec = outcome.record
    assert (rec.study, rec.trial_number, rec.framework) == ("mlm", 0, "transformers")
    assert (rec.metric_name, rec.direction.value) == ("eval_loss", "minimize")
    assert rec.metric_value == pytest.approx(trainer.state.log_history[-2]["eval_loss"])
    assert rec.output_signature == f"logits/3d/{len(text.wordpiece_tokenizer(400))}"
    return cfg, rec.id


def student_config(teacher: Teacher, **extra: Any) -> dict[str, Any]:
    """The teacher's study, registering nothing (every student is trial 1)."""
    return {**teacher[0], "register": {"enabled": False}, **extra}


def test_a_later_run_distils_early_only_and_its_teachers_run_in_eval_mode(
    mlm_teacher: Teacher, tmp_path: Path
) -> None:
    train, evals = mlm()
    student = bert(seed=2, dropout=0.1)
    calls: list[tuple[int, bool, bool, bool, bool]] = []

    def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        grads = any(p.requires_grad for p in module.parameters())
        mode = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        calls.append((id(module), module.training, *mode, grads))

    student.register_forward_hook(record)  # teachers are copies: they carry it too
    trainer = RecycleTrainer(
        model=student,
        args=args(
            tmp_path,
            num_train_epochs=2,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=2,
            eval_strategy="epoch",
        ),
        train_dataset=train,
        eval_dataset=evals,
        recycle=student_config(mlm_teacher),
    )
    assert is_language_model(student)
    trainer.train()
    assert trainer.recycle_outcome is not None
    info = trainer.recycle_outcome.info
    # 96 examples in micro-batches of 8: 12 per epoch, 24 in all (12 optimizer steps); the
    # MLM default distils the first 30% of them
    assert trainer.state.global_step == 12
    assert (info["steps"], info["planned_steps"], info["planned_epochs"]) == (24, 24, 2)
    early = Schedule.parse(MLM_SCHEDULE)
    scheduled = sum(early.active(Clock(step=s, planned_steps=24)) for s in range(24))
    assert info["steps_distilled"] == scheduled == 8
    assert info["pool"] == [mlm_teacher[1]] and info["teachers_used"] == [mlm_teacher[1]]
    assert info["registered"] is False

    teacher_calls = [c for c in calls if c[0] != id(student)]
    assert len(teacher_calls) == scheduled  # one teacher forward per distilled micro-batch
    assert set(teacher_calls) == {(teacher_calls[0][0], False, False, True, False)}
    assert any(c[1] and c[2] for c in calls if c[0] == id(student))  # the student trained
    lineage = Registry(mlm_teacher[0]["registry"], mlm_teacher[0]["blobs"]).lineage("mlm", 1)
    assert [(r.teacher_id, r.steps_distilled) for r in lineage] == [(mlm_teacher[1], scheduled)]


class InOrder(RecycleTrainer):
    """Batches in dataset order, so that the micro-batches are known."""

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        return torch.utils.data.SequentialSampler(self.train_dataset)


def uneven_batch() -> list[dict[str, torch.Tensor]]:
    """8 examples: the first 4 predict 22 positions each, the last 4 only 2."""
    data, _ = mlm(8, 0)
    out = []
    for i, item in enumerate(data):
        x = item["input_ids"]
        labels = torch.full_like(x, -100)
        keep = slice(1, -1) if i < 4 else slice(3, 5)
        labels[keep] = x[keep]
        out.append({**item, "labels": labels})
    return out


def one_step(
    teacher: Teacher,
    out: Path,
    data: list[dict[str, torch.Tensor]],
    *,
    batch: int,
    accumulation: int,
    weight: float,
    hook: Any = None,
) -> dict[str, torch.Tensor]:
    """One SGD step (no clipping, constant LR) from the same weights; the weights after it."""
    model = bert(seed=3)
    if hook is not None:
        model.register_forward_hook(hook)
    trainer = InOrder(
        model=model,
        args=args(
            out,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            optim="sgd",
            learning_rate=0.5,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            weight_decay=0.0,
        ),
        train_dataset=data,
        recycle=student_config(teacher, distill={"schedule": "always", "weight": weight}),
    )
    trainer.train()
    assert trainer.recycle_outcome is not None
    distilled = trainer.recycle_outcome.info["steps_distilled"]
    assert distilled == (accumulation if weight else 0)
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_gradient_accumulation_gives_the_kd_gradient_of_the_whole_batch(
    mlm_teacher: Teacher, tmp_path: Path
) -> None:
    data = uneven_batch()
    logits: list[torch.Tensor] = []

    def keep_grad(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if module.training:
            output.logits.retain_grad()
            logits.append(output.logits)

    kd_1 = one_step(
        mlm_teacher, tmp_path, data, batch=8, accumulation=1, weight=2.0, hook=keep_grad
    )
    plain_1 = one_step(mlm_teacher, tmp_path, data, batch=8, accumulation=1, weight=0.0)
    kd_2 = one_step(mlm_teacher, tmp_path, data, batch=4, accumulation=2, weight=2.0)
    plain_2 = one_step(mlm_teacher, tmp_path, data, batch=4, accumulation=2, weight=0.0)

    # positions labelled -100 carry no KD: neither loss term reaches their logits
    labels = torch.stack([d["labels"] for d in data])
    assert len(logits) == 1 and logits[0].grad is not None
    grad = logits[0].grad
    assert torch.count_nonzero(grad[labels == -100]) == 0
    assert bool((grad[labels != -100].abs().sum(-1) > 0).all())

    # the KD term's share of the update, with 1 x 8 and with 2 x 4: the same (22 and 2
    # positions per example: an unweighted mean of the two micro-batches would differ)
    for name in kd_1:
        one, two = kd_1[name] - plain_1[name], kd_2[name] - plain_2[name]
        torch.testing.assert_close(one, two, atol=2e-6, rtol=1e-4, msg=name)
    moved = max(float((kd_1[n] - plain_1[n]).abs().max()) for n in kd_1)
    assert moved > 1e-3  # KD did change the step


def test_a_budget_shortens_the_run_and_its_lr_schedule(
    mlm_teacher: Teacher, tmp_path: Path
) -> None:
    train, _ = mlm()  # 96 examples: 6 batches of 16 per epoch
    cfg = student_config(mlm_teacher, budget={"scale": 0.5})
    by_epochs = RecycleTrainer(
        model=bert(seed=4),
        args=args(tmp_path, num_train_epochs=4, lr_scheduler_type="linear"),
        train_dataset=train,
        recycle=cfg,
    )
    by_epochs.train()
    assert by_epochs.recycle_outcome is not None
    info = by_epochs.recycle_outcome.info
    assert (info["planned_epochs"], info["effective_epochs"]) == (4, 2)
    assert by_epochs.state.global_step == 12
    assert by_epochs.lr_scheduler.get_last_lr()[0] == 0.0  # linear decay over the 12 steps
    assert by_epochs.args.num_train_epochs == 4  # the arguments are given back

    by_steps = RecycleTrainer(
        model=bert(seed=4),
        args=args(
            tmp_path, max_steps=10, per_device_train_batch_size=8, gradient_accumulation_steps=2
        ),
        train_dataset=train,
        recycle=cfg,
    )
    by_steps.train()
    assert by_steps.recycle_outcome is not None
    info = by_steps.recycle_outcome.info
    # 10 steps of 2 micro-batches (12 per epoch): 20 planned, 10 trained = 5 steps
    assert (info["planned_steps"], info["effective_steps"]) == (20, 10)
    assert by_steps.state.global_step == 5 and by_steps.args.max_steps == 10


def test_teachers_built_by_model_init_teach_as_copies_do(
    mlm_teacher: Teacher, tmp_path: Path
) -> None:
    train, _ = mlm()
    built: list[int] = []

    def model_init() -> Any:
        built.append(1)
        return bert(seed=7, dropout=0.1)

    weights = []
    for source in ("student", "model_init"):
        built.clear()
        trainer = RecycleTrainer(
            model_init=model_init,
            args=args(tmp_path / source),
            train_dataset=train,
            recycle=student_config(mlm_teacher, distill={"schedule": "always"}),
            teachers_from=source,
        )
        built.clear()  # the Trainer's own call at construction
        trainer.train()
        assert trainer.recycle_outcome is not None
        assert trainer.recycle_outcome.info["steps_distilled"] == 6
        assert len(built) == (2 if source == "model_init" else 1)  # the student (+ the teacher)
        weights.append(trainer.model.state_dict())
    # the same teacher, and the student's random stream (dropout) untouched by its building
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


class Smoothed(transformers.Trainer):  # type: ignore[misc]
    """A user's Trainer with its own loss: label-smoothed cross-entropy."""

    calls = 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        Smoothed.calls += 1
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs.logits, labels, label_smoothing=0.1)
        return (loss, outputs) if return_outputs else loss


class RecycledSmoothed(RecycleMixin, Smoothed):
    pass


def test_an_own_compute_loss_composes_and_a_saved_model_loads_offline(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-bert"
    bert(num_labels=4, seed=5).save_pretrained(folder)
    text.wordpiece_tokenizer(400).save_pretrained(folder)
    train, test = topics()
    cfg = recycle_config(tmp_path, study="topics")
    outcomes = []
    for i in range(2):
        model, tok = text.load_pretrained(str(folder), num_labels=4)
        assert len(tok) == 400 and not is_language_model(model)
        trainer = RecycledSmoothed(
            model=model if i == 0 else bert(num_labels=4, seed=6),
            args=args(tmp_path / f"run{i}", eval_strategy="epoch"),
            train_dataset=train,
            eval_dataset=test,
            compute_metrics=text.accuracy,
            recycle=cfg,
        )
        Smoothed.calls = 0
        trainer.train()
        assert Smoothed.calls == 6 + 2  # 6 training batches, 2 evaluation batches
        outcomes.append(trainer.recycle_outcome)
    first, second = outcomes
    assert first is not None and second is not None
    assert first.info["kd"] is False and first.record is not None
    assert first.record.output_signature == "logits/2d/4"
    assert second.info["steps_distilled"] == second.info["steps"] == 6  # class logits: always
    assert second.info["teachers_used"] == [first.record.id]

    with pytest.raises(TypeError, match="list RecycleMixin before the Trainer classes"):

        class Wrong(Smoothed, RecycleMixin):  # type: ignore[misc]
            pass


def test_a_bad_config_fails_before_training_with_its_key_path(tmp_path: Path) -> None:
    built: list[int] = []

    def model_init() -> Any:
        built.append(1)
        return bert()

    def make(**kwargs: Any) -> Any:
        return RecycleTrainer(model_init=model_init, args=args(tmp_path), **kwargs)

    with pytest.raises(ConfigError, match=r"^teachers\.policy: 'bestest' is not one of best"):
        make(recycle={"teachers": {"policy": "bestest"}})
    yaml = tmp_path / "recycle.yaml"
    yaml.write_text("distill:\n  weight: -1\n")
    with pytest.raises(ConfigError, match=r"^distill\.weight: -1 must be >= 0"):
        make(recycle=yaml)
    with pytest.raises(ConfigError, match=r"^mlm_schedule: invalid schedule 'untill 3'"):
        make(mlm_schedule="untill 3")
    with pytest.raises(ConfigError, match=r"^teachers_from: 'nope'"):
        make(teachers_from="nope")
    assert built == []  # nothing was built, nothing trained
    with pytest.raises(ConfigError, match="multi-objective"):
        make().hyperparameter_search(direction=["maximize", "minimize"], backend="optuna")


def test_without_transformers_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "recycler.integrations.transformers")
    with pytest.raises(MissingExtraError) as info:
        importlib.import_module("recycler.integrations.transformers")
    said = str(info.value)
    assert said.startswith("the transformers integration needs the transformers extra")
    assert said.endswith("pip install 'recycler[transformers]'")


def test_teachers_are_ready_blobs_that_verify(mlm_teacher: Teacher) -> None:
    registry = Registry(mlm_teacher[0]["registry"], mlm_teacher[0]["blobs"])
    rec = registry.get(mlm_teacher[1])
    assert rec.status is Status.READY
    report = registry.verify()
    assert report.ok == report.checked >= 1
    model = bert()
    model.load_state_dict(dict(registry.load(rec).tensors))  # tied weights come back whole
