"""``recycler teachers list|show|export|delete|verify|restore|gc``: find, inspect, clean up."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from .._storage import BLOBS_ENV, LocalBlobStore, Registry, Status, TeacherQuery
from ._base import (
    CliError,
    Parser,
    Subparsers,
    json_text,
    non_negative_float,
    open_registry,
    positive_int,
    print_json,
)
from ._export import export_paths, write_whole
from ._format import cell, teacher_details, teachers_table, to_json

_STATUSES = ", ".join(s.value for s in Status)


def add(sub: Subparsers, common: Parser) -> None:
    """Add ``teachers`` and its actions to the command's subparsers."""
    teachers = sub.add_parser(
        "teachers",
        parents=[common],
        help="list, show, export, delete, verify and garbage-collect teachers",
        description="Find, inspect, re-check and clean up the teachers in the registry.",
    )
    actions = teachers.add_subparsers(dest="teachers_action", metavar="ACTION", required=True)

    p = actions.add_parser(
        "list",
        parents=[common],
        help="list teachers (READY by default)",
        description="List teachers, by id; with --top K, the K best by metric.",
    )
    p.add_argument("--study", help="only this study")
    p.add_argument(
        "--top",
        type=positive_int,
        metavar="K",
        help="the K best by metric (each teacher ranked by its own direction)",
    )
    p.add_argument(
        "--status",
        type=_status,
        default=Status.READY.value,
        help=f"{_STATUSES} or all (default: READY)",
    )
    _add_json(p)
    p.set_defaults(handler=_list)

    p = actions.add_parser(
        "show",
        parents=[common],
        help="every field of one teacher",
        description="Show every field of one teacher, in any status.",
    )
    _add_id(p)
    _add_json(p)
    p.set_defaults(handler=_show)

    p = actions.add_parser(
        "export",
        parents=[common],
        help="write a READY teacher's weights to a safetensors file, its fields beside it",
        description="Load a READY teacher's weights (checked against their size and sha256; a "
        "corrupt blob quarantines the teacher) and write them to FILE as safetensors, and the "
        "teacher's fields (as `show --json` prints them) to FILE with a .json suffix.",
    )
    _add_id(p)
    p.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the safetensors file to write"
    )
    p.add_argument("--force", action="store_true", help="overwrite FILE and its .json file")
    _add_json(p)
    p.set_defaults(handler=_export)

    p = actions.add_parser(
        "delete",
        parents=[common],
        help="mark a teacher DELETED (gc removes its blob later)",
        description="Mark a teacher DELETED, in any status: readers no longer use it. Its blob "
        "stays until `recycler teachers gc` finds that nothing else needs it.",
    )
    _add_id(p)
    _add_json(p)
    p.set_defaults(handler=_delete)

    p = actions.add_parser(
        "verify",
        parents=[common],
        help="re-check every READY blob; quarantine bad ones (exit 1 if any problem)",
        description="Re-read every READY teacher's blob and check its size and sha256; a "
        "missing or corrupt blob quarantines its teacher. A blob that cannot be read this time "
        "and a malformed READY row are reported and left as they are. Exit code 1 if anything "
        "was found.",
    )
    _add_json(p)
    p.set_defaults(handler=_verify)

    p = actions.add_parser(
        "restore",
        parents=[common],
        help="bring a QUARANTINED teacher back once its blob verifies",
        description="Re-read a QUARANTINED teacher's blob (size, sha256, safetensors) and make "
        "it READY again if it verifies; a blob that still fails leaves it QUARANTINED (exit 2).",
    )
    _add_id(p)
    _add_json(p)
    p.set_defaults(handler=_restore)

    p = actions.add_parser(
        "gc",
        parents=[common],
        help="remove blobs of deleted teachers, orphan blobs and stale PENDING rows",
        description="Remove blobs no live teacher needs (never one a reader holds a lease on, "
        "nor one another registry sharing the blob store references), and orphan blobs, "
        "PENDING rows and temporary files older than the grace period.",
    )
    p.add_argument(
        "--grace",
        type=non_negative_float,
        default=3600.0,
        metavar="SECONDS",
        help="leave orphan blobs, PENDING rows and temp files younger than this (default: 3600)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing; list the blobs that would be removed",
    )
    _add_json(p)
    p.set_defaults(handler=_gc)


def _add_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=positive_int, metavar="ID", help="the teacher's id")


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _status(text: str) -> str:
    if text.lower() == "all":
        return "all"
    try:
        return Status(text.upper()).value
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be one of {_STATUSES} or all, got {text!r}"
        ) from None


def _list(args: argparse.Namespace) -> int:
    status = None if args.status == "all" else Status(args.status)
    registry = open_registry(args)
    records = registry.query(TeacherQuery(study=args.study, status=status, top_k=args.top))
    if args.json:
        print_json([to_json(r) for r in records])
    elif records:
        print(teachers_table(records))
    else:
        where = "" if args.study is None else f" in study {args.study!r}"
        print(f"no {'' if status is None else status.value + ' '}teachers{where}")
    return 0


def _show(args: argparse.Namespace) -> int:
    record = open_registry(args).get(args.id)
    if args.json:
        print_json(to_json(record))
    else:
        print(teacher_details(record))
    return 0


def _export(args: argparse.Namespace) -> int:
    weights, fields = export_paths(args.out, force=args.force)
    registry = open_registry(args)
    _require_blob_folder(registry)
    record = registry.get(args.id)
    if record.status is not Status.READY:
        raise CliError(f"teacher {record.id} is {record.status.value}, not READY: not exported")
    checkpoint = registry.load(record)  # size and sha256 checked; a corrupt blob is quarantined
    record, tensors = checkpoint.teacher, dict(checkpoint.tensors)
    from safetensors.torch import save_file  # imports torch: only here

    write_whole(weights, lambda tmp: save_file(tensors, tmp))
    text = json_text(to_json(record))
    write_whole(fields, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if args.json:
        out = {"id": record.id, "tensors": len(tensors)}
        print_json({**out, "weights": str(weights), "fields": str(fields)})
    else:
        print(
            f"teacher {record.id} ({cell(record.study)} trial {record.trial_number}, step "
            f"{record.step}): {len(tensors)} tensors to {weights}, its fields to {fields}"
        )
    return 0


def _delete(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    before = registry.get(args.id)
    record = before if before.status is Status.DELETED else registry.delete(args.id)
    if args.json:
        print_json(to_json(record))
    elif before.status is Status.DELETED:
        print(f"teacher {record.id} was already DELETED: nothing changed")
    else:
        print(
            f"teacher {record.id} is {record.status.value} (was {before.status.value}): no "
            "reader uses it; `recycler teachers gc` removes its blob once nothing else needs it"
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    _require_blob_folder(registry)
    report = registry.verify()
    problems = {
        "quarantined": report.quarantined,
        "unreadable": report.unreadable,
        "malformed": report.malformed,
    }
    if args.json:
        out: dict[str, object] = {"checked": report.checked, "ok": report.ok}
        out.update(problems)
        out["reasons"] = {str(k): v for k, v in report.reasons.items()}
        print_json(out)
    else:
        bad = report.quarantined
        line = f"checked {report.checked} READY teachers: {report.ok} ok, {len(bad)} quarantined"
        for name in ("unreadable", "malformed"):
            if problems[name]:
                line += f", {len(problems[name])} {name}"
        print(line)
        for name, ids in problems.items():
            if ids:
                print(f"{name} ids: " + " ".join(str(i) for i in ids))
        for teacher_id, why in report.reasons.items():
            if teacher_id not in bad:
                print(f"  {teacher_id}: {cell(why)}")
    return 1 if any(problems.values()) else 0


def _restore(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    _require_blob_folder(registry)
    record = registry.restore(args.id)
    if args.json:
        print_json(to_json(record))
    else:
        print(f"teacher {record.id} is {record.status.value}: its blob verified")
    return 0


def _gc(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    _require_blob_folder(registry)
    report = registry.gc(grace_seconds=args.grace, dry_run=args.dry_run)
    if args.json:
        print_json(dataclasses.asdict(report))
        return 0
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{verb} {report.blobs_removed} blobs of deleted teachers, "
        f"{report.orphans_removed} orphan blobs, {report.pending_removed} stale PENDING rows, "
        f"{report.temp_removed} temporary files; kept {report.kept_leased} leased blobs, "
        f"{report.kept_young} orphans younger than {args.grace:g} s, {report.kept_shared} "
        "blobs other registries use"
    )
    if report.dry_run:
        for key in report.removed:
            print(f"  {key}")
    for error in report.errors:
        print(f"  not handled: {cell(error)}")
    return 0


def _require_blob_folder(registry: Registry) -> None:
    """Refuse a local blob folder that does not exist (verify would quarantine every teacher)."""
    store = registry.blobs
    if isinstance(store, LocalBlobStore) and not os.path.isdir(store.url):
        raise CliError(
            f"blob folder {store.url} does not exist: pass --blobs PATH or set {BLOBS_ENV} "
            "(nothing was changed)"
        )
