"""Shared by the Ray Tune adapter: trial numbers, configs workers can use, checkpoint files.

A recycled checkpoint folder holds the student's weights (``recycler_model.safetensors``)
and ``recycler.json``: who wrote it (study, trial), its clock and its output signature.
The driver's :class:`RegistryCallback` reads both to register the teacher. Nothing here
imports ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from torch import nn

from .._storage import (
    Direction,
    StorageError,
    encode_checkpoint,
    load_torch_file,
    sqlite_file,
    sqlite_in_memory,
    with_sqlite_file,
)
from ..config import RecycleConfig
from ..errors import ConfigError
from ..time import Clock

WEIGHTS_FILE = "recycler_model.safetensors"
META_FILE = "recycler.json"
FORMAT_VERSION = 1
_SUFFIX = re.compile(r"_(\d{1,9})$")
_SAFE_NAME = re.compile(r"^[\w.-]{1,255}$")


def trial_number_of(trial_id: str) -> int:
    """A stable int for a Ray trial id: its numeric suffix, else a 31-bit hash of the id.

    Tune's default search names trials ``<prefix>_00003``; search algorithms (OptunaSearch,
    ...) use random hex ids, which hash to a number that is the same on every node and
    after ``Tuner.restore``.

    Example:
        >>> trial_number_of("4cc34_00003"), trial_number_of("9f1c2ab0")
        (3, 1683464129)
    """
    found = _SUFFIX.search(trial_id)
    if found:
        return int(found.group(1))
    return zlib.crc32(trial_id.encode()) & 0x7FFFFFFF


def direction_of(mode: str | None) -> Direction:
    """Ray's ``mode`` ("max"/"min", or None for max) as a registry direction."""
    if mode in (None, "max", "maximize"):
        return Direction.MAXIMIZE
    if mode in ("min", "minimize"):
        return Direction.MINIMIZE
    raise ConfigError(f"mode: {mode!r} is not one of max, min")


def mode_of(direction: Direction) -> str:
    """A registry direction as Ray's ``mode``."""
    return "max" if direction is Direction.MAXIMIZE else "min"


def shareable(config: RecycleConfig, *, resolve: bool = True) -> RecycleConfig:
    """The config with its local SQLite file and blob folder as absolute paths.

    Ray runs each trial in its own working folder, so a relative path would point somewhere
    else in every trial. ``resolve=False`` (inside a worker) refuses relative paths instead.
    """
    registry = config.registry
    try:
        in_memory, db = sqlite_in_memory(registry), sqlite_file(registry)
    except StorageError as exc:  # not a database URL (the message hides its password)
        raise ConfigError(f"registry: {exc}") from None
    if in_memory:
        raise ConfigError(
            "registry: an in-memory SQLite database cannot be shared with Ray's trials; "
            "use a file (sqlite:////abs/path/recycler.db) or PostgreSQL"
        )
    if db is not None and not os.path.isabs(db):
        _refuse_relative(resolve, "registry", db)
        registry = with_sqlite_file(registry, os.path.abspath(db))
    blobs = config.blobs
    local = blobs[len("file://") :] if blobs.startswith("file://") else blobs
    if "://" not in local and not os.path.isabs(os.path.expanduser(local)):
        _refuse_relative(resolve, "blobs", local)
        blobs = os.path.abspath(os.path.expanduser(local))
    if (registry, blobs) == (config.registry, config.blobs):
        return config
    return dataclasses.replace(config, registry=registry, blobs=blobs)


def _refuse_relative(resolve: bool, option: str, path: str) -> None:
    if not resolve:
        raise ConfigError(
            f"{option}: {path!r} is a relative path, but Ray runs each trial in its own folder; "
            "give an absolute path, or build the trainable with recycled(), which resolves "
            "paths on the driver"
        )


def write_checkpoint(
    directory: str | os.PathLike[str], model: nn.Module, meta: Mapping[str, Any]
) -> None:
    """Write the model's weights (safetensors) and ``recycler.json`` into ``directory``."""
    folder = Path(directory)
    weights = encode_checkpoint(model.state_dict(), {}, skip_non_tensors=True)
    (folder / WEIGHTS_FILE).write_bytes(weights)
    data = {"format": FORMAT_VERSION, "weights": WEIGHTS_FILE, **meta}
    (folder / META_FILE).write_text(json.dumps(data, sort_keys=True), encoding="utf-8")


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``recycler.json`` of a checkpoint folder, or {} when it has none (or it is unreadable)."""
    path = Path(directory) / META_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_weights(
    directory: str | os.PathLike[str], meta: Mapping[str, Any], weights_file: str | None = None
) -> tuple[dict[str, torch.Tensor], str] | None:
    """The state dict in a checkpoint folder and the sha256 of its file; None if it has none.

    ``.safetensors`` files are parsed by safetensors; any other file is read as a torch file
    with ``weights_only=True`` (never unpickled).
    """
    name = weights_file or meta.get("weights") or WEIGHTS_FILE
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"weights file name {name!r} is not a plain file name")
    path = Path(directory) / name
    if not path.is_file():
        return None
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if name.endswith(".safetensors"):
        return dict(st_load(data)), sha
    return load_torch_file(str(path)), sha


def clock_of(meta: Mapping[str, Any]) -> Clock | None:
    """The trial's clock when the checkpoint was written, if ``recycler.json`` has it."""
    raw = meta.get("clock")
    if not isinstance(raw, Mapping):
        return None

    def number(name: str) -> int | None:
        value = raw.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    try:
        return Clock(
            step=number("step") or 0,
            epoch=number("epoch") or 0,
            steps_per_epoch=number("steps_per_epoch"),
            planned_steps=number("planned_steps"),
            planned_epochs=number("planned_epochs"),
        )
    except ConfigError:
        return None


def clock_dict(clock: Clock) -> dict[str, int | None]:
    """A clock as JSON for ``recycler.json``."""
    return {
        "step": clock.step,
        "epoch": clock.epoch,
        "steps_per_epoch": clock.steps_per_epoch,
        "planned_steps": clock.planned_steps,
        "planned_epochs": clock.planned_epochs,
    }
