"""A blob store on any fsspec URL (s3://, gs://, memory://, ...)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .._errors import BlobError, ConfigurationError, UnsafeKeyError
from .._urls import display_url, scrub
from ._keys import check_key


class FsspecBlobStore:
    """Checkpoints under an fsspec URL; object stores write whole objects atomically.

    Example:
        >>> store = FsspecBlobStore("memory://teachers")
        >>> store.url
        'memory://teachers'
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(
                f"blob store {display_url(url)!r} cannot be opened: {scrub(str(exc), url)} "
                "(install the fsspec backend, e.g. pip install 'recycler[s3]')"
            ) from None
        self._fs = fs
        self._root = str(root).rstrip("/")
        self._url = display_url(url.rstrip("/"))  # shown and stored in rows: no credentials

    @property
    def url(self) -> str:
        return self._url

    def uri(self, key: str) -> str:
        return f"{self._url}/{check_key(key)}"

    def _path(self, key: str) -> str:
        return f"{self._root}/{check_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        self._fs.pipe_file(self._path(key), data)

    def get(self, key: str) -> bytes:
        try:
            data = self._fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise BlobError(f"blob {key} is missing from {self._url}") from None
        return bytes(data)

    def exists(self, key: str) -> bool:
        return bool(self._fs.exists(self._path(key)))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(self._path(key))

    def keys(self) -> Iterator[tuple[str, float]]:
        prefix = f"{self._root}/"
        try:
            found = self._fs.find(f"{self._root}/sha256", detail=True)
        except FileNotFoundError:
            return
        for path, info in sorted(found.items()):
            key = path[len(prefix) :] if path.startswith(prefix) else path
            with contextlib.suppress(UnsafeKeyError):
                yield check_key(key), _mtime(info)

    def remove_stale_temp(self, older_than: float) -> int:
        return 0  # whole-object writes leave no temporary files behind


def _mtime(info: dict[str, Any]) -> float:
    for name in ("mtime", "LastModified", "created", "updated"):
        value = info.get(name)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    return 0.0
