"""``recycler serve``: the registry's page and JSON API on a loopback port (read-only).

The service (FastAPI, uvicorn) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from .._storage import TeacherQuery
from ._base import CliError, Parser, Subparsers, blobs_location, open_registry, registry_url


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text!r}")
    return value


def add(sub: Subparsers, common: Parser) -> None:
    """Add ``serve`` to the command's subparsers."""
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="the registry in a browser: studies, teachers, lineage, curves (read-only)",
        description="Serve a page and a JSON API (schema at /api/openapi.json) over the "
        "registry: studies, teachers (sort, filter), a teacher's detail, the lineage of a "
        "study as a graph, and accuracy against trial and wall-clock, plain against recycled "
        "when both Optuna studies share the database. Read-only and on 127.0.0.1 by default. "
        "A token (RECYCLER_SERVE_TOKEN, or --token-file) enables delete/restore and is "
        "required to serve beyond loopback; then every API call needs it.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=_port, default=8765, help="port (default 8765; 0 picks a free one)"
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="read the token from this file's first line (default: $RECYCLER_SERVE_TOKEN)",
    )
    p.add_argument(
        "--no-optuna", action="store_true", help="do not read Optuna studies from the database"
    )
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        from ..service import ServeOptions, Service, token_from
    except ImportError as exc:
        raise CliError(
            f"recycler serve needs the serve extra ({exc}): pip install 'recycler[serve]'"
        ) from None
    registry = open_registry(args)
    registry.query(TeacherQuery(limit=1))  # a missing or foreign schema fails here, in one line
    options = ServeOptions(
        registry=registry_url(args),
        blobs=blobs_location(args),
        host=args.host,
        port=args.port,
        token=token_from(args.token_file),
        optuna=not args.no_optuna,
    )
    service = Service(options, registry)
    try:
        url = service.url
    except OSError as exc:
        raise CliError(
            f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}"
        ) from None
    mode = (
        "delete/restore need the token" if service.access.writes_enabled else "read-only: no token"
    )
    if service.access.reads_need_token:
        mode += "; every API call needs the token"
    print(f"recycler serve: {url} (registry {registry.url}; {mode}); Ctrl-C stops", flush=True)
    service.serve_forever()
    print("recycler serve: stopped", file=sys.stderr)
    return 0
