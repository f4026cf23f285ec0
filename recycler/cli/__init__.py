"""The ``recycler`` command: the teacher registry from a shell.

Example:
    $ recycler teachers list --study lr-sweep --top 5
    $ recycler --registry postgresql+psycopg://user@host/db teachers verify

Errors are one line on stderr (``recycler: error: ...``) and exit code 2; passwords in
database URLs are never printed. To add a subcommand group, write ``recycler/cli/<name>.py`` with an
``add(subparsers, common)`` function (see ``_base``) and list it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable

from .. import __version__
from .._storage import StorageError
from . import db, demo, lineage, serve, teachers
from ._base import (
    PROG,
    CliError,
    Parser,
    Subparsers,
    common_options,
    locations,
    safe_message,
)

#: The subcommands, in ``--help`` order; each adds its parser(s) to the subparsers.
COMMANDS: tuple[Callable[[Subparsers, Parser], None], ...] = (
    teachers.add,
    lineage.add,
    db.add,
    demo.add,
    serve.add,
)


def build_parser() -> Parser:
    """The argument parser of the whole command."""
    common = common_options()
    parser = Parser(
        prog=PROG,
        parents=[common],
        description="recycler: hyperparameter search that recycles prior runs as teachers. "
        "These commands inspect and maintain the teacher registry.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    urls = locations(args)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CliError, StorageError, ValueError) as exc:  # storage raises only StorageError
        return _fail(str(exc), urls)
    except BrokenPipeError:  # e.g. `recycler teachers list | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), urls)


def _fail(message: str, urls: Iterable[str]) -> int:
    print(f"{PROG}: error: {safe_message(message, urls)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
