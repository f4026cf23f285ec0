"""The parser and error handling in process: usage errors, the subcommand hook, secrets."""

from __future__ import annotations

import argparse
import subprocess

import pytest

from recycler import cli
from recycler.cli._base import Parser, Subparsers, safe_message


def _in_process(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> subprocess.CompletedProcess[str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


def _assert_one_error_line(out: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("recycler: error: ") and out.stderr.count("\n") == 1, out.stderr
    for text in expected:
        assert text in out.stderr, out.stderr


def test_in_process_usage_errors_interrupts_and_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _assert_one_error_line(_in_process(["teachers", "list", "--status", "x"], capsys), "READY")
    _assert_one_error_line(_in_process(["lineage", "s", "-3"], capsys), "TRIAL", ">= 0")
    _assert_one_error_line(_in_process(["teachers", "gc", "--grace", "nan"], capsys), "--grace")
    _assert_one_error_line(_in_process(["teachers"], capsys), "ACTION")

    def interrupted(*_args: object, **_kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("recycler.cli.teachers.open_registry", interrupted)
    assert cli.main(["teachers", "list"]) == 130
    assert capsys.readouterr().err == "recycler: interrupted\n"

    out = _in_process(["--help"], capsys)
    assert out.returncode == 0
    for command in ("teachers", "lineage", "db", "--registry", "--blobs"):
        assert command in out.stdout


def test_messages_never_show_passwords() -> None:
    url = "postgresql+psycopg://bob:p%40ss%3Aword@db/x?sslmode=require"
    message = (
        "could not connect as bob with p@ss:word\nto postgresql+psycopg://bob:p%40ss%3Aword@db"
    )
    shown = safe_message(message, [url])
    assert "p@ss:word" not in shown and "p%40ss" not in shown
    assert "\n" not in shown
    query = "postgresql://bob@db/x?password=hunter22"
    assert "hunter22" not in safe_message(f"failed: {query} (hunter22)", [query])


def test_a_new_subcommand_is_one_function_in_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def add_hello(sub: Subparsers, common: Parser) -> None:
        p = sub.add_parser("hello", parents=[common], help="say hello")
        p.add_argument("--name", default="world")
        p.set_defaults(handler=lambda args: print(f"hello {args.name}") or 0)

    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, add_hello))
    out = _in_process(["hello", "--name", "sweep"], capsys)
    assert (out.returncode, out.stdout) == (0, "hello sweep\n")
    assert isinstance(cli.build_parser(), argparse.ArgumentParser)
