"""Thin adapters between recycler's :class:`~recycler.distiller.Distiller` and HPO frameworks.

Each adapter lives in its own module and imports its framework only when that module is
imported (``from recycler.integrations.optuna import recycle``); a missing framework raises
:class:`~recycler.errors.MissingExtraError` naming what to install.
"""

from __future__ import annotations
