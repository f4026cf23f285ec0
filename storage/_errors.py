"""The storage error hierarchy: every failure of the registry is a ``StorageError``.

No exception of SQLAlchemy, of a database driver or of the connection pool leaves ``storage``:
each is translated at the one place connections are used (``_rdb.engine``)::

    StorageError
    ├── ConfigurationError         a malformed URL, an unsupported backend, a bad option
    ├── RegistryUnavailableError   the database cannot be reached, or no connection came free
    ├── ConflictError              a write collided with a concurrent one on a unique key
    ├── SchemaError                the schema is newer than this library, or not ours
    ├── TeacherNotFoundError       (also a LookupError) no teacher has that id
    ├── BlobError                  a blob is missing, unreadable or not safetensors
    │   ├── BlobCorruptError       a blob failed its sha256 check (the teacher is quarantined)
    │   ├── BlobMissingError       no blob at the key (this reader skips it; nothing changes)
    │   └── BlobSizeError          a blob is larger than its row says (it was not read)
    └── UnsafeKeyError             (also a ValueError) a blob key would leave the store's root
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every registry error; the message says what went wrong and what to do."""


class ConfigurationError(StorageError):
    """A registry or blob-store URL is malformed or names an unsupported backend."""


class RegistryUnavailableError(StorageError):
    """The registry database cannot be reached, or no pooled connection came free in time."""


class ConflictError(StorageError):
    """A write collided with a concurrent one on a unique key; trying it again may succeed."""


class SchemaError(StorageError):
    """The database schema is newer than this library, or is not a recycler schema."""


class TeacherNotFoundError(StorageError, LookupError):
    """No teacher has the requested id."""


class BlobError(StorageError):
    """A checkpoint blob is missing, unreadable or not a safetensors file."""


class BlobCorruptError(BlobError):
    """A checkpoint blob failed its sha256 check; the teacher has been quarantined."""


class BlobMissingError(BlobError):
    """No blob is stored at the key (a wrong store, or the blob was removed)."""


class BlobSizeError(BlobError):
    """A blob is larger than the size its row records: it was not read (the store says so)."""


class UnsafeKeyError(StorageError, ValueError):
    """A blob key or path would resolve outside the blob store root."""
