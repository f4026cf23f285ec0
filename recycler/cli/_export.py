"""``teachers export``'s files: where they go, and writing each one whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from ._base import CliError


def export_paths(weights: Path, *, force: bool) -> tuple[Path, Path]:
    """``export``'s two files (``FILE``, ``FILE`` with ``.json``), once they may be written."""
    if not weights.name:
        raise CliError("--out names no file")
    fields = weights.with_suffix(".json")
    if fields == weights:
        raise CliError(f"--out {weights} ends in .json: the teacher's fields go to FILE.json")
    folder = weights.parent
    if not folder.is_dir():
        problem = f"{folder} is not a folder" if folder.exists() else f"folder {folder} is missing"
        raise CliError(f"{problem} (nothing was written)")
    for path in (weights, fields):
        if path.is_dir():
            raise CliError(f"{path} is a folder (nothing was written)")
        if os.path.lexists(path) and not force:
            raise CliError(f"{path} exists: pass --force to overwrite it (nothing was written)")
    return weights, fields


def write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` whole or not at all, as ``open`` would make it (the umask's mode).

    ``write`` fills a temporary file beside ``path``, which then replaces it.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
