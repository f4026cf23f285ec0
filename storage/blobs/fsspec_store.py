"""A blob store on any fsspec URL (s3://, gs://, memory://, ...)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .._errors import (
    BlobError,
    BlobMissingError,
    BlobSizeError,
    ConfigurationError,
    UnsafeKeyError,
)
from .._urls import display_url, scrub
from ._keys import check_key
from ._refs import REFS, check_owner, key_of_ref, ref_parts

T = TypeVar("T")


class FsspecBlobStore:
    """Checkpoints under an fsspec URL; object stores write whole objects atomically.

    Every failure of the filesystem (a server down, a timeout, a folder at a blob's path) is
    a ``BlobError`` naming the store, never the backend's own exception.

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
        self._secret_url = url
        self._url = display_url(url.rstrip("/"))  # shown and stored in rows: no credentials

    @property
    def url(self) -> str:
        return self._url

    def uri(self, key: str) -> str:
        return f"{self._url}/{check_key(key)}"

    def _path(self, key: str) -> str:
        return f"{self._root}/{check_key(key)}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, with any failure of the filesystem as a ``BlobError``."""
        try:
            return fn()
        except (BlobError, UnsafeKeyError):
            raise
        except Exception as exc:
            said = scrub(f"{type(exc).__name__}: {exc}", self._secret_url)
            raise BlobError(f"{what} on {self._url} failed: {said}") from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self._call(f"writing blob {key}", lambda: self._fs.pipe_file(path, data))

    def get(self, key: str) -> bytes:
        return self.read(key)

    def read(self, key: str, limit: int | None = None) -> bytes:
        """The blob at ``key``; ``BlobSizeError`` (nothing read) if over ``limit`` bytes."""
        path = self._path(key)

        def fetch() -> bytes:
            try:
                if limit is None:
                    return bytes(self._fs.cat_file(path))
                info = self._fs.info(path)
                if info.get("type", "file") != "file":
                    raise BlobError(f"blob {key} in {self._url} is not a file: not read")
                size = info.get("size")
                if isinstance(size, int) and size > limit:
                    raise BlobSizeError(
                        f"blob {key} in {self._url} holds {size} bytes, more than the {limit} "
                        "its row records: not read"
                    )
                data = bytes(self._fs.cat_file(path, start=0, end=limit + 1))
            except FileNotFoundError:
                raise BlobMissingError(f"blob {key} is missing from {self._url}") from None
            if len(data) > limit:
                raise BlobSizeError(f"blob {key} in {self._url} is larger than its row records")
            return data

        return self._call(f"reading blob {key}", fetch)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return bool(self._call(f"looking for blob {key}", lambda: self._fs.exists(path)))

    def delete(self, key: str) -> None:
        self._remove(self._path(key), f"deleting blob {key}")

    def _remove(self, path: str, what: str) -> None:
        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm_file(path)

        self._call(what, remove)

    def keys(self) -> Iterator[tuple[str, float]]:
        prefix = f"{self._root}/"

        def find() -> dict[str, Any]:
            try:
                return dict(self._fs.find(f"{self._root}/sha256", detail=True))
            except FileNotFoundError:
                return {}

        for path, info in sorted(self._call("listing the blobs", find).items()):
            if info.get("type", "file") != "file":
                continue
            key = path[len(prefix) :] if path.startswith(prefix) else path
            with contextlib.suppress(UnsafeKeyError):
                yield check_key(key), _mtime(info)

    def remove_stale_temp(self, older_than: float) -> int:
        return 0  # whole-object writes leave no temporary files behind

    # -- references of registries (see ``_refs``) ----------------------------------------

    def _ref_path(self, owner: str, key: str) -> str:
        return "/".join((self._root, REFS, *ref_parts(owner, key)))

    def add_ref(self, owner: str, key: str) -> None:
        path = self._ref_path(owner, key)
        self._call(f"writing a reference to {key}", lambda: self._fs.pipe_file(path, b""))

    def drop_ref(self, owner: str, key: str) -> None:
        self._remove(self._ref_path(owner, key), f"deleting a reference to {key}")

    def refs(self) -> dict[str, set[str]]:
        base = f"{self._root}/{REFS}/"

        def find() -> list[str]:
            try:
                return list(self._fs.find(base.rstrip("/"), detail=False))
            except FileNotFoundError:
                return []

        found: dict[str, set[str]] = {}
        for path in self._call("listing the references", find):
            parts = path[len(base) :].split("/") if path.startswith(base) else []
            key = key_of_ref(*parts) if len(parts) == 3 else None
            if key is not None:
                found.setdefault(parts[0], set()).add(key)
        return found

    def ref_owners(self, key: str) -> set[str]:
        base = f"{self._root}/{REFS}"

        def owners() -> set[str]:
            try:
                listed = self._fs.ls(base, detail=False, refresh=True)
            except FileNotFoundError:
                return set()
            out = set()
            for entry in listed:
                name = str(entry).rstrip("/").rsplit("/", 1)[-1]
                with contextlib.suppress(UnsafeKeyError):
                    if self._fs.exists(self._ref_path(check_owner(name), key)):
                        out.add(name)
            return out

        return self._call(f"reading the references to {key}", owners)


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
