"""``recycler lineage STUDY [TRIAL]``: which teachers each student trial distilled from (or
started from)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .._storage import LineageRecord, Registry, StorageError, TeacherRecord
from ._base import Parser, Subparsers, non_negative_int, open_registry, print_json
from ._format import lineage_json, lineage_table


def add(sub: Subparsers, common: Parser) -> None:
    """Add ``lineage`` to the command's subparsers."""
    p = sub.add_parser(
        "lineage",
        parents=[common],
        help="which teachers the trials of a study learned from",
        description="Lineage of a study (or of one trial): each student trial (its framework "
        "id, and the first characters of its run's key, which tell apart two runs of a reused "
        "study name), the teachers it distilled from (KIND kd), for how many steps, with what "
        "weight and overhead, and the teacher whose weights it started from (KIND init).",
    )
    p.add_argument("study", metavar="STUDY", help="the student's study")
    p.add_argument("trial", metavar="TRIAL", nargs="?", type=non_negative_int, help="one trial")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=_lineage)


def _lineage(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    records = registry.lineage(args.study, args.trial)
    teachers = _teachers(registry, records)
    if args.json:
        print_json([lineage_json(r, teachers) for r in records])
    elif records:
        print(lineage_table(records, teachers))
    else:
        trial = "" if args.trial is None else f" trial {args.trial}"
        print(f"no lineage recorded for study {args.study!r}{trial}")
    return 0


def _teachers(
    registry: Registry, records: Sequence[LineageRecord]
) -> dict[int, TeacherRecord | None]:
    """The teacher of each lineage row by id; ``None`` for one gone or malformed."""
    teachers: dict[int, TeacherRecord | None] = {}
    for teacher_id in sorted({r.teacher_id for r in records}):
        try:
            teachers[teacher_id] = registry.get(teacher_id)
        except StorageError:  # gone, or a malformed row: the lineage is still shown
            teachers[teacher_id] = None
    return teachers
