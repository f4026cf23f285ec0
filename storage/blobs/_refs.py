"""References of registries to blobs, kept in the blob store itself.

Several registries may share one blob store. Each registry has an id (``recycler_meta``) and
keeps, for every blob it uses, an empty object ``refs/<registry id>/<xx>/<sha256>`` in the
store, written before the blob itself. ``gc`` deletes a blob only when no other registry
holds a reference to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from .._errors import UnsafeKeyError
from ._keys import key_for, sha_of_key

REFS = "refs"
_OWNER = re.compile(r"[0-9a-f]{32}")
_SHA = re.compile(r"[0-9a-f]{64}")


def check_owner(owner: str) -> str:
    """A registry id as refs use it (32 lowercase hex digits), else ``UnsafeKeyError``."""
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
        raise UnsafeKeyError(f"not a registry id: {owner!r}")
    return owner


def ref_parts(owner: str, key: str) -> tuple[str, str, str]:
    """``(owner, xx, sha)``: the path parts under ``refs/`` of ``owner``'s reference to ``key``."""
    sha = sha_of_key(key)
    return check_owner(owner), sha[:2], sha


def key_of_ref(owner_dir: str, sub: str, name: str) -> str | None:
    """The blob key a reference file names, or None for anything that is not one."""
    if not _OWNER.fullmatch(owner_dir) or not _SHA.fullmatch(name) or name[:2] != sub:
        return None
    return key_for(name)


@runtime_checkable
class SharedStore(Protocol):
    """A blob store that keeps registries' references (both built-in stores do).

    A store without them still works; ``gc`` then deletes no orphan blob on it.
    """

    def add_ref(self, owner: str, key: str) -> None:
        """Record that registry ``owner`` uses the blob at ``key``."""
        ...

    def drop_ref(self, owner: str, key: str) -> None:
        """Forget that reference (no error when there is none)."""
        ...

    def refs(self) -> Mapping[str, set[str]]:
        """Every reference in the store: registry id -> the blob keys it references."""
        ...

    def ref_owners(self, key: str) -> set[str]:
        """The registries that reference the blob at ``key`` (asked anew, not listed)."""
        ...
