"""Blob stores for checkpoint bytes: a local folder or any fsspec URL."""

from __future__ import annotations

import os

from ._base import BlobStore
from ._keys import check_key, key_for, sha_of_key
from .fsspec_store import FsspecBlobStore
from .local import LocalBlobStore

__all__ = [
    "BlobStore",
    "FsspecBlobStore",
    "LocalBlobStore",
    "check_key",
    "key_for",
    "open_store",
    "sha_of_key",
]


def open_store(location: str | os.PathLike[str] | BlobStore) -> BlobStore:
    """A blob store for a folder path, a ``file://`` URL or any other fsspec URL.

    Example:
        >>> open_store("memory://x").url
        'memory://x'
    """
    if isinstance(location, BlobStore) and not isinstance(location, (str, os.PathLike)):
        return location
    text = os.fspath(location)
    if text.startswith("file://"):
        return LocalBlobStore(text[len("file://") :])
    if "://" in text:
        return FsspecBlobStore(text)
    return LocalBlobStore(text)
