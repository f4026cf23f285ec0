"""Shared pieces of the ``recycler`` command: parser, global options, opening the registry.

A subcommand module exposes ``add(subparsers, common)``: it adds its parser(s) with
``parents=[common]`` and sets ``handler`` (a function ``Namespace -> exit code``) as a default.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeAlias

from .._storage import (
    BLOBS_ENV,
    DEFAULT_BLOBS,
    DEFAULT_URL,
    REGISTRY_ENV,
    Registry,
    scrub,
    sqlite_file,
)

PROG = "recycler"

Handler = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"


class CliError(Exception):
    """A user-facing failure of a command: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        self.exit(2, f"{PROG}: error: {one_line(message)}{hint}\n")


def common_options() -> Parser:
    """``--registry`` and ``--blobs``, accepted before and after any subcommand."""
    common = Parser(add_help=False)
    group = common.add_argument_group("registry location")
    group.add_argument(
        "--registry",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"database URL (default: ${REGISTRY_ENV}, else {DEFAULT_URL})",
    )
    group.add_argument(
        "--blobs",
        metavar="PATH_OR_URL",
        default=argparse.SUPPRESS,
        help=f"checkpoint folder or fsspec URL (default: ${BLOBS_ENV}, else {DEFAULT_BLOBS})",
    )
    return common


def registry_url(args: argparse.Namespace) -> str:
    """``--registry``, else ``$RECYCLER_REGISTRY``, else the default SQLite file."""
    given: str | None = getattr(args, "registry", None)
    return given if given is not None else os.environ.get(REGISTRY_ENV) or DEFAULT_URL


def blobs_location(args: argparse.Namespace) -> str:
    """``--blobs``, else ``$RECYCLER_BLOBS``, else ``./recycler-teachers``."""
    given: str | None = getattr(args, "blobs", None)
    if given is not None and not given.strip():
        raise CliError("--blobs is empty: pass a folder or an fsspec URL")
    return given if given is not None else os.environ.get(BLOBS_ENV) or DEFAULT_BLOBS


def locations(args: argparse.Namespace) -> list[str]:
    """Every registry and blob location the options and environment name (to hide secrets)."""
    found = [getattr(args, "registry", None), getattr(args, "blobs", None)]
    found += [os.environ.get(REGISTRY_ENV), os.environ.get(BLOBS_ENV)]
    return [f for f in found if f]


def open_registry(args: argparse.Namespace, *, must_exist: bool = True) -> Registry:
    """The registry the options name (never creating its tables: ``db upgrade`` does that).

    With ``must_exist`` a missing SQLite file is an error, so a mistyped path neither looks
    like an empty registry nor leaves an empty file behind.
    """
    url = registry_url(args)
    try:
        registry = Registry(url, blobs_location(args), create=False)
    except ModuleNotFoundError as exc:
        raise CliError(
            f"{exc}: install the driver, e.g. pip install 'recycler[postgres]'"
        ) from None
    path = sqlite_file(url) if must_exist else None
    if path is not None and not os.path.exists(path):
        raise CliError(
            f"no registry database at {path}: pass --registry URL, set ${REGISTRY_ENV}, "
            "or create one with `recycler db upgrade`"
        )
    return registry


def safe_message(message: str, urls: Iterable[str] = ()) -> str:
    """``message`` on one line, with every password of ``urls`` (and any URL password) hidden.

    The masking rules are storage's (:func:`storage.scrub`); this only makes it one line.
    """
    return one_line(scrub(message, *urls))


def one_line(text: str) -> str:
    """Collapse line breaks (a driver's multi-line message) into one line."""
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


#: The largest id, trial number or count a command takes: every registry backend stores it
#: (ids and trial numbers are PostgreSQL INTEGER, 32-bit; SQLite's are 64-bit).
MAX_INT = 2**31 - 1


def positive_int(text: str) -> int:
    """An argparse type: an integer from 1 to ``MAX_INT``."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {_shown(text)}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer from 0 to ``MAX_INT``."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {_shown(text)}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {_shown(text)}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {_shown(text)}")
    return value


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # also a number of more digits than Python converts
        raise argparse.ArgumentTypeError(f"must be an integer, got {_shown(text)}") from None
    if value > MAX_INT:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_INT} (a 32-bit integer), got {_shown(text)}"
        )
    return value


def _shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error message, shortened when long."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout (keys in a fixed order; NaN is refused)."""
    sys.stdout.write(json_text(value))


def json_text(value: Any) -> str:
    """``value`` as the indented JSON ``--json`` prints, with a final newline."""
    return json.dumps(value, indent=2, allow_nan=False) + "\n"
