"""Types and helpers shared by the service tests and their fixtures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from _service_data import DemoLike

from recycler.service import ServeOptions, Service
from storage import Registry

TOKEN = "test-token-0123456789abcdef"
STATIC = Path(__file__).resolve().parents[2] / "recycler" / "service" / "static"
#: a URL to anywhere but here (the SVG namespace is a name, never fetched)
FOREIGN_URL = re.compile(r"(?:https?:)?//(?!www\.w3\.org/)[a-z0-9.-]+\.[a-z]{2,}", re.I)


@dataclass(frozen=True)
class Served:
    """A running server: its base URL (ending in ``/``), its data, and its registry."""

    url: str
    data: DemoLike
    registry: Registry

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)


def serve(data: DemoLike, token: str | None = None) -> Iterator[Served]:
    """Serve ``data`` on 127.0.0.1 (a free port) while the generator is suspended."""
    service = Service(ServeOptions(data.url, str(data.blobs), port=0, token=token))
    with service.running() as url:
        yield Served(url=url, data=data, registry=Registry(data.url, data.blobs, create=False))
