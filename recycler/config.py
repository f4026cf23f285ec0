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

import math
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import yaml

from ._names import LOSSES, POLICIES, did_you_mean
from ._storage import display_url, redact
from .errors import ConfigError
from .schedule import ALWAYS, Schedule
from .time import Time, TimeUnit

__all__ = ["DistillConfig", "RecycleConfig", "RegisterConfig", "TeachersConfig"]

MiB = 1 << 20
AUTOCAST = ("float16", "bfloat16")
REGISTER_ON: tuple[Literal["complete", "pruned"], ...] = ("complete", "pruned")
_ONE_EPOCH = Time(1, TimeUnit.EPOCH)

S = TypeVar("S", bound="_Section")
Check = Callable[[Any, str], Any]  # (value, key path) -> the value, normalised; or ConfigError


def a_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    return value


def a_float(*, minimum: float | None = None, above: float | None = None) -> Check:
    def check(value: Any, path: str) -> float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{path}: {value!r} must be >= {minimum}")
        if above is not None and value <= above:
            raise ConfigError(f"{path}: {value!r} must be > {above}")
        return float(value)

    return check


def an_int(*, minimum: int) -> Check:
    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer >= {minimum}, got {value!r}")
        if value < minimum:
            raise ConfigError(f"{path}: {value!r} must be >= {minimum}")
        return value

    return check


def choice(options: Collection[str], *, or_else: Check | None = None, also: str = "") -> Check:
    """One of ``options``: a tuple, or a registry (read when checking: names added since count)."""

    def check(value: Any, path: str) -> Any:
        if isinstance(value, str) and value in options:
            return value
        if or_else is not None and not isinstance(value, str):
            return or_else(value, path)
        allowed = f"{', '.join(options)} or {also}" if also else f"one of {', '.join(options)}"
        raise ConfigError(f"{path}: {value!r} is not {allowed}")

    return check


class Options(Mapping[str, Any]):
    """A read-only, hashable mapping of option names to plain values (``distill.loss_options``).

    Example:
        >>> opts = Options({"beta": 0.5})
        >>> opts["beta"], opts == {"beta": 0.5}, hash(opts) == hash(Options(beta=0.5))
        (0.5, True, True)
    """

    def __init__(self, data: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        self._data: dict[str, Any] = {**(data or {}), **more}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(_frozen(self._data))

    def __repr__(self) -> str:
        return repr(self._data)


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a plain (YAML) value: mappings and lists made immutable."""
    if isinstance(value, Mapping):
        return frozenset((key, _frozen(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def keyword_options(value: Any, path: str) -> Options:
    """A mapping of option names (strings) to values, for a named implementation."""
    if isinstance(value, Options):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {value!r}")
    for key in value:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{path}: option names must be identifiers, got {key!r}")
    return Options(value)


def optional(check: Check) -> Check:
    return lambda value, path: None if value is None else check(value, path)


def text(value: Any, path: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: expected a non-empty string, got {value!r}")
    return value


def strings(options: tuple[str, ...] = ()) -> Check:
    """A list of strings (a single string is a list of one), each from ``options`` if given."""

    def check(value: Any, path: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{path}: expected a list of strings, got {value!r}")
        for item in items:
            if options and item not in options:
                raise ConfigError(f"{path}: {item!r} is not one of {', '.join(options)}")
            text(item, path)
        unique = dict.fromkeys(items)
        return tuple(o for o in options if o in unique) if options else tuple(unique)

    return check


def time_span(*, allow_zero: bool = False) -> Check:
    """A :class:`Time` within one trial (ep, ba or dur), more than zero unless allowed."""

    def check(value: Any, path: str) -> Time:
        try:
            t = Time.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if t.unit is TimeUnit.TRIAL:
            raise ConfigError(f"{path}: {t} counts trials; use ep, ba or dur (e.g. 1ep)")
        if t.exact == 0 and not allow_zero:
            raise ConfigError(f"{path}: {t} must be more than zero (or null for never)")
        return t

    return check


def a_schedule(value: Any, path: str) -> Schedule:
    try:
        return Schedule.parse(value)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _reject_unknown(data: Mapping[Any, Any], known: list[str], section: str) -> None:
    for key in data:
        if key in known:
            continue
        path = f"{section}.{key}" if section else str(key)
        hint = did_you_mean(key, known)
        where = f"{section} options" if section else "top-level options"
        raise ConfigError(f"{path}: unknown option{hint}; {where} are {', '.join(known)}")


def _plain(value: Any) -> Any:
    if isinstance(value, _Section):
        return value.to_dict()
    if isinstance(value, (Time, Schedule)):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Options):
        return dict(value)
    return value


def _section_coercer(section: type[_Section]) -> Callable[[Any, str], Any]:
    def coerce(value: Any, path: str) -> Any:
        if isinstance(value, section):
            return value
        if isinstance(value, Mapping):
            return section.from_dict(value)
        raise ConfigError(f"{path}: expected a mapping of {path} options, got {value!r}")

    return coerce


class _Section:
    """A validated, frozen group of options; subclasses are frozen dataclasses."""

    _name: ClassVar[str]
    _checks: ClassVar[dict[str, Check]]

    def __post_init__(self) -> None:
        for name, check in self._checks.items():
            object.__setattr__(self, name, check(getattr(self, name), self._path(name)))
        self._check_together()

    def _check_together(self) -> None:
        """Checks that involve several options."""

    @classmethod
    def _path(cls, name: str) -> str:
        return f"{cls._name}.{name}" if cls._name else name

    if TYPE_CHECKING:

        def __init__(self, **options: Any) -> None: ...

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """Build from a mapping; unknown keys raise :class:`ConfigError` naming them."""
        where = cls._name or "the config"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of options, got {data!r}")
        _reject_unknown(data, list(cls._checks), cls._name)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (times and schedules as strings) that :meth:`from_dict` reads back."""
        return {name: _plain(getattr(self, name)) for name in self._checks}


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


_SECTIONS: dict[str, type[_Section]] = {
    "distill": DistillConfig,
    "teachers": TeachersConfig,
    "register": RegisterConfig,
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
    distill: DistillConfig = field(default_factory=DistillConfig)
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)

    _name: ClassVar[str] = ""
    _checks: ClassVar[dict[str, Check]] = {
        "registry": text,
        "blobs": text,
        "study": optional(text),
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
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise ConfigError(f"the config is not valid YAML: {exc}") from exc
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            hint = " (if this is a file path, no such file exists)" if isinstance(data, str) else ""
            raise ConfigError(f"the config must be a mapping of options, got {data!r}{hint}")
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
        raise ConfigError(f"expected a RecycleConfig, a dict or a YAML path, got {value!r}")

    def to_yaml(self) -> str:
        """The config as YAML that :meth:`from_yaml` reads back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def __repr__(self) -> str:
        shown = {
            "registry": display_url(self.registry),
            "blobs": redact(self.blobs),
            "study": self.study,
            "distill": self.distill,
            "teachers": self.teachers,
            "register": self.register,
        }
        return "RecycleConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"
