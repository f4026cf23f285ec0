"""A real S3-protocol server for the tests: moto's server mode on a loopback port, started
and stopped by the test (``moto[server]`` from PyPI); and the store options to reach it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

from storage import FsspecBlobStore

BUCKET = "recycler-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1; ``stop()`` kills it (a server going away)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("moto server exited at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start in 30 s")

    def options(self) -> dict[str, Any]:
        """s3fs options: this endpoint, dummy keys, short timeouts, one attempt, no caches."""
        return {
            "endpoint_url": self.endpoint,
            "key": "test",
            "secret": "test",
            "use_listings_cache": False,
            "skip_instance_cache": True,
            "config_kwargs": {
                "connect_timeout": 1,
                "read_timeout": 3,
                "retries": {"max_attempts": 1, "mode": "standard"},
            },
        }

    def store(self, prefix: str) -> FsspecBlobStore:
        return FsspecBlobStore(f"s3://{BUCKET}/{prefix}", **self.options())

    def make_bucket(self) -> None:
        import s3fs

        s3fs.S3FileSystem(**self.options()).mkdir(BUCKET)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def register_worker(url: str, options: dict[str, Any], prefix: str, worker: int, out: Any) -> None:
    """A registration process: 2 checkpoints through the S3 store; reports ids or the error."""
    try:
        from _r16 import weights

        from storage import Registry

        reg = Registry(url, FsspecBlobStore(f"s3://{BUCKET}/{prefix}", **options))
        ids = [
            reg.register(weights(worker * 100 + i), study="s3", trial_number=worker * 100 + i).id
            for i in range(2)
        ]
        out.put(("ok", worker, ids))
    except BaseException as exc:
        out.put(("error", worker, f"{type(exc).__name__}: {exc}"))
