"""Blob keys are generated from a sha256, never taken from input; anything else is refused."""

from __future__ import annotations

import re

from .._errors import UnsafeKeyError

_SHA = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{64})\.safetensors")


def key_for(sha256: str) -> str:
    """The one blob key a checkpoint with this sha256 may have."""
    if not isinstance(sha256, str) or not _SHA.fullmatch(sha256):
        raise UnsafeKeyError(f"not a sha256 hex digest: {sha256!r}")
    return f"sha256/{sha256[:2]}/{sha256}.safetensors"


def check_key(key: str) -> str:
    """Return ``key`` if it is a generated key, else raise ``UnsafeKeyError``.

    Generated keys contain only ``[0-9a-f/.]`` in one fixed shape, so ``..``, absolute
    paths, percent- or double-encoded separators, backslashes and NUL can never pass.
    """
    match = _KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None or match.group(2)[:2] != match.group(1):
        raise UnsafeKeyError(
            f"refusing blob key {key!r}: keys are generated as sha256/<xx>/<sha256>.safetensors"
        )
    return key


def sha_of_key(key: str) -> str:
    """The sha256 a valid key was generated from."""
    return check_key(key).rsplit("/", 1)[1].split(".", 1)[0]
