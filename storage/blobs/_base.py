"""The small protocol every blob store implements."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed byte storage for checkpoints.

    Keys come from ``storage.blobs.key_for(sha256)``; every method refuses any other key.

    Example:
        >>> store = LocalBlobStore("./recycler-teachers")  # doctest: +SKIP
        >>> store.put(key_for(digest), data)  # doctest: +SKIP
    """

    @property
    def url(self) -> str:
        """Where the store lives, for display."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (readers see all of it or nothing)."""
        ...

    def get(self, key: str) -> bytes:
        """Read the blob at ``key``; raise ``BlobError`` when it is missing."""
        ...

    def exists(self, key: str) -> bool:
        """Whether a blob is stored at ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob at ``key`` (no error when it is already gone)."""
        ...

    def keys(self) -> Iterator[tuple[str, float]]:
        """Every stored blob as (key, modification time in epoch seconds)."""
        ...

    def remove_stale_temp(self, older_than: float) -> int:
        """Delete half-written temporary files older than ``older_than`` (epoch seconds)."""
        ...

    def uri(self, key: str) -> str:
        """A full URI of the blob at ``key``, for display and SQL users."""
        ...
