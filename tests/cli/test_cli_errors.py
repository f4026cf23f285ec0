"""Error paths of the ``recycler`` command: one line on stderr, exit code 2, no secrets."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch
from _cli_helpers import Filled, RunCli

from recycler import cli
from recycler.cli._base import MAX_INT
from storage import Registry, Status
from storage._rdb.engine import dispose_all

SECRET = "Sup3r-S3cret"


def _assert_one_error_line(out: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.startswith("recycler: error: ") and out.stderr.endswith("\n"), out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr
    for text in expected:
        assert text in out.stderr, out.stderr
    return out.stderr


def _in_process(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> subprocess.CompletedProcess[str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("case", "args", "expected"),
    [
        ("malformed url", ["--registry", "notaurl", "teachers", "list"], ["not a database URL"]),
        (
            "unreachable postgresql",
            [
                "teachers", "list",
                "--registry", f"postgresql+psycopg://bob:{SECRET}@127.0.0.1:1/recycler",
            ],
            ["unreachable", "bob:***@127.0.0.1:1"],
        ),
        ("unknown id", ["teachers", "show", "99999"], ["no teacher with id 99999"]),
        ("delete unknown id", ["teachers", "delete", "99999"], ["no teacher with id 99999"]),
        ("top zero", ["teachers", "list", "--top", "0"], ["--top", "positive"]),
        (
            "missing sqlite folder",
            ["--registry", "sqlite:///no/such/folder/reg.db", "lineage", "s"],
            ["no/such/folder", "does not exist"],
        ),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_exit_2(
    case: str, args: list[str], expected: list[str], filled: Filled, run_cli: RunCli
) -> None:
    env = {"RECYCLER_REGISTRY": filled.url, "RECYCLER_BLOBS": str(filled.blobs)}
    out = run_cli(*args, env=env)
    stderr = _assert_one_error_line(out, *expected)
    assert SECRET not in stderr + out.stdout


def test_a_newer_schema_is_refused_and_left_alone(
    tmp_path: Path, run_cli: RunCli, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "newer.db"
    Registry(f"sqlite:///{db}", tmp_path / "blobs").upgrade()
    dispose_all()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE recycler_schema SET version_num = '9999'")
    conn.close()
    before = _dump(db)
    out = run_cli("--registry", f"sqlite:///{db}", "db", "upgrade")
    _assert_one_error_line(out, "schema version 9999", "newer than this recycler")
    out = _in_process(["--registry", f"sqlite:///{db}", "teachers", "list"], capsys)
    _assert_one_error_line(out, "schema version 9999", "upgrade the recycler package")
    dispose_all()
    assert _dump(db) == before


HUGE = "99999999999999999999"  # beyond SQLite's 64-bit integers too


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["teachers", "show", "0"], ["argument ID", "positive integer", "'0'"]),
        (["teachers", "show", "-4"], ["argument ID", "positive integer", "'-4'"]),
        (["teachers", "show", HUGE], ["argument ID", f"at most {MAX_INT}", HUGE]),
        (["teachers", "show", str(MAX_INT + 1)], ["argument ID", f"at most {MAX_INT}"]),
        (["teachers", "show", "9" * 5000], ["argument ID", "must be an integer", "99..."]),
        (["teachers", "delete", "0"], ["argument ID", "positive integer"]),
        (["teachers", "delete", HUGE], ["argument ID", f"at most {MAX_INT}"]),
        (["teachers", "restore", HUGE], ["argument ID", f"at most {MAX_INT}"]),
        (["teachers", "export", "-1", "--out", "w.st"], ["argument ID", "positive integer"]),
        (["teachers", "export", HUGE, "--out", "w.st"], ["argument ID", f"at most {MAX_INT}"]),
        (["teachers", "list", "--top", HUGE], ["argument --top", f"at most {MAX_INT}"]),
        (["lineage", "lr-sweep", HUGE], ["argument TRIAL", f"at most {MAX_INT}"]),
        (["lineage", "lr-sweep", "-1"], ["argument TRIAL", ">= 0"]),
        (["teachers", "show", str(MAX_INT)], [f"no teacher with id {MAX_INT} in sqlite:///"]),
        (["teachers", "delete", str(MAX_INT)], [f"no teacher with id {MAX_INT} in sqlite:///"]),
    ],
)
def test_numbers_out_of_range_are_one_line_errors(
    args: list[str], expected: list[str], filled: Filled, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _in_process([*args, "--registry", filled.url, "--blobs", str(filled.blobs)], capsys)
    stderr = _assert_one_error_line(out, *expected)
    assert len(stderr) < 200


def test_export_errors_write_nothing(filled: Filled, run_cli: RunCli, tmp_path: Path) -> None:
    where = ["--registry", filled.url, "--blobs", str(filled.blobs)]
    ready = str(filled.ids["lr1"])
    (tmp_path / "mine.st").write_bytes(b"mine")
    (tmp_path / "side.json").write_bytes(b"mine")
    (tmp_path / "folder.st").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (["--out", "mine.st"], ["mine.st exists", "--force"]),
        (["--out", "side.st"], ["side.json exists", "--force"]),
        (["--out", "folder.st", "--force"], ["folder.st is a folder"]),
        (["--out", "no/such/w.st"], ["folder no/such is missing"]),
        (["--out", "mine.st/w.st"], ["mine.st is not a folder"]),
        (["--out", "w.json"], ["w.json ends in .json"]),
        (["--out", ""], ["--out names no file"]),
        ([], ["--out"]),
    ]
    for extra, expected in cases:
        _assert_one_error_line(run_cli(*where, "teachers", "export", ready, *extra), *expected)
    for role, status in (("lr4", "QUARANTINED"), ("lr5", "DELETED")):
        out = run_cli(*where, "teachers", "export", str(filled.ids[role]), "--out", "w.st")
        _assert_one_error_line(out, f"teacher {filled.ids[role]} is {status}, not READY")
    out = run_cli(*where, "teachers", "export", "99999", "--out", "w.st")
    _assert_one_error_line(out, "no teacher with id 99999")
    out = run_cli(
        "--registry", filled.url, "--blobs", str(tmp_path / "nowhere"),
        "teachers", "export", ready, "--out", "w.st",
    )  # fmt: skip
    _assert_one_error_line(out, "blob folder", "nowhere", "does not exist")
    assert (tmp_path / "mine.st").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert filled.registry.get(filled.ids["lr1"]).status is Status.READY


def test_export_of_a_corrupt_or_missing_blob_writes_nothing(
    tmp_path: Path, run_cli: RunCli
) -> None:
    url, blobs = f"sqlite:///{tmp_path / 'reg.db'}", tmp_path / "blobs"
    reg = Registry(url, blobs)
    corrupt, missing = (
        reg.register({"w": torch.full((8,), float(i))}, study="s", trial_number=i) for i in range(2)
    )
    path = blobs / corrupt.blob_key
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    (blobs / missing.blob_key).unlink()
    where = ["--registry", url, "--blobs", str(blobs), "teachers", "export"]

    out = run_cli(*where, str(corrupt.id), "--out", "w.safetensors")
    _assert_one_error_line(out, f"teacher {corrupt.id} failed its checksum", "quarantined")
    assert reg.get(corrupt.id).status is Status.QUARANTINED
    out = run_cli(*where, str(missing.id), "--out", "w.safetensors")
    _assert_one_error_line(out, f"teacher {missing.id}: blob", "nothing changed in the registry")
    assert reg.get(missing.id).status is Status.READY
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("w.", ".w."))]  # nor a temp
    dispose_all()
