"""The storage error hierarchy: every failure of the registry is a ``StorageError``."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every registry error; the message says what went wrong and what to do."""


class ConfigurationError(StorageError):
    """A registry or blob-store URL is malformed or names an unsupported backend."""


class RegistryUnavailableError(StorageError):
    """The registry database cannot be reached."""


class SchemaError(StorageError):
    """The database schema is newer than this library, or is not a recycler schema."""


class TeacherNotFoundError(StorageError, LookupError):
    """No teacher has the requested id."""


class BlobError(StorageError):
    """A checkpoint blob is missing, unreadable or not a safetensors file."""


class BlobCorruptError(BlobError):
    """A checkpoint blob failed its sha256 check; the teacher has been quarantined."""


class UnsafeKeyError(StorageError, ValueError):
    """A blob key or path would resolve outside the blob store root."""
