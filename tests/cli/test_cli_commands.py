"""Every ``recycler`` command through a real subprocess, on a registry filled by ``register``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import pytest
import torch
from _cli_helpers import Filled, RunCli

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


def test_list_table_top_k_with_options_after_the_subcommand(
    filled: Filled, run_cli: RunCli
) -> None:
    out = run_cli(
        "teachers", "list", "--study", "lr-sweep", "--top", "2",
        "--registry", filled.url, "--blobs", str(filled.blobs),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    header, *rows = _table(out.stdout)
    assert header == ["ID", "STUDY", "TRIAL", "STEP", "METRIC", "VALUE", "DIR", "STATUS", "CREATED"]
    # the QUARANTINED trial 4 (0.90) is not READY, so trials 1 (0.72) and 2 (0.68) are the best
    assert [r[:8] for r in rows] == [
        [str(filled.ids["lr1"]), "lr-sweep", "1", "1000", "accuracy", "0.72", "max", "READY"],
        [str(filled.ids["lr2"]), "lr-sweep", "2", "1000", "accuracy", "0.68", "max", "READY"],
    ]


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
        "STUDENT TRIAL", "TEACHER", "TEACHER STUDY", "TEACHER TRIAL",
        "STEPS", "WEIGHT", "OVERHEAD", "CREATED",
    ]  # fmt: skip
    lr1, lr2 = str(filled.ids["lr1"]), str(filled.ids["lr2"])
    assert [r[:7] for r in rows] == [
        ["2", lr1, "lr-sweep", "1", "900", "0.5", "-"],
        ["3", lr1, "lr-sweep", "1", "500", "1", "0.12"],
        ["3", lr2, "lr-sweep", "2", "480", "1", "0.12"],
    ]

    out = run_cli(*where, "lineage", "lr-sweep", "3", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == [to_json(r) for r in filled.registry.lineage("lr-sweep", 3)]
    assert [(r["teacher_id"], r["steps_distilled"]) for r in got] == [
        (filled.ids["lr1"], 500),
        (filled.ids["lr2"], 480),
    ]


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
