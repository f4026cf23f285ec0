"""Registry latency: registration and top-k queries at 1k and 10k teachers, SQLite and PostgreSQL.

Run:
    python examples/benchmarks/registry_bench.py            # SQLite; PostgreSQL too when
                                                            # RECYCLER_TEST_POSTGRES_URL is set
    python examples/benchmarks/registry_bench.py --postgres postgresql+psycopg://postgres@host/db
    python examples/benchmarks/registry_bench.py --quick    # 100 and 1,000 teachers, fewer samples

How each size is reached: the registry is filled up to ``size - samples`` teachers by a fast path
(a bulk INSERT of READY rows into ``recycler_teachers`` with valid, fake blob fields: random
sha256 digests, keys and URIs of the blob store, but no blob files), then ``samples`` real
``Registry.register`` calls (a small state dict each: blob written, fsynced and read back, two
transactions) are timed. On PostgreSQL the bulk load is followed by ANALYZE (as autovacuum would
soon do). Top-k is ``Registry.query(study="bench", top_k=5)`` with every teacher in
that one study, the worst case for the query. On PostgreSQL a scratch database is created and
dropped. Targets (issue 2): top-k p50 < 10 ms at 10k teachers, and p50(10k) <= 2 x p50(1k).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy import MetaData, Table, create_engine, insert, text
from sqlalchemy.engine import make_url

from storage import Registry, display_url
from storage._rdb.engine import dispose_all
from storage.blobs import key_for

STUDY = "bench"
TOP_K = 5
PG_ENV = "RECYCLER_TEST_POSTGRES_URL"


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    backend: str
    teachers: int
    register_ms: list[float]
    topk_ms: list[float]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def bulk_fill(url: str, registry: Registry, count: int, rng: random.Random, start: int) -> None:
    """Insert ``count`` READY teacher rows directly (the fast path; no blob files are written)."""
    if count <= 0:
        return
    engine = create_engine(make_url(url))
    try:
        table = Table("recycler_teachers", MetaData(), autoload_with=engine)
        now = dt.datetime.now(dt.timezone.utc)
        rows = []
        for i in range(start, start + count):
            sha = f"{rng.getrandbits(256):064x}"
            key = key_for(sha)
            metric = rng.random()
            minimize = i % 2 == 1  # both directions, as the registry ranks them together
            rows.append(
                dict(
                    study=STUDY,
                    trial_number=i,
                    trial_id=None,
                    framework="bench",
                    params={"lr": rng.random()},
                    metric_name="accuracy",
                    metric_value=metric,
                    score=-metric if minimize else metric,
                    direction="minimize" if minimize else "maximize",
                    step=0,
                    epoch=None,
                    final=True,
                    trial_state="complete",
                    output_signature="logits[10]",
                    blob_key=key,
                    blob_uri=registry.blobs.uri(key),
                    sha256=sha,
                    size_bytes=1024,
                    format="safetensors",
                    status="READY",
                    reason=None,
                    tags={},
                    lease_until=None,
                    created_at=now,
                    updated_at=now,
                )
            )
        with engine.begin() as conn:
            for chunk in range(0, len(rows), 1000):
                conn.execute(insert(table), rows[chunk : chunk + 1000])
        if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE recycler_teachers"))
    finally:
        engine.dispose()


def timed(fn: Callable[[], object]) -> float:
    """Milliseconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def run_backend(
    name: str, url: str, blobs: Path, sizes: list[int], samples: int, queries: int
) -> list[Row]:
    """Fill the registry size by size; time registrations and top-k queries at each size."""
    registry = Registry(url, blobs)
    registry.upgrade()
    rng = random.Random(0)
    total, out = 0, []
    for size in sizes:
        bulk_fill(url, registry, size - samples - total, rng, start=total)
        total = max(total, size - samples)
        register_ms = []
        for _ in range(samples):
            weights = {"w": torch.randn(256, generator=torch.Generator().manual_seed(total))}
            start = time.perf_counter()
            registry.register(
                weights,
                study=STUDY,
                trial_number=total,
                metric_name="accuracy",
                metric_value=rng.random(),
            )
            register_ms.append((time.perf_counter() - start) * 1000)
            total += 1
        best = registry.query(study=STUDY, top_k=TOP_K)  # warm up, and check the answer
        everyone = registry.query(study=STUDY)
        assert len(everyone) == total, (len(everyone), total)
        ranked = sorted(
            everyone,
            key=lambda r: (
                -(r.metric_value or 0)
                if r.direction.value == "maximize"
                else (r.metric_value or 0),
                r.id,
            ),
        )
        assert [r.id for r in best] == [r.id for r in ranked[:TOP_K]], "top-k is wrong"
        for _ in range(10):  # warm up: connections, statement caches
            registry.query(study=STUDY, top_k=TOP_K)
        topk_ms = [timed(lambda: registry.query(study=STUDY, top_k=TOP_K)) for _ in range(queries)]
        out.append(Row(name, total, register_ms, topk_ms))
        print(f"  {name}: {total:,} teachers measured", file=sys.stderr)
    dispose_all()
    return out


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database (created from ``admin_url``'s server), dropped afterwards."""
    admin = make_url(admin_url).set(drivername="postgresql+psycopg")
    name = f"recycler_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_all()
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def report(rows: list[Row]) -> bool:
    """Print the table and the targets; True when every target is met."""
    print(
        f"{'backend':<10} {'teachers':>8}  {'register p50':>12} {'register p99':>12}"
        f"  {'top-k p50':>9} {'top-k p99':>9}"
    )
    for r in rows:
        print(
            f"{r.backend:<10} {r.teachers:>8,}  "
            f"{percentile(r.register_ms, 50):>9.2f} ms {percentile(r.register_ms, 99):>9.2f} ms"
            f"  {percentile(r.topk_ms, 50):>6.2f} ms {percentile(r.topk_ms, 99):>6.2f} ms"
        )
    ok = True
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == backend]
        small, large = mine[0], mine[-1]
        p50_small, p50_large = percentile(small.topk_ms, 50), percentile(large.topk_ms, 50)
        ratio = p50_large / p50_small
        fast, flat = p50_large < 10.0, ratio <= 2.0
        ok = ok and fast and flat
        print(
            f"{backend}: top-k p50 at {large.teachers:,} = {p50_large:.2f} ms "
            f"(target < 10 ms: {'met' if fast else 'MISSED'}); p50({large.teachers:,})/"
            f"p50({small.teachers:,}) = {ratio:.2f}x (target <= 2x: {'met' if flat else 'MISSED'})"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit code 1 with ``--check`` when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 teachers")
    parser.add_argument("--postgres", metavar="URL", default=os.environ.get(PG_ENV))
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    sizes = [100, 1_000] if args.quick else [1_000, 10_000]
    samples, queries = (50, 100) if args.quick else (200, 500)
    print(
        f"registration: {samples} real Registry.register() calls per size (blob written, "
        "fsynced, verified); the other rows bulk-inserted into recycler_teachers as READY rows "
        "with fake blob fields (then ANALYZE on PostgreSQL).\n"
        f"top-k: {queries} x Registry.query(study={STUDY!r}, top_k={TOP_K}), every teacher in "
        "that one study.",
        end="\n\n",
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="recycler-bench-") as tmp:
        root = Path(tmp)
        url = f"sqlite:///{root / 'registry.db'}"
        rows += run_backend("sqlite", url, root / "blobs-sqlite", sizes, samples, queries)
        if args.postgres and not args.no_postgres:
            where = display_url(args.postgres)
            print(f"  postgresql: a scratch database on {where}", file=sys.stderr)
            with scratch_postgres(args.postgres) as pg:
                rows += run_backend("postgresql", pg, root / "blobs-pg", sizes, samples, queries)
    ok = report(rows)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
