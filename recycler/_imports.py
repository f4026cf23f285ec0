"""Optional imports through one helper that names what to install.

recycler's core never imports an optional framework at module import time; an adapter or a
feature that needs one calls :func:`require`, which imports it or raises
:class:`~recycler.errors.MissingExtraError` saying which extra to install (``pip install
'recycler[EXTRA]'``). A module that also wants the framework's types for mypy imports it
under ``TYPE_CHECKING`` and binds the module at run time::

    if TYPE_CHECKING:
        import optuna
    else:
        optuna = require("optuna", None, minimum="4.0", feature="the Optuna integration")

Example:
    >>> require("json", "demo").__name__
    'json'
    >>> try:
    ...     require("no_such_module_xyz", "demo", feature="The demo")
    ... except ImportError as exc:
    ...     print(exc)
    The demo needs the demo extra (...): pip install 'recycler[demo]'
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType

from .errors import MissingExtraError

__all__ = ["require"]

_NUMBERS = re.compile(r"\d+")


def require(
    module: str,
    extra: str | None,
    *,
    minimum: str | None = None,
    feature: str | None = None,
) -> ModuleType:
    """Import ``module``, or raise ``MissingExtraError`` naming how to install it.

    ``extra``: the recycler extra that brings the module (``"ray"`` for ``pip install
    'recycler[ray]'``), or None for one of recycler's own dependencies (then the message says
    to install the package, or to reinstall recycler). ``minimum``: the lowest version of the
    module's top-level package that works (compared by its ``__version__``'s numbers).
    ``feature``: what needs it, as the message's subject (default: the module's name).
    """
    top = module.partition(".")[0]
    what = feature or top
    wanted = f"{top} >= {minimum}" if minimum else top
    install = (
        f"pip install 'recycler[{extra}]'"
        if extra
        else f"pip install '{top}{'>=' + minimum if minimum else ''}' "
        "(or reinstall recycler, which depends on it)"
    )
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        needs = f"the {extra} extra ({exc})" if extra else f"{wanted} ({exc})"
        raise MissingExtraError(f"{what} needs {needs}: {install}") from exc
    if minimum is not None:
        version = str(getattr(importlib.import_module(top), "__version__", ""))
        if version and _numbers(version) < _numbers(minimum):
            raise MissingExtraError(f"{what} needs {wanted}, found {version}: {install}")
    return found


def _numbers(version: str) -> tuple[int, ...]:
    """The release numbers of a version string: ``"4.0.1rc1"`` -> (4, 0, 1)."""
    release = version.split("+")[0]
    parts: list[int] = []
    for piece in release.split("."):
        match = _NUMBERS.match(piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):  # "1rc1": the pre-release part ends the release
            break
    return tuple(parts)
