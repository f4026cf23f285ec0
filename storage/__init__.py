"""The teacher registry: a database of teachers and lineage, and a blob store of weights.

``storage`` knows nothing of ``recycler``; it stores and finds checkpoints. Every failure of
the registry is a ``StorageError`` (no SQLAlchemy exception leaves the package), and every
rule about database URLs (their SQLite file, their secrets) is written here once.

Example:
    >>> from storage import Registry
    >>> reg = Registry("sqlite:///recycler.db", "./recycler-teachers")  # doctest: +SKIP
"""

from __future__ import annotations

from ._checkpoint import encode as encode_checkpoint
from ._checkpoint import load_torch_file
from ._errors import (
    BlobCorruptError,
    BlobError,
    BlobMissingError,
    BlobSizeError,
    ConfigurationError,
    ConflictError,
    RegistryUnavailableError,
    SchemaError,
    StorageError,
    TeacherNotFoundError,
    UnsafeKeyError,
)
from ._query import ORDER_FIELDS, TeacherQuery
from ._rdb.schema import HEAD as SCHEMA_VERSION
from ._records import (
    Checkpoint,
    Direction,
    GcReport,
    LineageRecord,
    Status,
    TeacherRecord,
    VerifyReport,
)
from ._registry import BLOBS_ENV, DEFAULT_BLOBS, DEFAULT_URL, REGISTRY_ENV, Registry
from ._rows import StorageWarning
from ._studies import StudySummary
from ._urls import (
    display_url,
    redact,
    scrub,
    secrets_of,
    sqlite_file,
    sqlite_in_memory,
    with_sqlite_file,
)
from .blobs import BlobStore, FsspecBlobStore, LocalBlobStore, open_store

__all__ = [
    "BLOBS_ENV",
    "DEFAULT_BLOBS",
    "DEFAULT_URL",
    "ORDER_FIELDS",
    "REGISTRY_ENV",
    "SCHEMA_VERSION",
    "BlobCorruptError",
    "BlobError",
    "BlobMissingError",
    "BlobSizeError",
    "BlobStore",
    "Checkpoint",
    "ConfigurationError",
    "ConflictError",
    "Direction",
    "FsspecBlobStore",
    "GcReport",
    "LineageRecord",
    "LocalBlobStore",
    "Registry",
    "RegistryUnavailableError",
    "SchemaError",
    "Status",
    "StorageError",
    "StorageWarning",
    "StudySummary",
    "TeacherNotFoundError",
    "TeacherQuery",
    "TeacherRecord",
    "UnsafeKeyError",
    "VerifyReport",
    "display_url",
    "encode_checkpoint",
    "load_torch_file",
    "open_store",
    "redact",
    "scrub",
    "secrets_of",
    "sqlite_file",
    "sqlite_in_memory",
    "with_sqlite_file",
]
