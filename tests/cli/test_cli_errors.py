"""Error paths of the ``recycler`` command: one line on stderr, exit code 2, no secrets."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from _cli_helpers import Filled, RunCli

from recycler import cli
from storage import Registry
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
