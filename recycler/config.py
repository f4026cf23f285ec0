"""RecycleConfig: every option of recycler, validated; from Python, a dict or YAML.

Every value is checked when the config is built; a bad one raises :class:`ConfigError` naming
its key path and what is allowed, e.g. ``teachers.policy: 'bestest' is not one of best, random,
recent, diverse, all``. ``examples/recycle.yaml`` lists every option with its default.

Example:
    >>> cfg = RecycleConfig.from_dict({"distill": {"schedule": "every 20ep for 2ep"}})
    >>> cfg.distill.schedule.fraction(planned_epochs=200), cfg.teachers.pool
    (0.1, 5)
    >>> RecycleConfig.from_dict({"teachers": {"policy": "bestest"}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recycler.errors.ConfigError: teachers.policy: 'bestest' is not one of best, random, recent, ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from ._config_checks import (
    Check,
    Options,
    S,
    _Section,
    _section_coercer,
    a_bool,
    a_float,
    a_schedule,
    an_int,
    choice,
    keyword_options,
    optional,
    shown,
    strings,
    text,
    time_span,
)
from ._config_yaml import load_yaml
from ._names import LOSSES, POLICIES
from ._storage import StorageError, display_url, sqlite_file
from .errors import ConfigError
from .schedule import ALWAYS, Schedule
from .time import Time, TimeUnit

__all__ = [
    "BudgetConfig",
    "DistillConfig",
    "InitConfig",
    "RecycleConfig",
    "RegisterConfig",
    "TeachersConfig",
]

MiB = 1 << 20
AUTOCAST = ("float16", "bfloat16")
REGISTER_ON: tuple[Literal["complete", "pruned"], ...] = ("complete", "pruned")
_ONE_EPOCH = Time(1, TimeUnit.EPOCH)


@dataclass(frozen=True)
class DistillConfig(_Section):
    """The KD term: loss ``D``, weight λ, and when it is on.

    ``loss`` is any name registered with :func:`recycler.losses.register_loss` (built in:
    ``mse``, ``kl``), checked against the registry when the config is built. ``loss_options``
    are that loss's own keyword options (``{beta: 0.5}`` for ``fn(s, t, tau, *, beta=1.0)``);
    the built-ins take none, and an option the loss does not take is a ConfigError naming it.
    Build the term with :meth:`recycler.losses.KDTerm.from_config`.

    Example:
        >>> DistillConfig(loss="kl", temperature=2.0).loss
        'kl'
        >>> DistillConfig(loss_options={"beta": 0.5})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        recycler.errors.ConfigError: distill.loss_options.beta: unknown option; KD loss 'mse' ...
    """

    loss: str = "mse"  # D: a registered loss; built in: mse on logits, kl with temperature
    loss_options: Mapping[str, Any] = Options()  # the loss's own keyword options
    weight: float = 1.0  # λ in CE + λ·D, >= 0
    temperature: float = 4.0  # τ of kl (scaled by τ²), > 0
    schedule: Schedule = ALWAYS  # when KD is on; anything Schedule.parse accepts
    standardize: bool = True  # z-score each sample's logits before the loss (stable default)
    warmup: Time | None = None  # λ ramps linearly from 0 over this span
    cache: bool = False  # teacher-logit cache (needs stable sample ids, no random augmentation)
    cache_max_bytes: int = 512 * MiB  # the cache's memory bound, > 0
    only_correct: bool = False  # distil only samples the teachers' mean gets right (Liu App. B)

    _name: ClassVar[str] = "distill"
    _checks: ClassVar[dict[str, Check]] = {
        "loss": choice(LOSSES),
        "loss_options": keyword_options,
        "weight": a_float(minimum=0.0),
        "temperature": a_float(above=0.0),
        "schedule": a_schedule,
        "standardize": a_bool,
        "warmup": optional(time_span(allow_zero=True)),
        "cache": a_bool,
        "cache_max_bytes": an_int(minimum=1),
        "only_correct": a_bool,
    }

    def _check_together(self) -> None:
        LOSSES.check_options(self.loss, self.loss_options, self._path("loss_options"))


@dataclass(frozen=True)
class TeachersConfig(_Section):
    """Which earlier trials teach, how many per step, and where they run.

    Example:
        >>> TeachersConfig(policy="diverse", per_step="all").per_step
        'all'
    """

    pool: int = 5  # how many teachers form the pool (policy "all" takes every eligible one)
    policy: str = "best"  # a registered pool policy (register_policy); built in: see select_pool
    per_step: int | Literal["all"] = 1  # teachers sampled per distilled step; "all" = ensemble
    min_pool: int = 1  # no KD until this many teachers exist (>= 1: KD needs a teacher)
    refresh: Time | None = _ONE_EPOCH  # re-query the registry; None = never
    studies: tuple[str, ...] = ()  # more studies whose teachers count; the trial's own always
    include_pruned: bool = True  # pruned trials teach too (early-stopped models often help)
    include_intermediate: bool = False  # intermediate checkpoints teach too
    quality_gate: bool = True  # leave out non-finite and no-better-than-chance teachers
    chance_metric: float | None = None  # the metric at chance (0.1: 10 classes); None = infer
    min_skill: float = 0.5  # quality gate: gain over chance >= this fraction of the best's
    retire: bool = True  # a teacher the student beats on the same labelled batches stops
    max_on_device: int = 5  # teachers kept on the student's device; the rest wait on the CPU
    autocast: Literal["float16", "bfloat16"] | None = None  # teachers' forward dtype
    fused: bool = True  # same-architecture teachers of a step run as one fused call
    seed: int | None = None  # seeds pool and per-step sampling; None = fresh randomness

    _name: ClassVar[str] = "teachers"
    _checks: ClassVar[dict[str, Check]] = {
        "pool": an_int(minimum=1),
        "policy": choice(POLICIES),
        "per_step": choice(("all",), or_else=an_int(minimum=1), also="an integer >= 1"),
        "min_pool": an_int(minimum=1),
        "refresh": optional(time_span()),
        "studies": strings(),
        "include_pruned": a_bool,
        "include_intermediate": a_bool,
        "quality_gate": a_bool,
        "chance_metric": optional(a_float()),
        "min_skill": a_float(minimum=0.0),
        "retire": a_bool,
        "max_on_device": an_int(minimum=1),
        "autocast": optional(choice(AUTOCAST)),
        "fused": a_bool,
        "seed": optional(an_int(minimum=0)),
    }

    def _check_together(self) -> None:
        if self.policy == "all":
            return  # the pool is every eligible teacher: no bound to compare with
        for name in ("min_pool", "per_step"):
            value = getattr(self, name)
            if isinstance(value, int) and value > self.pool:
                raise ConfigError(
                    f"teachers.{name}: {value} is more than teachers.pool ({self.pool}); "
                    f"raise pool, or lower {name}" + (" (or use all)" if name == "per_step" else "")
                )


@dataclass(frozen=True)
class RegisterConfig(_Section):
    """Which of this trial's models become teachers.

    Example:
        >>> RegisterConfig(on=("complete",)).on
        ('complete',)
    """

    on: tuple[Literal["complete", "pruned"], ...] = REGISTER_ON  # finished states that teach
    enabled: bool = True  # False: this trial learns from others but never teaches
    every: Time | None = None  # also register intermediate checkpoints this often

    _name: ClassVar[str] = "register"
    _checks: ClassVar[dict[str, Check]] = {
        "on": strings(REGISTER_ON),
        "enabled": a_bool,
        "every": optional(time_span()),
    }

    @classmethod
    def from_dict(cls: type[S], data: Mapping[Any, Any]) -> S:
        if isinstance(data, Mapping) and True in data:  # YAML 1.1 reads a bare `on:` as True
            data = {("on" if key is True else key): value for key, value in data.items()}
        return super().from_dict(data)


def a_fraction(value: Any, path: str) -> float:
    """A number in (0, 1]."""
    number = float(a_float(above=0.0)(value, path))
    if number > 1.0:
        raise ConfigError(f"{path}: {value!r} must be at most 1 (a fraction of the plan)")
    return number


@dataclass(frozen=True)
class BudgetConfig(_Section):
    """How long a trial that has a pool trains: a fraction of its planned length.

    KD's quality gain turned into time (Blakeney et al. 2022 §5.1: 45 of 90 epochs reached the
    baseline). ``scale``: a fraction in (0, 1], or ``auto``: the median point of their plan at
    which this study's earlier recycled trials first reached their best teacher's metric, plus
    ``margin``, within ``[min, max]`` (``max`` until there is evidence). A trial without a pool
    always trains its whole plan. With ``init.from: best``, the budget is a bet on the head
    start: ``auto`` reads only trials that started from a parent, and a trial that found no
    compatible parent (e.g. another width) trains ``fresh`` of its plan (default the whole
    plan: KD alone at a short budget falls behind). The loop reads the effective length from
    ``kd.epochs`` / ``kd.steps``; a trial's value then comes from a shorter run with KD: that
    is the method.

    Example:
        >>> BudgetConfig(scale=0.5).scale, BudgetConfig(scale="auto").min
        (0.5, 0.25)
    """

    scale: float | Literal["auto"] = 1.0  # fraction of the plan for a trial with a pool
    min: float = 0.25  # auto: never below this fraction
    max: float = 1.0  # auto: never above it (and what auto uses before there is evidence)
    margin: float = 0.1  # auto: added to the evidence's fraction
    evidence: int = 5  # auto: how many of the latest recycled trials count
    fresh: float = 1.0  # with init.from best: the fraction for a trial with no parent

    _name: ClassVar[str] = "budget"
    _checks: ClassVar[dict[str, Check]] = {
        "scale": choice(("auto",), or_else=a_fraction, also="a fraction in (0, 1]"),
        "min": a_fraction,
        "max": a_fraction,
        "margin": a_float(minimum=0.0),
        "evidence": an_int(minimum=1),
        "fresh": a_fraction,
    }

    def _check_together(self) -> None:
        if self.min > self.max:
            raise ConfigError(f"budget.min: {self.min} is more than budget.max ({self.max})")


@dataclass(frozen=True)
class InitConfig(_Section):
    """Weight recycling: start a trial from the best compatible earlier teacher.

    ``from: best`` takes the best eligible teacher of the pool's studies whose parameters
    have the student's names and shapes, and sets θ = shrink·θ_teacher + perturb·θ_fresh
    (``shrink: 1, perturb: 0`` is a warm start; e.g. ``0.5``/``0.1`` is shrink-and-perturb,
    Ash & Adams 2020, which keeps warm-starting's speed without its generalisation loss).
    With no compatible teacher the trial starts fresh, and says so once.

    Example:
        >>> InitConfig.from_dict({"from": "best", "shrink": 0.5, "perturb": 0.1}).source
        'best'
    """

    source: Literal["none", "best"] = "none"  # YAML key: from
    shrink: float = 1.0
    perturb: float = 0.0

    _name: ClassVar[str] = "init"
    _checks: ClassVar[dict[str, Check]] = {
        "source": choice(("none", "best")),
        "shrink": a_float(minimum=0.0),
        "perturb": a_float(minimum=0.0),
    }

    @classmethod
    def from_dict(cls: type[S], data: Mapping[Any, Any]) -> S:
        if isinstance(data, Mapping) and "from" in data:
            data = {("source" if key == "from" else key): value for key, value in data.items()}
        return super().from_dict(data)

    @classmethod
    def _path(cls, name: str) -> str:
        return super()._path("from" if name == "source" else name)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        return {"from": out.pop("source"), **out}


_SECTIONS: dict[str, type[_Section]] = {
    "distill": DistillConfig,
    "teachers": TeachersConfig,
    "register": RegisterConfig,
    "budget": BudgetConfig,
    "init": InitConfig,
}


@dataclass(frozen=True, repr=False)
class RecycleConfig(_Section):
    """Every option of recycler (see ``examples/recycle.yaml``), validated when built.

    Sections may be given as dicts. The registry URL's password never shows in ``repr``.

    Example:
        >>> cfg = RecycleConfig(registry="postgresql+psycopg://me:secret@db/sweeps",
        ...                     distill={"weight": 0.5, "schedule": "until 0.3dur"})
        >>> cfg.distill.weight, str(cfg.distill.schedule), "secret" in repr(cfg)
        (0.5, 'until 0.3dur', False)
    """

    registry: str = "sqlite:///recycler.db"  # the registry's database URL
    blobs: str = "./recycler-teachers"  # folder or fsspec URL (s3://bucket/prefix) of weights
    study: str | None = None  # registry study name; None = the framework's study name
    summary: bool = True  # one INFO line per trial on the 'recycler' logger; False = quiet
    distill: DistillConfig = field(default_factory=DistillConfig)
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    init: InitConfig = field(default_factory=InitConfig)

    _name: ClassVar[str] = ""
    _checks: ClassVar[dict[str, Check]] = {
        "registry": text,
        "blobs": text,
        "study": optional(text),
        "summary": a_bool,
        **{name: _section_coercer(section) for name, section in _SECTIONS.items()},
    }

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> RecycleConfig:
        """Read YAML (``yaml.safe_load``) from a file path or from YAML text."""
        if isinstance(source, os.PathLike) or ("\n" not in source and os.path.isfile(source)):
            try:
                source = Path(source).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read the config file {source}: {exc}") from exc
        data = load_yaml(source)  # bounded: size, aliases, duplicate keys (see _config_yaml)
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            hint = " (if this is a file path, no such file exists)" if isinstance(data, str) else ""
            raise ConfigError(f"the config must be a mapping of options, got {shown(data)}{hint}")
        return cls.from_dict(data)

    @classmethod
    def coerce(
        cls, value: RecycleConfig | Mapping[str, Any] | str | os.PathLike[str] | None
    ) -> RecycleConfig:
        """A config from None (the defaults), a RecycleConfig, a dict, or a YAML path/text."""
        if value is None:
            return cls()
        if isinstance(value, RecycleConfig):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, (str, os.PathLike)):
            return cls.from_yaml(value)
        raise ConfigError(f"expected a RecycleConfig, a dict or a YAML path, got {shown(value)}")

    def to_yaml(self) -> str:
        """The config as YAML that :meth:`from_yaml` reads back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def __repr__(self) -> str:
        shown = {
            "registry": display_url(self.registry),
            "blobs": display_url(self.blobs),
            "study": self.study,
            "summary": self.summary,
            "distill": self.distill,
            "teachers": self.teachers,
            "register": self.register,
            "budget": self.budget,
            "init": self.init,
        }
        return "RecycleConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def check_locations(config: RecycleConfig, *, folders: bool = True) -> None:
    """Fail now, with a :class:`ConfigError`, on a registry location that can never work.

    Configuration errors (checked here: the URL when an adapter is built, the folder too when
    the registry is first opened): a malformed or unsupported database URL, a SQLite file in
    a folder that does not exist. Outages (met while trials run, recorded, training goes on):
    a server that does not answer, a lock, a full disk. ``folders=False`` checks the URL only
    (a script may create the folder after decorating its objective).

    Example:
        >>> check_locations(RecycleConfig(registry="sqlite://bad.db"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        recycler.errors.ConfigError: registry: registry URL 'sqlite://bad.db' puts 'bad.db' ...
    """
    try:
        path = sqlite_file(config.registry)
    except StorageError as exc:
        raise ConfigError(f"registry: {exc}") from None
    if path is None or not folders:
        return
    folder = Path(path).expanduser().parent
    if not folder.is_dir():
        raise ConfigError(
            f"registry: the SQLite file's folder {str(folder)!r} does not exist: create it, or "
            "point registry at an existing folder (e.g. sqlite:///recycler.db)"
        )
