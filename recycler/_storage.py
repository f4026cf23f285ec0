"""recycler's own ``storage`` package, whatever else is called ``storage`` on the path.

A user's ``storage.py`` (or ``storage/`` package) beside their script comes first on
``sys.path`` and would be what ``import storage`` finds. recycler therefore never imports the
registry by that bare name: every recycler module imports it from here. This module finds the
``storage`` package installed beside ``recycler`` (same folder, in site-packages or in a source
checkout); if ``import storage`` resolves to it, that module is used (one module object for
users and recycler), else it is loaded under the private name ``recycler._storage_pkg`` and the
user's module is left alone. ``storage`` itself uses only relative imports, so it loads under
either name.

Example:
    >>> from recycler._storage import Registry
    >>> Registry.__module__.endswith("_registry")
    True
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

_HOME = Path(__file__).resolve().parent.parent / "storage"
_PRIVATE = "recycler._storage_pkg"


def _is_ours(origin: str | None) -> bool:
    return origin is not None and Path(origin).resolve().parent == _HOME


def _load() -> ModuleType:
    found = sys.modules.get("storage")
    if found is None:
        try:
            spec = importlib.util.find_spec("storage")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and _is_ours(spec.origin):
            return importlib.import_module("storage")
    elif _is_ours(getattr(found, "__file__", None)):
        return found
    if _PRIVATE in sys.modules:
        return sys.modules[_PRIVATE]
    spec = importlib.util.spec_from_file_location(
        _PRIVATE, _HOME / "__init__.py", submodule_search_locations=[str(_HOME)]
    )
    if spec is None or spec.loader is None:  # pragma: no cover - the package is installed
        raise ImportError(f"recycler's storage package is missing from {_HOME}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PRIVATE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_PRIVATE]
        raise
    return module


if TYPE_CHECKING:
    from storage import *  # noqa: F403
    from storage import __all__
else:
    _module = _load()
    __all__ = list(_module.__all__)
    globals().update({name: getattr(_module, name) for name in __all__})
