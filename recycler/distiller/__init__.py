"""The per-trial runtime: the :class:`Distiller` facade and its parts, one job per module."""

from __future__ import annotations

from ._facade import Distiller, output_signature

__all__ = ["Distiller", "output_signature"]
