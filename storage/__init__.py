"""The teacher registry: a database of teachers and lineage, and a blob store of weights.

``storage`` knows nothing of ``recycler``; it stores and finds checkpoints.

Example:
    >>> from storage import Registry
    >>> reg = Registry("sqlite:///recycler.db", "./recycler-teachers")  # doctest: +SKIP
"""

from __future__ import annotations

from ._checkpoint import load_torch_file
from ._errors import (
    BlobCorruptError,
    BlobError,
    ConfigurationError,
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
from ._registry import DEFAULT_BLOBS, DEFAULT_URL, Registry
from ._urls import display_url, redact
from .blobs import BlobStore, FsspecBlobStore, LocalBlobStore, open_store

__all__ = [
    "DEFAULT_BLOBS",
    "DEFAULT_URL",
    "ORDER_FIELDS",
    "SCHEMA_VERSION",
    "BlobCorruptError",
    "BlobError",
    "BlobStore",
    "Checkpoint",
    "ConfigurationError",
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
    "TeacherNotFoundError",
    "TeacherQuery",
    "TeacherRecord",
    "UnsafeKeyError",
    "VerifyReport",
    "display_url",
    "load_torch_file",
    "open_store",
    "redact",
]
