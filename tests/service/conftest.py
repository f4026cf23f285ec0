"""Fixtures of the service tests: a demo-like database and real uvicorn servers on loopback.

Each server runs in a thread of the test process on 127.0.0.1 and a port the OS picked, and
is stopped when its fixture ends.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _service_data import DemoLike, build
from _service_helpers import TOKEN, Served, serve

from storage._rdb.engine import dispose_all


@pytest.fixture(scope="session")
def demo_like(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoLike]:
    """The demo-like database, built once for the session (never written by a test)."""
    yield build(tmp_path_factory.mktemp("service-db"))
    dispose_all()


@pytest.fixture(scope="session")
def served(demo_like: DemoLike) -> Iterator[Served]:
    """A read-only server (no token) on the demo-like database."""
    yield from serve(demo_like)


@pytest.fixture
def writable(demo_like: DemoLike, tmp_path: Path) -> Iterator[Served]:
    """A server with a token, on a private copy of the database (tests may delete)."""
    root = tmp_path / "copy"
    shutil.copytree(Path(demo_like.url.removeprefix("sqlite:///")).parent, root)
    copy = DemoLike(url=f"sqlite:///{root / 'demo.db'}", blobs=root / "teachers", ids=demo_like.ids)
    yield from serve(copy, TOKEN)
    dispose_all()
