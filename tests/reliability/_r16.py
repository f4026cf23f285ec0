"""Helpers of the reliability tests (issue 16): small weights, rows written by hand."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import text

from storage import Registry
from storage._rdb.engine import get_engine, reading, writing


def weights(seed: int, n: int = 2) -> dict[str, torch.Tensor]:
    """A tiny state dict derived from ``seed`` (distinct seeds, distinct blobs)."""
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    return {f"w{i}": base * (seed + 1) + i for i in range(n)}


def fill(reg: Registry, n: int, study: str = "s", first: int = 0) -> list[int]:
    return [
        reg.register(weights(first + i), study=study, trial_number=first + i, metric_value=i).id
        for i in range(n)
    ]


def sql(url: str, statement: str, **params: Any) -> Any:
    with writing(get_engine(url)) as conn:
        return conn.execute(text(statement), params)


def scalar(url: str, statement: str, **params: Any) -> Any:
    with reading(get_engine(url)) as conn:
        return conn.execute(text(statement), params).scalar()


def insert_row(url: str, **overrides: Any) -> int:
    """A READY teacher row written by hand (another tool, or a hostile writer)."""
    now = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    sha = overrides.pop("sha256", "b" * 64)
    row: dict[str, Any] = dict(
        study="s",
        trial_number=900,
        trial_id=None,
        framework="foreign",
        params=json.dumps({"lr": 0.1}),
        metric_name="acc",
        metric_value=0.99,
        score=0.99,
        direction="maximize",
        step=0,
        epoch=None,
        final=True,
        trial_state="complete",
        output_signature="",
        blob_key=f"sha256/{sha[:2]}/{sha}.safetensors",
        blob_uri="file:///nowhere",
        sha256=sha,
        size_bytes=10,
        format="safetensors",
        status="READY",
        tags=json.dumps({}),
        created_at=now,
        updated_at=now,
    )
    row.update(overrides)
    cols = ", ".join(row)
    marks = ", ".join(f":{c}" for c in row)
    with writing(get_engine(url)) as conn:
        conn.execute(text(f"INSERT INTO recycler_teachers ({cols}) VALUES ({marks})"), row)
        return int(conn.execute(text("SELECT max(id) FROM recycler_teachers")).scalar_one())


def blob_path(root: Path, key: str) -> Path:
    return root.joinpath(*key.split("/"))
