"""Checkpoint bytes: safetensors with recycler's JSON metadata in the header. Never pickle."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported on use: the CLI's reads never need it
    import torch

from ._errors import BlobError

FORMAT = "safetensors"
_META_KEY = "recycler"
#: The largest safetensors header read (the format's own limit is 100 MB).
MAX_HEADER_BYTES = 100_000_000


def encode(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    *,
    skip_non_tensors: bool = False,
) -> bytes:
    """Serialise a state dict (tied weights and views are copied) with JSON metadata.

    The one state dict -> safetensors encoding. A non-tensor entry raises ``TypeError``, or
    is left out with ``skip_non_tensors``.
    """
    import torch
    from safetensors.torch import save as st_save

    flat: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            if skip_non_tensors:
                continue
            raise TypeError(f"state dict entry {name!r} is {type(value).__name__}, not a tensor")
        flat[name] = value.detach().to("cpu").contiguous().clone()
    return bytes(st_save(flat, metadata={_META_KEY: json.dumps(dict(metadata), sort_keys=True)}))


def decode(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Parse safetensors bytes; anything else (a pickle, a torch zip) raises ``BlobError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    if len(data) < 8 or data[8:9] != b"{":
        raise BlobError("checkpoint is not a safetensors file (pickled checkpoints are refused)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > min(len(data) - 8, MAX_HEADER_BYTES):  # checked before anything is parsed
        raise BlobError(
            f"checkpoint is not a valid safetensors file: its header claims {header_len} bytes "
            f"of {len(data)} (at most {MAX_HEADER_BYTES})"
        )
    try:
        tensors = st_load(data)
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BlobError(f"checkpoint is not a valid safetensors file: {exc}") from exc
    raw = (header.get("__metadata__") or {}).get(_META_KEY, "{}")
    try:
        metadata = json.loads(raw)
    except ValueError as exc:
        raise BlobError(f"checkpoint metadata is not JSON: {exc}") from exc
    return tensors, metadata if isinstance(metadata, dict) else {}


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def load_torch_file(path: str) -> dict[str, torch.Tensor]:
    """Read a torch checkpoint a framework handed us, with ``weights_only=True`` and no fallback."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure at all means: refuse the file
        raise BlobError(
            f"refusing torch checkpoint {path}: it is not a plain tensor file ({exc})"
        ) from exc
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    raise BlobError(f"refusing torch checkpoint {path}: expected a state dict of tensors")
