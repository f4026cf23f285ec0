"""``recycler serve`` as a user runs it: it serves, stops on Ctrl-C, and refuses in one line.

Also: importing the service (and the whole CLI) leaves torch unloaded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from _service_data import DemoLike
from _service_helpers import TOKEN

from recycler.cli import main

RECYCLER = Path(sys.executable).with_name("recycler")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECYCLER_")}
    env.update(extra)
    return env


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RECYCLER), *args],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=120,
        check=False,
    )


def _serve(data: DemoLike, *args: str) -> subprocess.Popen[str]:
    command = [str(RECYCLER), "serve", "--registry", data.url, "--blobs", str(data.blobs), *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )


def _one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recycler: error: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def test_serve_runs_answers_and_stops_on_ctrl_c(demo_like: DemoLike) -> None:
    expected = _run("teachers", "list", "--json", "--registry", demo_like.url)
    with _serve(demo_like, "--port", "0") as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()  # printed once the socket listens
            assert line.startswith("recycler serve: http://127.0.0.1:"), line
            assert "read-only" in line
            with httpx.Client(base_url=line.split()[2], timeout=30) as c:
                info = c.get("/api/info").json()
                ready = c.get("/api/teachers").json()
            assert info["optuna"] is True and info["writes_enabled"] is False
            assert [t["id"] for t in ready] == [t["id"] for t in json.loads(expected.stdout)]
            child.send_signal(signal.SIGINT)
            _, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode in (0, 130, -signal.SIGINT), err
    assert "Traceback" not in err


def test_serve_refuses_a_public_bind_without_a_token(demo_like: DemoLike) -> None:
    where = ["--registry", demo_like.url, "--blobs", str(demo_like.blobs)]
    line = _one_line_error(_run("serve", *where, "--host", "0.0.0.0", "--port", "0"))
    assert "refusing to serve on 0.0.0.0 without a token" in line


def _main_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 2
    out = capsys.readouterr()
    return _one_line_error(subprocess.CompletedProcess(args, 2, out.out, out.err))


def test_serve_refuses_in_one_line(
    demo_like: DemoLike,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    where = ["serve", "--registry", demo_like.url, "--blobs", str(demo_like.blobs)]
    monkeypatch.delenv("RECYCLER_SERVE_TOKEN", raising=False)
    line = _main_error(capsys, *where, "--host", "192.168.1.7", "--port", "0")
    assert "refusing to serve on 192.168.1.7 without a token" in line
    monkeypatch.setenv("RECYCLER_SERVE_TOKEN", "short")
    line = _main_error(capsys, *where, "--host", "0.0.0.0", "--port", "0")
    assert "at least 16" in line and "short" not in line
    monkeypatch.delenv("RECYCLER_SERVE_TOKEN")
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    assert "is empty" in _main_error(capsys, *where, "--token-file", str(empty))
    gone = tmp_path / "no-token-file"
    assert "cannot read the token file" in _main_error(capsys, *where, "--token-file", str(gone))
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    assert "no registry database" in _main_error(capsys, "serve", "--registry", missing)
    assert "port" in _main_error(capsys, *where, "--port", "70000")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = _main_error(capsys, *where, "--port", port)
    assert f"cannot listen on 127.0.0.1 port {port}" in line


def test_serve_with_a_token_says_writes_need_it(demo_like: DemoLike, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with _serve(demo_like, "--port", "0", "--token-file", str(token_file)) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert "delete/restore need the token" in line and TOKEN not in line
            with httpx.Client(base_url=line.split()[2], timeout=30) as c:
                assert c.get("/api/info").json()["writes_enabled"] is True
            child.terminate()
            _, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
    assert TOKEN not in err


@pytest.mark.parametrize("module", ["recycler.service", "recycler.cli"])
def test_importing_the_service_leaves_torch_out(module: str) -> None:
    code = (
        f"import json, sys, {module}; "
        "print(json.dumps([m for m in ('torch', 'optuna') if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(out.stdout)
    assert "torch" not in loaded, f"importing {module} loaded torch"
    if module == "recycler.service":
        assert "optuna" not in loaded  # read only when a request needs it
