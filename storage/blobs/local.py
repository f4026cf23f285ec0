"""A blob store in a local directory: atomic writes (temp, fsync, rename, fsync dir)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from .._errors import BlobError, UnsafeKeyError
from ._keys import check_key

_TMP_PREFIX = ".tmp-"


class LocalBlobStore:
    """Checkpoints in a local (or network-mounted) folder.

    Example:
        >>> store = LocalBlobStore("./recycler-teachers")
        >>> store.url.endswith("recycler-teachers")
        True
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).expanduser().resolve()

    @property
    def url(self) -> str:
        return str(self._root)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _path(self, key: str) -> Path:
        check_key(key)
        path = self._root.joinpath(*key.split("/"))
        real = Path(os.path.realpath(path))
        if real != path or not real.is_relative_to(self._root):
            raise UnsafeKeyError(
                f"refusing blob key {key!r}: it resolves outside the store root {self._root}"
            )
        return path

    def put(self, key: str, data: bytes) -> None:
        try:
            self._put(key, data)
        except OSError as exc:  # disk full, read-only or missing folder, permissions
            raise BlobError(f"cannot write blob {key} under {self._root}: {exc}") from exc

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path(key)  # re-check: a symlinked parent created meanwhile must not be followed
        tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise BlobError(f"blob {key} is missing from {self._root}") from None
        except OSError as exc:
            raise BlobError(f"blob {key} cannot be read from {self._root}: {exc}") from exc
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            _fsync_dir(path.parent)

    def keys(self) -> Iterator[tuple[str, float]]:
        base = self._root / "sha256"
        if not base.is_dir():
            return
        for sub in sorted(base.iterdir()):
            if not sub.is_dir() or sub.is_symlink():
                continue
            for entry in sorted(sub.iterdir()):
                key = f"sha256/{sub.name}/{entry.name}"
                with contextlib.suppress(UnsafeKeyError, FileNotFoundError):
                    self._path(key)
                    yield key, entry.stat().st_mtime

    def remove_stale_temp(self, older_than: float) -> int:
        removed = 0
        for tmp in (self._root / "sha256").glob(f"*/{_TMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if tmp.stat().st_mtime < older_than:
                    tmp.unlink()
                    removed += 1
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
