"""RecycleConfig: defaults, construction, validation with key paths, YAML and dict round trips."""

from __future__ import annotations

import dataclasses
import doctest
import pickle
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

import recycler.config
from recycler.config import DistillConfig, RecycleConfig, RegisterConfig, TeachersConfig
from recycler.errors import ConfigError
from recycler.schedule import ALWAYS, Schedule
from recycler.time import Time

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "recycle.yaml"

DEFAULTS: dict[str, Any] = {
    "registry": "sqlite:///recycler.db",
    "blobs": "./recycler-teachers",
    "study": None,
    "summary": True,
    "distill": {
        "loss": "mse",
        "loss_options": {},
        "weight": 1.0,
        "temperature": 4.0,
        "schedule": "always",
        "standardize": True,
        "warmup": None,
        "cache": False,
        "cache_max_bytes": 512 * 1024 * 1024,
        "only_correct": False,
    },
    "teachers": {
        "pool": 5,
        "policy": "best",
        "per_step": 1,
        "min_pool": 1,
        "refresh": "1ep",
        "studies": [],
        "include_pruned": True,
        "include_intermediate": False,
        "quality_gate": True,
        "chance_metric": None,
        "min_skill": 0.5,
        "retire": True,
        "max_on_device": 5,
        "autocast": None,
        "fused": True,
        "seed": None,
    },
    "register": {"on": ["complete", "pruned"], "enabled": True, "every": None},
    "budget": {"scale": 1.0, "min": 0.25, "max": 1.0, "margin": 0.1, "evidence": 5, "fresh": 1.0},
    "init": {"from": "none", "shrink": 1.0, "perturb": 0.0},
}


def test_defaults() -> None:
    cfg = RecycleConfig()
    assert cfg.to_dict() == DEFAULTS
    assert cfg.distill.schedule is ALWAYS
    assert cfg.teachers.refresh == Time.parse("1ep")
    assert cfg.register.on == ("complete", "pruned")
    assert (
        RecycleConfig.from_dict({})
        == cfg
        == RecycleConfig.from_yaml("")
        == RecycleConfig.coerce(None)
    )


def test_example_yaml_states_every_option_at_its_default() -> None:
    assert RecycleConfig.from_yaml(EXAMPLE) == RecycleConfig()
    assert RecycleConfig.from_yaml(str(EXAMPLE)) == RecycleConfig()
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert raw == DEFAULTS  # every option is written out, and with its default value
    lines = [line for line in EXAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    for before, line in pairwise(lines):  # each option has a comment, on it or above it
        if line.lstrip().startswith("#") or line.strip() in ("distill:", "teachers:", "register:"):
            continue
        assert "#" in line or before.lstrip().startswith("#"), line


def test_build_from_python() -> None:
    cfg = RecycleConfig(
        registry="postgresql+psycopg://me@db/sweeps",
        study="lr-sweep",
        distill=DistillConfig(loss="kl", temperature=2, schedule="every 20ep for 2ep"),  # type: ignore[arg-type]
        teachers={"policy": "diverse", "per_step": "all", "studies": ["old-sweep"]},  # type: ignore[arg-type]
        register=RegisterConfig(on=("complete",), every="10ep"),  # type: ignore[arg-type]
    )
    assert cfg.distill.temperature == 2.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.distill.schedule == Schedule.parse({"every": "20ep", "for": "2ep"})
    assert isinstance(cfg.teachers, TeachersConfig)
    assert (cfg.teachers.policy, cfg.teachers.per_step) == ("diverse", "all")
    assert cfg.teachers.studies == ("old-sweep",)
    assert cfg.register.every == Time.parse("10ep")
    assert RecycleConfig.from_dict(cfg.to_dict()) == cfg


def test_dict_and_yaml_round_trip() -> None:
    data = {
        "registry": "postgresql+psycopg://user:pw@host/db",
        "blobs": "s3://bucket/teachers",
        "study": "bert-mlm",
        "distill": {
            "loss": "kl",
            "weight": 0.5,
            "schedule": ["until 10ep", {"from": "50ep"}, {"every": "20ep", "for": "2ep"}],
            "warmup": "0.05dur",
            "cache": True,
            "cache_max_bytes": 1024,
        },
        "teachers": {
            "pool": 8,
            "policy": "all",
            "per_step": "all",
            "min_pool": 10,
            "refresh": None,
            "studies": ["a", "b"],
            "chance_metric": 0.01,
            "autocast": "bfloat16",
            "seed": 7,
        },
        "register": {"on": ["pruned"], "enabled": False, "every": "500ba"},
    }
    cfg = RecycleConfig.from_dict(data)
    assert str(cfg.distill.schedule) == "until 10ep, from 50ep, every 20ep for 2ep"
    assert cfg.distill.warmup == Time.parse("0.05dur")
    assert cfg.teachers.refresh is None
    as_dict = cfg.to_dict()
    assert as_dict["distill"]["schedule"] == "until 10ep, from 50ep, every 20ep for 2ep"
    assert as_dict["teachers"]["studies"] == ["a", "b"]
    assert RecycleConfig.from_dict(as_dict) == cfg
    text = cfg.to_yaml()
    assert yaml.safe_load(text) == as_dict
    assert RecycleConfig.from_yaml(text) == cfg


def test_yaml_file_and_bare_on_key(tmp_path: Path) -> None:
    path = tmp_path / "recycle.yaml"
    path.write_text(
        "distill:\n  schedule: {every: 10ep, for: 1ep}\nregister:\n  on: [complete]\n",
        encoding="utf-8",
    )
    # YAML 1.1 reads the bare key `on` as true; the register section takes it as "on"
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["register"] == {True: ["complete"]}
    for source in (path, str(path)):
        cfg = RecycleConfig.from_yaml(source)
        assert cfg.register.on == ("complete",)
        assert str(cfg.distill.schedule) == "every 10ep for 1ep"
    assert RecycleConfig.coerce(path) == RecycleConfig.from_yaml(path)


def test_coerce() -> None:
    cfg = RecycleConfig(study="s")
    assert RecycleConfig.coerce(cfg) is cfg
    assert RecycleConfig.coerce({"study": "s"}) == cfg
    assert RecycleConfig.coerce("study: s") == cfg
    with pytest.raises(
        ConfigError, match=r"expected a RecycleConfig, a dict or a YAML path, got 5"
    ):
        RecycleConfig.coerce(5)  # type: ignore[arg-type]


def test_repr_hides_passwords() -> None:
    cfg = RecycleConfig(
        registry="postgresql+psycopg://me:hunter2@db/sweeps?sslmode=require",
        blobs="s3://key:secretkey@bucket/prefix",
    )
    shown = repr(cfg)
    assert "hunter2" not in shown and "secretkey" not in shown
    assert "registry='postgresql+psycopg://me:***@db/sweeps?sslmode=require'" in shown
    assert "blobs='s3://key:***@bucket/prefix'" in shown
    assert str(cfg) == shown
    assert cfg.registry.endswith("me:hunter2@db/sweeps?sslmode=require")  # the value itself is kept


def test_frozen_hashable_and_picklable() -> None:
    cfg = RecycleConfig.from_dict({"distill": {"schedule": "every 20ep for 2ep"}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.study = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.distill.weight = 2.0  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert hash(cfg) == hash(RecycleConfig.from_dict(cfg.to_dict()))


ACCEPTED: list[tuple[dict[str, Any], str, Any]] = [
    ({"distill": {"weight": 0}}, "distill.weight", 0.0),
    ({"distill": {"temperature": 1}}, "distill.temperature", 1.0),
    ({"distill": {"warmup": "0ep"}}, "distill.warmup", Time.parse("0ep")),
    ({"distill": {"warmup": Time.parse("2ep")}}, "distill.warmup", Time.parse("2ep")),
    ({"distill": {"schedule": "never"}}, "distill.schedule", Schedule.parse("never")),
    ({"teachers": {"per_step": 3}}, "teachers.per_step", 3),
    ({"teachers": {"studies": "old"}}, "teachers.studies", ("old",)),
    ({"teachers": {"studies": ["a", "b", "a"]}}, "teachers.studies", ("a", "b")),
    ({"teachers": {"seed": 0}}, "teachers.seed", 0),
    ({"teachers": {"chance_metric": 0}}, "teachers.chance_metric", 0.0),
    ({"teachers": {"autocast": "float16"}}, "teachers.autocast", "float16"),
    ({"teachers": {"policy": "all", "pool": 1, "min_pool": 4}}, "teachers.min_pool", 4),
    ({"register": {"on": ["pruned", "complete"]}}, "register.on", ("complete", "pruned")),
    ({"register": {"on": "pruned"}}, "register.on", ("pruned",)),
    ({"register": {"on": []}}, "register.on", ()),
    ({"blobs": Path("/tmp/t")}, "blobs", "/tmp/t"),
]


@pytest.mark.parametrize(("data", "path", "value"), ACCEPTED, ids=[a[1] for a in ACCEPTED])
def test_accepted_values(data: dict[str, Any], path: str, value: Any) -> None:
    cfg: Any = RecycleConfig.from_dict(data)
    for name in path.split("."):
        cfg = getattr(cfg, name)
    assert cfg == value and type(cfg) is type(value)


REJECTED: list[tuple[Any, str]] = [
    ({"distill": {"weight": -1}}, "distill.weight: -1 must be >= 0.0"),
    ({"distill": {"weight": "1.0"}}, "distill.weight: expected a finite number, got '1.0'"),
    ({"distill": {"weight": float("inf")}}, "distill.weight: expected a finite number, got inf"),
    ({"distill": {"weight": True}}, "distill.weight: expected a finite number, got True"),
    ({"distill": {"temperature": 0}}, "distill.temperature: 0 must be > 0.0"),
    ({"distill": {"loss": "l2"}}, "distill.loss: 'l2' is not one of mse, kl"),
    ({"distill": {"standardize": "yes"}}, "distill.standardize: expected true or false, got 'yes'"),
    ({"distill": {"cache": 1}}, "distill.cache: expected true or false, got 1"),
    ({"distill": {"cache_max_bytes": 0}}, "distill.cache_max_bytes: 0 must be >= 1"),
    (
        {"distill": {"cache_max_bytes": 1.5}},
        "distill.cache_max_bytes: expected an integer >= 1, got 1.5",
    ),
    ({"distill": {"warmup": "2tr"}}, "distill.warmup: 2tr counts trials; use ep, ba or dur"),
    ({"distill": {"warmup": "1 ep"}}, "distill.warmup: invalid time '1 ep': use an integer"),
    ({"distill": {"warmup": 100}}, "distill.warmup: invalid time 100: expected a string"),
    ({"distill": {"schedule": "every 10ep"}}, "distill.schedule: invalid schedule 'every 10ep'"),
    ({"distill": {"schedule": {"evry": "1ep"}}}, "distill.schedule: invalid schedule {'evry'"),
    (
        {"teachers": {"policy": "bestest"}},
        "teachers.policy: 'bestest' is not one of best, random, recent, diverse, all",
    ),
    ({"teachers": {"pool": 0}}, "teachers.pool: 0 must be >= 1"),
    ({"teachers": {"pool": 5.0}}, "teachers.pool: expected an integer >= 1, got 5.0"),
    ({"teachers": {"per_step": 0}}, "teachers.per_step: 0 must be >= 1"),
    ({"teachers": {"per_step": "al"}}, "teachers.per_step: 'al' is not all or an integer >= 1"),
    ({"teachers": {"min_pool": 0}}, "teachers.min_pool: 0 must be >= 1"),
    (
        {"teachers": {"pool": 2, "min_pool": 3}},
        "teachers.min_pool: 3 is more than teachers.pool (2); raise pool, or lower min_pool",
    ),
    (
        {"teachers": {"pool": 2, "per_step": 3}},
        "teachers.per_step: 3 is more than teachers.pool (2); raise pool, or lower per_step "
        "(or use all)",
    ),
    (
        {"teachers": {"refresh": "0ep"}},
        "teachers.refresh: 0ep must be more than zero (or null for never)",
    ),
    ({"teachers": {"studies": [""]}}, "teachers.studies: expected a non-empty string, got ''"),
    (
        {"teachers": {"studies": {"a": 1}}},
        "teachers.studies: expected a list of strings, got {'a': 1}",
    ),
    (
        {"teachers": {"chance_metric": float("nan")}},
        "teachers.chance_metric: expected a finite number, got nan",
    ),
    ({"teachers": {"max_on_device": 0}}, "teachers.max_on_device: 0 must be >= 1"),
    (
        {"teachers": {"autocast": "fp16"}},
        "teachers.autocast: 'fp16' is not one of float16, bfloat16",
    ),
    ({"teachers": {"fused": None}}, "teachers.fused: expected true or false, got None"),
    ({"teachers": {"seed": -1}}, "teachers.seed: -1 must be >= 0"),
    ({"register": {"on": ["done"]}}, "register.on: 'done' is not one of complete, pruned"),
    ({"register": {"enabled": "no"}}, "register.enabled: expected true or false, got 'no'"),
    ({"register": {"every": "1tr"}}, "register.every: 1tr counts trials; use ep, ba or dur"),
    ({"registry": ""}, "registry: expected a non-empty string, got ''"),
    ({"blobs": None}, "blobs: expected a non-empty string, got None"),
    ({"study": 3}, "study: expected a non-empty string, got 3"),
    ({"distill": 5}, "distill: expected a mapping of distill options, got 5"),
    ({"teachers": ["pool"]}, "teachers: expected a mapping of teachers options, got ['pool']"),
    # unknown keys, with the allowed ones and a suggestion
    (
        {"distill": {"wieght": 1}},
        "distill.wieght: unknown option (did you mean 'weight'?); distill options are loss, "
        "loss_options, weight, temperature, schedule, standardize, warmup, cache, cache_max_bytes, "
        "only_correct",
    ),
    (
        {"regsitry": "x"},
        "regsitry: unknown option (did you mean 'registry'?); top-level options are registry, "
        "blobs, study, summary, distill, teachers, register, budget, init",
    ),
    ({"teachers": {"colour": 1}}, "teachers.colour: unknown option; teachers options are pool,"),
    ({"register": {"enable": 1}}, "register.enable: unknown option (did you mean 'enabled'?)"),
]


@pytest.mark.parametrize(("data", "message"), REJECTED, ids=[r[1].split(":")[0] for r in REJECTED])
def test_rejected_values_name_the_key(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RecycleConfig.from_dict(data)
    assert str(info.value).startswith(message), str(info.value)


def test_errors_from_python_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^distill\.weight: -2\.0 must be >= 0\.0$"):
        DistillConfig(weight=-2.0)
    with pytest.raises(ConfigError, match=r"^teachers\.policy: 'bestest' is not one of"):
        RecycleConfig(teachers={"policy": "bestest"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^register\.on: 'x' is not one of complete, pruned$"):
        RegisterConfig(on=("x",))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DistillConfig(wieght=1.0)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "the config must be a mapping of options, got [1, 2]"),
        (
            "no-such-file.yaml",
            "got 'no-such-file.yaml' (if this is a file path, no such file exists)",
        ),
        ("a: [", "the config is not valid YAML"),
        ("distill: {weight: x}", "distill.weight: expected a finite number, got 'x'"),
        ("register:\n  on: maybe\n", "register.on: 'maybe' is not one of complete, pruned"),
    ],
)
def test_yaml_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RecycleConfig.from_yaml(text)
    assert message in str(info.value)


def test_core_modules_do_not_import_framework_extras() -> None:
    code = (
        "import sys, recycler.config, recycler.schedule, recycler.time; "
        "print(sorted(m for m in ('optuna', 'ray', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_doctests() -> None:
    assert doctest.testmod(recycler.config, raise_on_error=True).attempted > 0
