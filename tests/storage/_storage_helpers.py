"""Helpers shared by the storage tests, importable by spawned worker processes."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import text

from storage import Registry
from storage._rdb.engine import get_engine, reading


def worker_context() -> ForkServerContext:
    """Fresh worker processes: forked from a clean server that has imported ``storage`` once.

    Like 'spawn', nothing of the test process (engines, connections, threads) is inherited,
    but each worker starts in milliseconds instead of re-importing torch for seconds.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["storage"])
    return ctx


def tiny_state(seed: int, n: int = 2) -> dict[str, torch.Tensor]:
    """A small state dict whose values are derived from ``seed`` (so seeds never collide)."""
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    out = {f"layer{i}.weight": base * (seed + 1) + i for i in range(n)}
    out["bias"] = torch.full((3,), float(seed), dtype=torch.float64)
    out["step"] = torch.tensor([seed], dtype=torch.int64)
    return out


def register_many(reg: Registry, study: str, worker: int, count: int) -> list[int]:
    """Register ``count`` distinct checkpoints of one worker; returns their ids."""
    ids = []
    for i in range(count):
        rec = reg.register(
            tiny_state(worker * 100_000 + i),
            study=study,
            trial_number=worker * 1000 + i,
            metric_name="acc",
            metric_value=i / count,
        )
        ids.append(rec.id)
    return ids


def concurrent_worker(url: str, blobs: str, worker: int, count: int, out: Any) -> None:
    """Body of one spawned registration process: reports ("ok", ids) or ("error", text)."""
    try:
        ids = register_many(Registry(url, blobs), "concurrent", worker, count)
        out.put(("ok", worker, ids))
    except BaseException as exc:
        out.put(("error", worker, f"{type(exc).__name__}: {exc}"))


def crash_worker(url: str, blobs: str, base: int, started: Any) -> None:
    """Register checkpoints forever (until SIGKILLed); signals after a first, warm-up one."""
    reg = Registry(url, blobs)
    i = 0
    while True:
        reg.register(
            tiny_state(base + i, n=4),
            study="crash",
            trial_number=base + i,
            metric_value=float(i),
        )
        if i == 0:  # first-call costs are paid: from here on every moment is mid-registration
            started.set()
        i += 1


def sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_files(root: Path) -> set[str]:
    """Every file under ``root``, as POSIX paths relative to it, but the registries'
    references (``refs/``: one empty file per blob a registry uses, see ``storage.blobs._refs``).
    """
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return {f for f in found if not f.startswith("refs/")}


def scalar(url: str, sql: str, **params: Any) -> Any:
    with reading(get_engine(url)) as conn:
        return conn.execute(text(sql), params).scalar()
