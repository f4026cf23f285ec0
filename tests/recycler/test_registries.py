"""Losses and pool policies by name: registering one makes it valid in the config too."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_sampling import rec
from torch import Tensor

import recycler
from recycler import losses, sampling
from recycler._names import LOSSES, POLICIES, NameRegistry
from recycler.config import RecycleConfig
from recycler.errors import ConfigError
from recycler.losses import KDTerm, get_loss, loss_names, register_loss
from recycler.sampling import (
    get_policy,
    policy_names,
    register_policy,
    select_pool,
)
from storage import TeacherRecord

SCRATCH_LOSSES = ("l1", "needs-beta", "anything")
SCRATCH_POLICIES = ("worst", "worst-first")


@pytest.fixture(autouse=True)
def scratch() -> Iterator[None]:
    """Forget every name these tests register, whatever happens in the test."""
    yield
    for name in SCRATCH_LOSSES:
        LOSSES.pop(name)
    for name in SCRATCH_POLICIES:
        POLICIES.pop(name)


def l1(student: Tensor, teacher: Tensor, temperature: float, *, beta: float = 1.0) -> Tensor:
    del temperature
    return beta * (student - teacher).abs().mean()


def worst(recs: list[TeacherRecord], k: int, rng: random.Random) -> list[TeacherRecord]:
    return sorted(recs, key=lambda r: (r.metric_value or 0.0, r.id))[:k]


POOL = [rec(1, 0.9), rec(2, 0.2), rec(3, 0.5), rec(4, 0.1), rec(5, 0.7)]


# ---------------------------------------------------------------- end to end, through YAML


def test_custom_loss_with_an_option_from_a_yaml_file(tmp_path: Path) -> None:
    register_loss("l1", l1)
    path = tmp_path / "recycle.yaml"
    path.write_text(
        "distill:\n  loss: l1\n  loss_options: {beta: 0.5}\n  standardize: false\n",
        encoding="utf-8",
    )
    cfg = RecycleConfig.from_yaml(path)
    assert cfg.distill.loss == "l1"
    assert cfg.distill.loss_options == {"beta": 0.5}
    term = KDTerm.from_config(cfg.distill)
    assert (term.kind, term.options, term.standardize) == ("l1", {"beta": 0.5}, False)
    student = torch.zeros(2, 3, requires_grad=True)
    teacher = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, -6.0]])
    # by hand: 0.5 * mean(|0 - t|) = 0.5 * (1 + 2 + 3 + 4 + 5 + 6) / 6 = 0.5 * 3.5
    assert float(term(student, teacher).detach()) == 1.75
    (grad,) = torch.autograd.grad(term(student, teacher), student)
    assert torch.allclose(grad, -0.5 * teacher.sign() / 6)
    # the options survive the round trips, and the config stays hashable
    again = RecycleConfig.from_yaml(cfg.to_yaml())
    assert again == cfg and hash(again) == hash(cfg)
    assert cfg.to_dict()["distill"]["loss_options"] == {"beta": 0.5}


def test_custom_loss_default_options_and_kwargs() -> None:
    register_loss("l1", l1)
    term = KDTerm.from_config(RecycleConfig.from_dict({"distill": {"loss": "l1"}}).distill)
    assert term.fn is l1  # no options: the function itself
    assert float(KDTerm("l1", standardize=False)(torch.zeros(1, 2), torch.ones(1, 2))) == 1.0

    def anything(s: Tensor, t: Tensor, tau: float, **options: Any) -> Tensor:
        return (s - t).abs().mean() * float(options.get("scale", 1.0))

    register_loss("anything", anything)
    cfg = RecycleConfig.from_dict({"distill": {"loss": "anything", "loss_options": {"x": 1}}})
    assert cfg.distill.loss_options == {"x": 1}


def test_builtins_are_unchanged_through_from_config() -> None:
    s, t = torch.randn(16, 10), 20 * torch.randn(16, 10)
    for loss in ("mse", "kl"):
        cfg = RecycleConfig.from_dict({"distill": {"loss": loss, "temperature": 2.0}})
        term = KDTerm.from_config(cfg.distill)
        assert term.fn is get_loss(loss)
        assert torch.equal(term(s, t), losses.kd_loss(s, t, kind=loss, temperature=2.0))


def test_custom_policy_through_the_config() -> None:
    register_policy("worst", worst)
    cfg = RecycleConfig.from_yaml("teachers:\n  policy: worst\n  pool: 2\n").teachers
    picked = select_pool(POOL, policy=cfg.policy, k=cfg.pool, rng=random.Random(0))
    assert [r.id for r in picked] == [4, 2]
    assert get_policy("worst") is worst and "worst" in policy_names()
    assert select_pool(POOL, policy="worst", k=None)[-1].id == 1


# ---------------------------------------------------------------- errors name the field


def test_unknown_names_list_the_registered_ones() -> None:
    register_loss("l1", l1)
    register_policy("worst", worst)
    with pytest.raises(ConfigError, match=r"^distill\.loss: 'xx' is not one of mse, kl, l1$"):
        RecycleConfig.from_dict({"distill": {"loss": "xx"}})
    with pytest.raises(
        ConfigError,
        match=r"^teachers\.policy: 'wrst' is not one of best, random, recent, diverse, all, worst$",
    ):
        RecycleConfig.from_yaml("teachers: {policy: wrst}")
    with pytest.raises(ConfigError, match=r"unknown pool policy 'wrst' \(did you mean 'worst'\?\)"):
        select_pool(POOL, policy="wrst")
    with pytest.raises(ConfigError, match=r"unknown KD loss 'l11' \(did you mean 'l1'\?\)"):
        get_loss("l11")


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        (
            {"loss_options": {"beta": 0.5}},
            "distill.loss_options.beta: unknown option; KD loss 'mse' takes no options",
        ),
        (
            {"loss": "kl", "loss_options": {"tau": 2}},
            "distill.loss_options.tau: unknown option; KD loss 'kl' takes no options",
        ),
        (
            {"loss": "l1", "loss_options": {"bta": 0.5}},
            "distill.loss_options.bta: unknown option (did you mean 'beta'?); "
            "KD loss 'l1' takes beta",
        ),
        (
            {"loss": "needs-beta"},
            "distill.loss_options: KD loss 'needs-beta' needs the option 'beta'",
        ),
        (
            {"loss_options": [1]},
            "distill.loss_options: expected a mapping of option names to values, got [1]",
        ),
        (
            {"loss_options": {1: 2}},
            "distill.loss_options: option names must be identifiers, got 1",
        ),
    ],
)
def test_bad_loss_options_name_the_field(distill: dict[str, Any], message: str) -> None:
    register_loss("l1", l1)

    def needs_beta(s: Tensor, t: Tensor, tau: float, *, beta: float) -> Tensor:
        return beta * (s - t).abs().mean()

    register_loss("needs-beta", needs_beta)
    with pytest.raises(ConfigError) as info:
        RecycleConfig.from_dict({"distill": distill})
    assert str(info.value) == message


def test_kd_term_checks_its_options() -> None:
    with pytest.raises(ConfigError, match=r"^options\.beta: unknown option; KD loss 'mse'"):
        KDTerm("mse", options={"beta": 1.0})
    register_loss("l1", l1)
    with pytest.raises(ConfigError, match=r"^options\.gamma: unknown option; KD loss 'l1' takes"):
        KDTerm("l1", options={"gamma": 1.0})


def test_registering_a_taken_name_needs_replace() -> None:
    for builtin in ("mse", "kl"):
        with pytest.raises(ConfigError, match=f"KD loss '{builtin}' is already registered"):
            register_loss(builtin, l1)
    with pytest.raises(ConfigError, match="pool policy 'best' is already registered"):
        register_policy("best", worst)
    register_policy("worst", worst)
    with pytest.raises(ConfigError, match="replace=True"):
        register_policy("worst", worst)
    register_policy("worst", lambda recs, k, rng: recs[:1], replace=True)
    assert [r.id for r in select_pool(POOL, policy="worst", k=3)] == [1]
    with pytest.raises(ConfigError, match="must be callable"):
        register_policy("worst-first", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="non-empty"):
        register_policy(" ", worst)
    assert loss_names() == ["kl", "mse"] and policy_names()[0] == "all"


# ---------------------------------------------------------------- the registry itself


def test_name_registry_basics() -> None:
    shapes: NameRegistry[Any] = NameRegistry("shape", arity=1)
    assert list(shapes) == [] and len(shapes) == 0 and "x" not in shapes
    shapes.register("square", lambda side: side * side)
    shapes.register("circle", lambda radius, *, pi=3.0: pi * radius * radius)
    assert shapes.names() == ["square", "circle"] and len(shapes) == 2
    assert shapes.get("circle")(2.0) == 12.0
    shapes.check_options("circle", {"pi": 3.14}, "shapes")
    assert repr(shapes) == "NameRegistry('shape', names=['square', 'circle'])"
    with pytest.raises(ConfigError, match=r"unknown shape \[1\]: choose one of circle, square"):
        shapes.get([1])  # type: ignore[arg-type]
    assert shapes.pop("square") is not None and shapes.pop("square") is None
    assert shapes.names() == ["circle"]


def test_public_api_and_module_registries() -> None:
    assert "register_policy" in recycler.__all__ and "register_loss" in recycler.__all__
    assert recycler.register_policy is register_policy
    assert sampling.POLICIES is POLICIES and losses._REGISTRY is LOSSES
    assert list(POLICIES)[:5] == ["best", "random", "recent", "diverse", "all"]


def test_config_knows_the_builtin_names_without_torch() -> None:
    code = (
        "import sys; from recycler._names import LOSSES; "
        "from recycler.config import RecycleConfig; "
        "names = LOSSES.names(); "
        "RecycleConfig.from_dict({'distill': {'loss': 'kl'}, 'teachers': {'policy': 'all'}})\n"
        "try:\n"
        "    RecycleConfig.from_dict({'distill': {'loss_options': {'beta': 1}}})\n"
        "except ValueError as exc:\n"
        "    error = str(exc)\n"
        "print(names, 'torch' in sys.modules, error)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "['mse', 'kl'] False "
        "distill.loss_options.beta: unknown option; KD loss 'mse' takes no options"
    )


def test_a_distiller_uses_the_registered_loss_and_policy(tmp_path: Path) -> None:
    from _kd_helpers import batch, fill, make_net

    from recycler.distiller import Distiller
    from storage import Registry

    register_loss("l1", l1)
    register_policy("worst", worst)
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs")
    ids = fill(reg, 3)  # metrics 0.5, 0.6, 0.7: "worst" with pool 1 picks the first
    path = tmp_path / "recycle.yaml"
    path.write_text(
        f"registry: {reg.url}\nblobs: {tmp_path / 'blobs'}\n"
        "distill: {loss: l1, loss_options: {beta: 0.5}, standardize: false, weight: 2.0}\n"
        "teachers: {policy: worst, pool: 1}\n",
        encoding="utf-8",
    )
    student = make_net(seed=7)
    kd = Distiller(RecycleConfig.from_yaml(path), study="s", trial_number=9, registry=reg,
                   model=student, background_refresh=False)  # fmt: skip
    x, y = batch()
    logits = student(x)
    got = kd.loss(logits, y, x)
    assert [r.id for r in kd.teachers] == [ids[0]]
    teacher = make_net()
    teacher.load_state_dict(dict(reg.load(ids[0]).tensors))
    with torch.no_grad():
        want = torch.nn.functional.cross_entropy(logits, y) + 2.0 * 0.5 * (
            (logits - teacher.eval()(x)).abs().mean()
        )
    assert torch.allclose(got, want, atol=1e-6)
