"""A blob store in a local directory: atomic writes (temp, fsync, rename, fsync dir)."""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from .._errors import BlobError, BlobMissingError, BlobSizeError, UnsafeKeyError
from ._keys import check_key
from ._refs import REFS, check_owner, key_of_ref, ref_parts

_TMP_PREFIX = ".tmp-"
#: Blob files are data: read-write for the owner, readable by the others, never executable.
FILE_MODE = 0o644
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class LocalBlobStore:
    """Checkpoints in a local (or network-mounted) folder.

    Only regular files are read: a FIFO, a device or a folder at a blob's path is refused
    without opening it for reading (a FIFO would block forever).

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
        return self._inside(self._root.joinpath(*key.split("/")), key)

    def _inside(self, path: Path, what: str) -> Path:
        real = Path(os.path.realpath(path))
        if real != path or not real.is_relative_to(self._root):
            raise UnsafeKeyError(
                f"refusing blob key {what!r}: it resolves outside the store root {self._root}"
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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, FILE_MODE)
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
        return self.read(key)

    def read(self, key: str, limit: int | None = None) -> bytes:
        """The blob at ``key``; ``BlobSizeError`` (nothing read) if over ``limit`` bytes."""
        path = self._path(key)
        try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
        except FileNotFoundError:
            raise BlobMissingError(f"blob {key} is missing from {self._root}") from None
        except OSError as exc:
            raise BlobError(f"blob {key} cannot be read from {self._root}: {exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise BlobError(
                    f"blob {key} in {self._root} is not a regular file "
                    f"({_kind(info.st_mode)}): not read"
                )
            if limit is not None and info.st_size > limit:
                raise BlobSizeError(
                    f"blob {key} in {self._root} holds {info.st_size} bytes, more than the "
                    f"{limit} its row records: not read"
                )
            os.set_blocking(fd, True)
            with os.fdopen(fd, "rb") as fh:
                fd = -1
                data = fh.read() if limit is None else fh.read(limit + 1)
        except OSError as exc:
            raise BlobError(f"blob {key} cannot be read from {self._root}: {exc}") from exc
        finally:
            if fd >= 0:
                os.close(fd)
        if limit is not None and len(data) > limit:  # it grew while being read
            raise BlobSizeError(f"blob {key} in {self._root} is larger than its row records")
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:  # a folder at the path, permissions
            raise BlobError(f"cannot delete blob {key} under {self._root}: {exc}") from exc
        _fsync_dir(path.parent)

    def keys(self) -> Iterator[tuple[str, float]]:
        """Every regular file at a blob key (FIFOs, folders and links are not blobs)."""
        base = self._root / "sha256"
        try:
            subs = sorted(base.iterdir()) if base.is_dir() else []
            for sub in subs:
                if not sub.is_dir() or sub.is_symlink():
                    continue
                for entry in sorted(sub.iterdir()):
                    key = f"sha256/{sub.name}/{entry.name}"
                    with contextlib.suppress(UnsafeKeyError, FileNotFoundError):
                        self._path(key)
                        info = entry.lstat()
                        if stat.S_ISREG(info.st_mode):
                            yield key, info.st_mtime
        except OSError as exc:
            raise BlobError(f"cannot list the blobs under {self._root}: {exc}") from exc

    def remove_stale_temp(self, older_than: float) -> int:
        removed = 0
        for tmp in self.stale_temp(older_than):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
        return removed

    def stale_temp(self, older_than: float) -> list[Path]:
        """Half-written temporary files older than ``older_than`` (what a gc would remove)."""
        found = []
        for tmp in (self._root / "sha256").glob(f"*/{_TMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if tmp.lstat().st_mtime < older_than:
                    found.append(tmp)
        return found

    # -- references of registries (see ``_refs``) ----------------------------------------

    def _ref_path(self, owner: str, key: str) -> Path:
        return self._inside(self._root.joinpath(REFS, *ref_parts(owner, key)), key)

    def add_ref(self, owner: str, key: str) -> None:
        path = self._ref_path(owner, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._ref_path(owner, key)
            # no fsync: a reference lost to a crash is written again by its registry's next
            # gc (it writes the references its live rows lack), and fsyncs cost registrations
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | _NOFOLLOW, FILE_MODE)
            os.close(fd)
        except OSError as exc:
            raise BlobError(
                f"cannot write blob {key} (its reference) under {self._root}: {exc}"
            ) from exc

    def drop_ref(self, owner: str, key: str) -> None:
        path = self._ref_path(owner, key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BlobError(
                f"cannot delete a reference to {key} under {self._root}: {exc}"
            ) from exc

    def refs(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        base = self._root / REFS
        try:
            for owner in _subdirs(base):
                keys = found.setdefault(owner.name, set())
                for sub in _subdirs(owner):
                    for entry in sub.iterdir():
                        key = key_of_ref(owner.name, sub.name, entry.name)
                        if key is not None:
                            keys.add(key)
        except OSError as exc:
            raise BlobError(f"cannot list the references under {self._root}: {exc}") from exc
        return {owner: keys for owner, keys in found.items() if _is_owner(owner)}

    def ref_owners(self, key: str) -> set[str]:
        out = set()
        try:
            for owner in _subdirs(self._root / REFS):
                if _is_owner(owner.name) and self._ref_path(owner.name, key).is_file():
                    out.add(owner.name)
        except OSError as exc:
            raise BlobError(f"cannot read the references under {self._root}: {exc}") from exc
        return out


def _is_owner(name: str) -> bool:
    try:
        check_owner(name)
    except UnsafeKeyError:
        return False
    return True


def _subdirs(path: Path) -> list[Path]:
    if not path.is_dir() or path.is_symlink():
        return []
    return [p for p in sorted(path.iterdir()) if p.is_dir() and not p.is_symlink()]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
