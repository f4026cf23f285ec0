"""The recycler error hierarchy."""

from __future__ import annotations


class RecyclerError(Exception):
    """Base class of recycler's own errors; messages say what was wrong and what to do."""


class ConfigError(RecyclerError, ValueError):
    """A configuration value (or time string, or schedule) is invalid; names the key path."""


class MissingExtraError(RecyclerError, ImportError):
    """An optional integration was used without its extra installed."""
