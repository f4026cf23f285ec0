"""Running the app with uvicorn: in the foreground (``recycler serve``) or in a thread (tests).

The listening socket is bound here, before uvicorn starts, so a port in use or a bad address
is one clear error, and a test can ask for port 0 and read the port it got.

Example:
    >>> with Service(ServeOptions("sqlite:///r.db", "blobs", port=0)).running() as url:
    ...     pass  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._imports import require
from .._storage import Registry, sqlite_file, with_sqlite_file
from ._app import create_app
from ._guard import ASGIApp
from ._optuna import OptunaReader
from ._security import Access

DEFAULT_PORT = 8765
_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServeOptions:
    """Where the registry is and how to serve it.

    Example:
        >>> ServeOptions("sqlite:///r.db", "./teachers").host
        '127.0.0.1'
    """

    registry: str
    blobs: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    optuna: bool = True  # show the Optuna studies sharing the database

    def __repr__(self) -> str:  # never the token
        return (
            f"ServeOptions(host={self.host!r}, port={self.port}, "
            f"token={'***' if self.token else None})"
        )


def absolute_url(url: str) -> str:
    """A SQLite file URL with its path made absolute (a later ``chdir`` changes nothing)."""
    path = sqlite_file(url)
    if path is None or os.path.isabs(path):
        return url
    return with_sqlite_file(url, os.path.abspath(path))


class Service:
    """One registry served over HTTP: the app, its access rules, its listening socket.

    Example:
        >>> service = Service(ServeOptions("sqlite:///r.db", "blobs"))  # doctest: +SKIP
        >>> service.serve_forever()  # doctest: +SKIP
    """

    def __init__(self, options: ServeOptions, registry: Registry | None = None) -> None:
        url = absolute_url(options.registry)
        self.options = options
        self.access = Access.create(options.host, options.token, (url, options.blobs))
        self._own_registry = registry is None
        self.registry = registry or Registry(url, options.blobs, create=False)
        self.optuna = OptunaReader(url) if options.optuna else None
        self.app: ASGIApp = create_app(
            self.registry, self.access, optuna=self.optuna, blobs=options.blobs
        )
        self._socket: socket.socket | None = None

    def bind(self) -> socket.socket:
        """Open the listening socket (``OSError`` when the address or port cannot be had)."""
        if self._socket is None:
            host = self.options.host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._socket = socket.create_server((host, self.options.port), family=family)
        return self._socket

    @property
    def url(self) -> str:
        """The page's address (after :meth:`bind`)."""
        host, port = self.bind().getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def _server(self, *, quiet: bool) -> Any:
        uvicorn = require("uvicorn", "serve", feature="recycler serve")
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ws="none",
            lifespan="off",
            log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
            timeout_graceful_shutdown=5,
        )
        return uvicorn.Server(config)

    def serve_forever(self) -> None:
        """Serve until interrupted (Ctrl-C, SIGTERM)."""
        server = self._server(quiet=False)
        try:
            server.run(sockets=[self.bind()])
        finally:
            self.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Serve in a background thread while the block runs; yields the page's URL."""
        server = self._server(quiet=True)
        sock = self.bind()
        url = self.url
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name="recycler-serve",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started and thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        try:
            if not server.started:
                raise RuntimeError("the server did not start")
            yield url
        finally:
            server.should_exit = True
            thread.join(timeout=_START_TIMEOUT_S)
            self.close()

    def close(self) -> None:
        """Close the socket and the database connections."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.optuna is not None:
            self.optuna.close()
        if self._own_registry:
            self.registry.close()
