"""Every ``recycler`` command through a real subprocess, on a registry filled by ``register``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sqlite3
from pathlib import Path

import pytest
import torch
from _cli_helpers import RUN_A, RUN_B, Filled, RunCli, weights
from safetensors.torch import load_file

from recycler.cli._base import MAX_INT
from recycler.cli._format import to_json
from storage import SCHEMA_VERSION, Registry, Status, TeacherRecord
from storage._rdb.engine import dispose_all


def _table(stdout: str) -> list[list[str]]:
    """The rows of a table (header first), split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines()]


def test_list_json_reads_env_and_all_statuses(filled: Filled, run_cli: RunCli) -> None:
    env = {"RECYCLER_REGISTRY": filled.url, "RECYCLER_BLOBS": str(filled.blobs)}
    out = run_cli("teachers", "list", "--status", "all", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    got = json.loads(out.stdout)
    assert got == [to_json(r) for r in filled.registry.query(status=None)]
    assert [t["id"] for t in got] == sorted(filled.ids.values())
    statuses = {t["id"]: t["status"] for t in got}
    assert statuses[filled.ids["lr4"]] == "QUARANTINED"
    assert statuses[filled.ids["lr5"]] == "DELETED"
    assert list(got[0]) == [f.name for f in dataclasses.fields(TeacherRecord)]
    assert dt.datetime.fromisoformat(got[0]["created_at"]).tzinfo is not None
    kinds = {t["id"]: (t["trial_state"], t["final"]) for t in got}
    assert kinds == {
        filled.ids["lr0"]: ("running", False),
        filled.ids["lr1"]: ("complete", True),
        filled.ids["lr2"]: ("complete", True),
        filled.ids["lr3"]: ("pruned", True),
        filled.ids["lr4"]: ("complete", True),
        filled.ids["lr5"]: ("complete", True),
        filled.ids["bert"]: ("fail", True),
        filled.ids["odd"]: ("complete", True),
    }


def test_list_table_top_k_with_options_after_the_subcommand(
    filled: Filled, run_cli: RunCli
) -> None:
    out = run_cli(
        "teachers", "list", "--study", "lr-sweep", "--top", "2",
        "--registry", filled.url, "--blobs", str(filled.blobs),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    header, *rows = _table(out.stdout)
    assert header == [
        "ID", "STUDY", "TRIAL", "STATE", "STEP", "FINAL",
        "METRIC", "VALUE", "DIR", "STATUS", "CREATED",
    ]  # fmt: skip
    # the QUARANTINED trial 4 (0.90) is not READY, so trials 1 (0.72) and 2 (0.68) are the best
    lr1, lr2 = str(filled.ids["lr1"]), str(filled.ids["lr2"])
    assert [r[:10] for r in rows] == [
        [lr1, "lr-sweep", "1", "complete", "1000", "yes", "accuracy", "0.72", "max", "READY"],
        [lr2, "lr-sweep", "2", "complete", "1000", "yes", "accuracy", "0.68", "max", "READY"],
    ]


def test_list_table_shows_trial_state_and_intermediate_checkpoints(
    filled: Filled, run_cli: RunCli
) -> None:
    where = ["--registry", filled.url, "--blobs", str(filled.blobs)]
    out = run_cli(*where, "teachers", "list")
    assert out.returncode == 0, out.stderr
    header, *rows = _table(out.stdout)
    got = {r[0]: (r[1], r[header.index("STATE")], r[header.index("FINAL")]) for r in rows}
    assert got == {
        str(filled.ids["lr0"]): ("lr-sweep", "running", "no"),
        str(filled.ids["lr1"]): ("lr-sweep", "complete", "yes"),
        str(filled.ids["lr2"]): ("lr-sweep", "complete", "yes"),
        str(filled.ids["lr3"]): ("lr-sweep", "pruned", "yes"),
        str(filled.ids["bert"]): ("bert-mlm", "fail", "yes"),
        str(filled.ids["odd"]): ("o'neil; DROP TABLE x -- ü", "complete", "yes"),
    }


def test_show_table_and_json(filled: Filled, run_cli: RunCli) -> None:
    where = ["--registry", filled.url, "--blobs", str(filled.blobs)]
    bad = filled.registry.get(filled.ids["lr4"])
    out = run_cli(*where, "teachers", "show", str(bad.id))
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["status"] == "QUARANTINED"
    assert fields["reason"] == "manual: suspicious"
    assert fields["sha256"] == bad.sha256
    assert fields["blob_uri"] == bad.blob_uri
    assert json.loads(fields["params"]) == {"depth": 8, "lr": 0.1 / 5}
    assert json.loads(fields["tags"]) == {"model": "mlp"}
    assert set(fields) == {f.name for f in dataclasses.fields(TeacherRecord)}

    out = run_cli(*where, "teachers", "show", str(filled.ids["odd"]), "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == to_json(filled.registry.get(filled.ids["odd"]))
    assert got["study"] == "o'neil; DROP TABLE x -- ü"
    assert got["metric_value"] is None


def test_lineage_table_and_json(filled: Filled, run_cli: RunCli) -> None:
    where = ["--registry", filled.url, "--blobs", str(filled.blobs)]
    out = run_cli(*where, "lineage", "lr-sweep")
    assert out.returncode == 0, out.stderr
    header, *rows = _table(out.stdout)
    assert header == [
        "STUDENT TRIAL", "TRIAL ID", "RUN", "TEACHER", "TEACHER STUDY", "TEACHER TRIAL",
        "KIND", "STEPS", "WEIGHT", "OVERHEAD", "CREATED",
    ]  # fmt: skip
    lr1, lr2 = str(filled.ids["lr1"]), str(filled.ids["lr2"])
    assert [r[:10] for r in rows] == [
        ["2", "-", "-", lr1, "lr-sweep", "1", "kd", "900", "0.5", "-"],
        ["3", "4cc34_00003", "4f1c2a9b", lr1, "lr-sweep", "1", "kd", "500", "1", "0.12"],
        ["3", "4cc34_00003", "4f1c2a9b", lr2, "lr-sweep", "2", "kd", "480", "1", "0.12"],
        ["3", "9e0f1_00003", "c0ffee5e", lr1, "lr-sweep", "1", "kd", "300", "1", "-"],
    ]

    out = run_cli(*where, "lineage", "lr-sweep", "3", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    records = filled.registry.lineage("lr-sweep", 3)
    assert [{k: r[k] for k in list(r)[:-2]} for r in got] == [to_json(r) for r in records]
    assert list(got[0])[-5:] == ["run", "trial_id", "kind", "teacher_study", "teacher_trial"]
    assert [
        (r["teacher_id"], r["steps_distilled"], r["run"], r["trial_id"],
         r["teacher_study"], r["teacher_trial"])
        for r in got
    ] == [
        (filled.ids["lr1"], 500, RUN_A, "4cc34_00003", "lr-sweep", 1),
        (filled.ids["lr2"], 480, RUN_A, "4cc34_00003", "lr-sweep", 2),
        (filled.ids["lr1"], 300, RUN_B, "9e0f1_00003", "lr-sweep", 1),
    ]  # fmt: skip


def test_lineage_shows_the_init_parent(tmp_path: Path, run_cli: RunCli) -> None:
    url, blobs = f"sqlite:///{tmp_path / 'reg.db'}", tmp_path / "blobs"
    reg = Registry(url, blobs)
    a, b = (reg.register(weights(float(i)), study="s", trial_number=i).id for i in range(2))
    run = {"run": "cd" * 16, "trial_id": "t2"}
    reg.add_lineage("s", 2, a, steps_distilled=0, kind="init", **run)  # started from a
    reg.add_lineage("s", 2, a, steps_distilled=30, overhead=0.25, **run)  # and distilled
    reg.add_lineage("s", 2, b, steps_distilled=20, overhead=0.25, **run)
    dispose_all()
    where = ["--registry", url, "--blobs", str(blobs)]

    out = run_cli(*where, "lineage", "s", "2")
    assert out.returncode == 0, out.stderr
    header, *rows = _table(out.stdout)
    assert header[6] == "KIND"
    assert [r[:10] for r in rows] == [
        ["2", "t2", "cdcdcdcd", str(a), "s", "0", "init", "0", "1", "-"],
        ["2", "t2", "cdcdcdcd", str(a), "s", "0", "kd", "30", "1", "0.25"],
        ["2", "t2", "cdcdcdcd", str(b), "s", "1", "kd", "20", "1", "0.25"],
    ]
    out = run_cli(*where, "lineage", "s", "--json")
    assert out.returncode == 0, out.stderr
    got = [(r["teacher_id"], r["kind"], r["steps_distilled"]) for r in json.loads(out.stdout)]
    assert got == [(a, "init", 0), (a, "kd", 30), (b, "kd", 20)]


def test_lineage_of_a_gone_or_malformed_teacher(tmp_path: Path, run_cli: RunCli) -> None:
    db, blobs = tmp_path / "reg.db", tmp_path / "blobs"
    reg = Registry(f"sqlite:///{db}", blobs)
    kept, gone, bad = (
        reg.register({"w": torch.full((2,), float(i))}, study="t", trial_number=i) for i in range(3)
    )
    for teacher in (kept, gone, bad):
        reg.add_lineage("s", 7, teacher.id, steps_distilled=10, run="ab" * 16, trial_id="t7")
    dispose_all()
    conn = sqlite3.connect(db)  # by hand: no foreign keys enforced, no checks
    with conn:
        conn.execute("DELETE FROM recycler_teachers WHERE id = ?", (gone.id,))
        conn.execute("UPDATE recycler_teachers SET direction = 'sideways' WHERE id = ?", (bad.id,))
    conn.close()
    where = ["--registry", f"sqlite:///{db}", "--blobs", str(blobs)]

    out = run_cli(*where, "lineage", "s", "--json")
    assert out.returncode == 0, out.stderr
    got = [
        (r["teacher_id"], r["teacher_study"], r["teacher_trial"]) for r in json.loads(out.stdout)
    ]
    assert got == [(kept.id, "t", 0), (gone.id, None, None), (bad.id, None, None)]

    out = run_cli(*where, "lineage", "s", "7")
    assert out.returncode == 0, out.stderr
    assert [r[:6] for r in _table(out.stdout)[1:]] == [
        ["7", "t7", "abababab", str(kept.id), "t", "0"],
        ["7", "t7", "abababab", str(gone.id), "-", "-"],
        ["7", "t7", "abababab", str(bad.id), "-", "-"],
    ]
    dispose_all()


def test_delete_then_list_and_show(tmp_path: Path, run_cli: RunCli) -> None:
    url, blobs = f"sqlite:///{tmp_path / 'reg.db'}", tmp_path / "blobs"
    reg = Registry(url, blobs)
    keep, drop = (
        reg.register({"w": torch.full((4,), float(i))}, study="d", trial_number=i) for i in range(2)
    )
    where = ["--registry", url, "--blobs", str(blobs)]

    out = run_cli(*where, "teachers", "delete", str(drop.id))
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        f"teacher {drop.id} is DELETED (was READY): no reader uses it; "
        "`recycler teachers gc` removes its blob once nothing else needs it\n"
    )
    assert (blobs / drop.blob_key).exists()  # gc removes it, not delete

    out = run_cli(*where, "teachers", "list")
    assert [r[0] for r in _table(out.stdout)[1:]] == [str(keep.id)]
    out = run_cli(*where, "teachers", "list", "--status", "DELETED")
    assert [(r[0], r[9]) for r in _table(out.stdout)[1:]] == [(str(drop.id), "DELETED")]
    out = run_cli(*where, "teachers", "show", str(drop.id), "--json")
    shown = json.loads(out.stdout)
    assert (shown["id"], shown["status"], shown["reason"]) == (drop.id, "DELETED", "deleted")

    out = run_cli(*where, "teachers", "delete", str(drop.id))
    assert (out.returncode, out.stdout) == (
        0,
        f"teacher {drop.id} was already DELETED: nothing changed\n",
    )
    out = run_cli(*where, "teachers", "delete", str(keep.id), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == to_json(reg.get(keep.id))
    assert reg.get(keep.id).status is Status.DELETED
    assert run_cli(*where, "teachers", "list").stdout == "no READY teachers\n"
    dispose_all()


def test_export_writes_the_weights_and_the_fields(
    filled: Filled, run_cli: RunCli, tmp_path: Path
) -> None:
    where = ["--registry", filled.url, "--blobs", str(filled.blobs)]
    teacher = filled.registry.get(filled.ids["lr2"])
    out = run_cli(*where, "teachers", "export", str(teacher.id), "--out", "lr2.safetensors")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        f"teacher {teacher.id} (lr-sweep trial 2, step 1000): 2 tensors to lr2.safetensors, "
        "its fields to lr2.json\n"
    )
    got = load_file(tmp_path / "lr2.safetensors")
    expected = weights(2.0)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    registered = filled.registry.load(teacher.id).tensors
    assert all(torch.equal(got[name], registered[name]) for name in registered)
    fields = json.loads((tmp_path / "lr2.json").read_text(encoding="utf-8"))
    assert (fields["id"], fields["study"], fields["trial_number"]) == (teacher.id, "lr-sweep", 2)
    assert fields == to_json(teacher)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr2.json", "lr2.safetensors"]

    other = filled.registry.get(filled.ids["odd"])
    target = tmp_path / "sub" / "w.st"
    target.parent.mkdir()
    target.write_bytes(b"old")
    args = ["teachers", "export", str(other.id), "--out", str(target), "--force", "--json"]
    out = run_cli(*where, *args)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "id": other.id,
        "tensors": 2,
        "weights": str(target),
        "fields": str(target.with_suffix(".json")),
    }
    assert torch.equal(load_file(target)["fc.weight"], weights(11.0)["fc.weight"])
    assert json.loads(target.with_suffix(".json").read_text(encoding="utf-8"))["study"] == (
        "o'neil; DROP TABLE x -- ü"
    )
    assert sorted(p.name for p in target.parent.iterdir()) == ["w.json", "w.st"]


def test_verify_quarantines_a_corrupt_blob_and_gc_removes_dead_blobs(
    tmp_path: Path, run_cli: RunCli
) -> None:
    url, blobs = f"sqlite:///{tmp_path / 'reg.db'}", tmp_path / "blobs"
    reg = Registry(url, blobs)
    good, corrupt, deleted = (
        reg.register({"w": torch.full((8,), float(i))}, study="s", trial_number=i) for i in range(3)
    )
    path = blobs / corrupt.blob_key
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    reg.delete(deleted.id)
    orphan = blobs / "sha256" / "ab" / ("ab" + "0" * 62 + ".safetensors")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"nobody's")
    where = ["--registry", url, "--blobs", str(blobs)]

    out = run_cli(*where, "teachers", "verify")
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == [
        "checked 2 READY teachers: 1 ok, 1 quarantined",
        f"quarantined ids: {corrupt.id}",
    ]
    assert reg.get(corrupt.id).status is Status.QUARANTINED
    assert reg.get(good.id).status is Status.READY

    out = run_cli("teachers", "gc", "--grace", "0", "--json", *where)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {k: report[k] for k in list(report)[:5]} == {
        "blobs_removed": 1,
        "orphans_removed": 1,
        "pending_removed": 0,
        "temp_removed": 0,
        "kept_leased": 0,
    }
    assert (report["kept_young"], report["kept_shared"], report["dry_run"]) == (0, 0, False)
    assert not (blobs / deleted.blob_key).exists()
    assert not orphan.exists()
    assert (blobs / good.blob_key).exists() and path.exists()  # a quarantined blob is kept
    dispose_all()


def test_db_upgrade_with_the_installed_script(tmp_path: Path, run_cli: RunCli) -> None:
    db = tmp_path / "fresh.db"
    out = run_cli("db", "upgrade", env={"RECYCLER_REGISTRY": f"sqlite:///{db}"}, script=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"registry sqlite:///{db}: schema version {SCHEMA_VERSION}\n"
    assert Registry(f"sqlite:///{db}", tmp_path / "blobs", create=False).query() == []
    dispose_all()


@pytest.mark.server
def test_list_on_postgresql(pg_url: str, tmp_path: Path, run_cli: RunCli) -> None:
    reg = Registry(pg_url, tmp_path / "blobs")
    ids = [
        reg.register(
            {"w": torch.full((4,), float(i))},
            study="pg",
            trial_number=i,
            metric_name="loss",
            metric_value=loss,
            direction="minimize",
        ).id
        for i, loss in enumerate([0.9, 0.3, 0.5])
    ]
    out = run_cli(
        "--registry", pg_url, "--blobs", str(tmp_path / "blobs"),
        "teachers", "list", "--top", "2", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [t["id"] for t in json.loads(out.stdout)] == [ids[1], ids[2]]
    # the largest id the command takes fits PostgreSQL's 32-bit INTEGER: a lookup, no driver error
    out = run_cli("--registry", pg_url, "teachers", "show", str(MAX_INT))
    assert (out.returncode, out.stderr.count("\n")) == (2, 1), out.stderr
    assert f"no teacher with id {MAX_INT} in postgresql" in out.stderr
