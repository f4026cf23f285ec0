"""``recycler lineage STUDY [TRIAL]``: which teachers each student trial distilled from."""

from __future__ import annotations

import argparse

from .._storage import StorageError, TeacherRecord
from ._base import Parser, Subparsers, non_negative_int, open_registry, print_json
from ._format import lineage_table, to_json


def add(sub: Subparsers, common: Parser) -> None:
    """Add ``lineage`` to the command's subparsers."""
    p = sub.add_parser(
        "lineage",
        parents=[common],
        help="which teachers the trials of a study learned from",
        description="Lineage of a study (or of one trial): each student trial, the teachers it "
        "distilled from, for how many steps, with what weight and overhead.",
    )
    p.add_argument("study", metavar="STUDY", help="the student's study")
    p.add_argument("trial", metavar="TRIAL", nargs="?", type=non_negative_int, help="one trial")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=_lineage)


def _lineage(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    records = registry.lineage(args.study, args.trial)
    if args.json:
        print_json([to_json(r) for r in records])
        return 0
    if not records:
        trial = "" if args.trial is None else f" trial {args.trial}"
        print(f"no lineage recorded for study {args.study!r}{trial}")
        return 0
    teachers: dict[int, TeacherRecord | None] = {}
    for teacher_id in sorted({r.teacher_id for r in records}):
        try:
            teachers[teacher_id] = registry.get(teacher_id)
        except StorageError:  # gone, or a malformed row: the lineage is still shown
            teachers[teacher_id] = None
    print(lineage_table(records, teachers))
    return 0
