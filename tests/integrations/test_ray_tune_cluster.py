"""A sweep across a real two-node Ray cluster on loopback, with PostgreSQL as the registry.

The head and a second node are started with ``ray start`` (each in its own process group, so
teardown stops exactly these processes); a separate driver process connects with
``ray.init(address=...)`` and runs the sweep with the trainable and callback of the README's
cluster recipe. Teacher blobs go to one folder both nodes see, as a shared volume would be.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from _local_ray import LOOPBACK, RAY_ENV  # noqa: E402
from ray import tune  # noqa: E402
from test_ray_tune import digits, run_config, trainable  # noqa: E402

from recycler.integrations.ray_tune import RegistryCallback  # noqa: E402
from storage import Registry  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
HERE = Path(__file__).parent
RAY_BIN = str(Path(sys.executable).with_name("ray"))
SECOND = "127.0.0.3"  # the second node's own loopback address


_GIVEN: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one handed out before (the OS may offer a port twice)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def wait_for_port(host: str, port: int, seconds: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {host}:{port} (ray start exit code {proc.poll()})")


def cluster_sweep(args_json: str) -> None:
    """The driver process: connect to the cluster, run the sweep, write each trial's result."""
    args = json.loads(args_json)
    ray.init(address=args["address"], _node_ip_address=LOOPBACK, log_to_driver=False)
    deadline = time.monotonic() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 2:
        assert time.monotonic() < deadline, "the second node never joined"
        time.sleep(0.5)
    cfg = args["cfg"]
    results = tune.Tuner(
        trainable(cfg, digits()),
        param_space={"lr": tune.grid_search([0.3, 0.1, 0.05, 0.03])},
        tune_config=tune.TuneConfig(metric="accuracy", mode="max", time_budget_s=240),
        run_config=run_config(Path(args["tmp"]), args["study"], [RegistryCallback(cfg)]),
    ).fit()
    out = [{k: r.metrics.get(k) for k in ("trial_id", "node", "accuracy")} for r in results]
    Path(args["out"]).write_text(json.dumps({"errors": len(results.errors), "trials": out}))
    ray.shutdown()


class Cluster:
    """``ray start`` head and second node, each in its own session; stop() ends both."""

    def __init__(self, temp: str, env: dict[str, str]) -> None:
        self.temp, self.env = temp, env
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> str:
        self._ray_start(
            "head",
            "--head",
            f"--node-ip-address={LOOPBACK}",
            f"--port={self.port}",
            "--include-dashboard=false",
            f"--dashboard-port={free_port()}",
        )
        wait_for_port(LOOPBACK, self.port, 90, self.procs[0])
        address = f"{LOOPBACK}:{self.port}"
        self._ray_start("node", f"--node-ip-address={SECOND}", f"--address={address}")
        return address

    def _ray_start(self, name: str, *flags: str) -> None:
        common = [
            "--num-cpus=1",
            "--block",
            "--disable-usage-stats",
            f"--temp-dir={self.temp}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        log = Path(self.temp) / f"{name}.log"
        with log.open("wb") as out:
            self.procs.append(
                subprocess.Popen(
                    [RAY_BIN, "start", *flags, *common],
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stop() ends all of it
                )
            )

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(Path(self.temp).glob("*.log")))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs:  # what ignored SIGTERM (or outlived its parent)
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A head and a second node, 1 CPU each, on loopback addresses; always stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ENV, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex * 2)
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths are bounded
    nodes = Cluster(temp, env)
    try:
        yield nodes.start(), env
    except BaseException:
        print(nodes.logs())
        raise
    finally:
        nodes.stop()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.server
@pytest.mark.timeout(420)
def test_sweep_across_two_nodes_registers_in_postgres(
    cluster: tuple[str, dict[str, str]], pg_url: str, tmp_path: Path
) -> None:
    address, env = cluster
    cfg: dict[str, Any] = {
        "registry": pg_url,
        "blobs": str(tmp_path / "shared-teachers"),
        "teachers": {"seed": 0},
    }
    study = f"cluster-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "results.json"
    args = json.dumps(
        {"address": address, "cfg": cfg, "study": study, "tmp": str(tmp_path), "out": str(out)}
    )
    log = tmp_path / "driver.log"
    with log.open("wb") as sink:
        driver = subprocess.run(
            [sys.executable, "-c", f"import test_ray_tune_cluster as t; t.cluster_sweep({args!r})"],
            cwd=HERE,
            env={**env, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])},
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=360,
        )
    assert driver.returncode == 0, log.read_text()[-4000:]
    outcome = json.loads(out.read_text())
    assert outcome["errors"] == 0
    trials = {t["trial_id"]: t for t in outcome["trials"]}
    assert len(trials) == 4
    assert len({t["node"] for t in trials.values()}) == 2  # the trials ran on both nodes

    registry = Registry(pg_url, cfg["blobs"])
    teachers = registry.query(study=study, final=True)
    assert sorted(str(r.trial_id) for r in teachers) == sorted(trials)  # once each
    for rec in teachers:
        assert rec.metric_value == pytest.approx(trials[str(rec.trial_id)]["accuracy"])
    check = registry.verify()
    assert check.checked == 4 and check.ok == 4 and not check.quarantined
