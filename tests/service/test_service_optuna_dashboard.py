"""optuna-dashboard keeps working on a demo-like database (Optuna's and recycler's tables in
one SQLite file): it lists both studies and shows the recycled trials' ``recycler`` attrs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from _service_data import PLAIN, RECYCLED, DemoLike

DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_optuna_dashboard_reads_the_recycled_study(demo_like: DemoLike, tmp_path: Path) -> None:
    if not DASHBOARD.exists():
        pytest.fail("optuna-dashboard is not installed: it is in recycler's dev extra")
    copy = tmp_path / "demo.db"  # the dashboard may write its own tables: not to the shared file
    shutil.copy(demo_like.url.removeprefix("sqlite:///"), copy)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECYCLER_")}
    command = [str(DASHBOARD), f"sqlite:///{copy}", "--host", "127.0.0.1", "--port", str(port)]
    with subprocess.Popen(
        [*command, "--server", "wsgiref", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        try:
            base = f"http://127.0.0.1:{port}"
            studies = None
            deadline = time.monotonic() + START_TIMEOUT_S
            with httpx.Client(base_url=base, timeout=10) as c:
                while studies is None and time.monotonic() < deadline:
                    assert child.poll() is None, child.stderr.read() if child.stderr else ""
                    try:
                        studies = c.get("/api/studies").json()["study_summaries"]
                    except httpx.TransportError:
                        time.sleep(0.25)
                assert studies is not None, "optuna-dashboard did not start"
                by_name = {s["study_name"]: s for s in studies}
                assert set(by_name) == {"demo-plain", "demo-recycled"}
                study_id = by_name["demo-recycled"]["study_id"]
                detail = c.get(f"/api/studies/{study_id}", params={"after": 0}).json()
                page = c.get("/dashboard")
        finally:
            child.terminate()
            child.communicate(timeout=30)
    trials = detail["trials"]
    assert [t["values"][0] for t in trials] == RECYCLED and len(PLAIN) == len(trials)
    for trial in trials:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        info = json.loads(attrs["recycler"])  # the dashboard shows a dict attr as JSON
        assert info["study"] == "demo-recycled"
        assert "teacher_forward_s" in info and "steps_distilled" in info
    assert len(trials[0]["intermediate_values"]) == 10
    assert page.status_code == 200
