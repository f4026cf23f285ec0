"""The installed recycler's version, read from its metadata (the service imports no recycler
module above it: see the layering test).

Example:
    >>> VERSION.count(".") >= 1 or VERSION == "unknown"
    True
"""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("recycler")
except metadata.PackageNotFoundError:  # pragma: no cover - a source tree not installed
    VERSION = "unknown"
