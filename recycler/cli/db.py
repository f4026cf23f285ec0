"""``recycler db upgrade``: create or upgrade the registry schema."""

from __future__ import annotations

import argparse

from ._base import Parser, Subparsers, open_registry


def add(sub: Subparsers, common: Parser) -> None:
    """Add ``db`` and its actions to the command's subparsers."""
    db = sub.add_parser(
        "db",
        parents=[common],
        help="manage the registry database",
        description="Manage the registry database schema.",
    )
    actions = db.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "upgrade",
        parents=[common],
        help="create or upgrade the schema to this recycler's version",
        description="Create the registry tables, or migrate them to this recycler's schema "
        "version (back the database up first). A schema newer than this recycler is refused.",
    )
    p.set_defaults(handler=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    registry = open_registry(args, must_exist=False)
    version = registry.upgrade()
    print(f"registry {registry.url}: schema version {version}")
    return 0
