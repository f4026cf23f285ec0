"""Named registries: what the config's ``distill.loss`` and ``teachers.policy`` may name.

One :class:`NameRegistry` per extension point holds its implementations by name. The built-in
names are declared here, so the config knows them without importing their implementations
(the losses need torch; the config must not): the first lookup that needs an implementation
imports the *provider* module, which registers its built-ins through the public function
(:func:`recycler.losses.register_loss`, :func:`recycler.sampling.register_policy`).

An implementation is called with ``arity`` positional arguments, then its own *options* as
keyword arguments (``fn(s, t, tau, beta=0.5)``); :meth:`NameRegistry.check_options` reads
which options it takes from its signature. Built-in names take no options.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import ConfigError

if TYPE_CHECKING:
    from .losses import LossFn
    from .sampling import PolicyFn

__all__ = ["LOSSES", "POLICIES", "NameRegistry", "did_you_mean"]

T = TypeVar("T", bound=Callable[..., Any])


def did_you_mean(word: object, known: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to ``word``, or ``""``.

    Example:
        >>> did_you_mean("wieght", ["weight", "loss"])
        " (did you mean 'weight'?)"
    """
    close = difflib.get_close_matches(str(word), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _options_of(fn: Callable[..., Any], arity: int) -> tuple[frozenset[str] | None, list[str]]:
    """The keyword options ``fn`` takes after ``arity`` positionals (None: any); the required."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): trust the caller
        return None, []
    accepted: set[str] | None = set()
    required: list[str] = []
    positional = 0
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            accepted = None
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and positional < arity:
            positional += 1
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and accepted is not None:
            accepted.add(p.name)
            if p.default is p.empty:
                required.append(p.name)
    return (None if accepted is None else frozenset(accepted)), required


class NameRegistry(Generic[T]):
    """Implementations of one kind (``"KD loss"``), by name; errors list the known names.

    ``builtins`` are names known before ``provider`` (a module name) is imported; the provider
    registers them when imported, and :meth:`get`/:meth:`register` import it when needed.
    Names iterate in registration order (built-ins first, as declared). Registration is meant
    for import or setup time; it is not locked against concurrent threads.

    Example:
        >>> shapes = NameRegistry("shape", arity=1)
        >>> shapes.register("square", lambda side, *, scale=1.0: scale * side * side)
        >>> shapes.get("square")(3.0), list(shapes), "circle" in shapes
        (9.0, ['square'], False)
        >>> shapes.get("squares")
        Traceback (most recent call last):
        ...
        recycler.errors.ConfigError: unknown shape 'squares' (did you mean 'square'?): ...
    """

    def __init__(
        self,
        kind: str,
        *,
        builtins: Collection[str] = (),
        provider: str | None = None,
        arity: int = 0,
    ) -> None:
        self.kind = kind
        self.arity = arity
        self._builtins = tuple(builtins)
        self._provider = provider
        self._loaded = provider is None
        self._entries: dict[str, T] = {}

    def _load(self) -> None:
        """Import the provider once, so its built-ins are registered."""
        if self._loaded or self._provider is None:
            return
        self._loaded = True  # first: the provider's own register() calls land here again
        try:
            importlib.import_module(self._provider)
        except BaseException:
            self._loaded = False
            raise

    def register(self, name: str, fn: T, *, replace: bool = False) -> None:
        """Make ``fn`` known as ``name``; ConfigError if taken and not ``replace``."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if not callable(fn):
            raise ConfigError(f"{self.kind} {name!r} must be callable, got {fn!r}")
        self._load()
        if name in self._entries and not replace:
            raise ConfigError(
                f"{self.kind} {name!r} is already registered; pass replace=True to override"
            )
        self._entries[name] = fn

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; ConfigError naming the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def pop(self, name: str, default: T | None = None) -> T | None:
        """Forget ``name`` (tests, plugins that unload); its implementation or ``default``."""
        return self._entries.pop(name, default)

    def names(self) -> list[str]:
        """The known names, in registration order (without importing the provider)."""
        return list(self._entries) if self._loaded else list(self._builtins)

    def unknown(self, name: object) -> ConfigError:
        """The error for a name that is not registered: the known names and a close one."""
        known = self.names()
        return ConfigError(
            f"unknown {self.kind} {name!r}{did_you_mean(name, known)}: "
            f"choose one of {', '.join(sorted(known))}"
        )

    def check_options(self, name: str, options: Mapping[str, Any], where: str) -> None:
        """ConfigError (naming ``where.option``) unless ``name`` takes exactly these options.

        Options are the keyword parameters of the implementation after its ``arity``
        positionals; those without a default are required; ``**kwargs`` takes any.
        """
        fn = self._entries.get(name)  # None for a built-in not imported yet: no options
        accepted, required = (frozenset(), []) if fn is None else _options_of(fn, self.arity)
        takes = ", ".join(sorted(accepted)) if accepted else "no options"
        for key in options:
            if accepted is not None and key not in accepted:
                raise ConfigError(
                    f"{where}.{key}: unknown option{did_you_mean(key, accepted)}; "
                    f"{self.kind} {name!r} takes {takes}"
                )
        for key in required:
            if key not in options:
                raise ConfigError(f"{where}: {self.kind} {name!r} needs the option {key!r}")

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"NameRegistry({self.kind!r}, names={self.names()!r})"


#: KD losses: ``fn(student [N, C], teacher [N, C], temperature, **options) -> scalar``.
LOSSES: NameRegistry[LossFn] = NameRegistry(
    "KD loss", builtins=("mse", "kl"), provider="recycler.losses", arity=3
)

#: Pool policies: ``fn(records, k, rng, **options) -> the chosen records``.
POLICIES: NameRegistry[PolicyFn] = NameRegistry(
    "pool policy",
    builtins=("best", "random", "recent", "diverse", "all"),
    provider="recycler.sampling",
    arity=3,
)
