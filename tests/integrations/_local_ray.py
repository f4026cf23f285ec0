"""One local Ray for a test module: 2 CPUs, loopback only, its own temp folder, one token.

Ray keeps the authentication token it first reads for the rest of the process, so every module
of a pytest run must start Ray with the same token: it lives here, once.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    # Ray's token authentication stays on (its default) with the token from the environment,
    # so nothing is read from or written to ~/.ray; Ray sets RAY_AUTH_MODE=token itself
    "RAY_AUTH_TOKEN": uuid.uuid4().hex * 2,
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}
# Ray rewrites 127.0.0.1 and localhost to the host's outward address; other 127/8 addresses
# are left alone, so everything stays on the loopback interface
LOOPBACK = "127.0.0.2"


@contextmanager
def local_ray(prefix: str = "rt") -> Iterator[Any]:
    """Start a local Ray in this process; always shut down, its environment restored."""
    ray = pytest.importorskip("ray")
    from storage._rdb.engine import dispose_all

    with pytest.MonkeyPatch.context() as mp:
        for key, value in RAY_ENV.items():
            mp.setenv(key, value)
        for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
            mp.setenv(key, "")  # recorded, so teardown restores them (and drops Ray's own)
            mp.delenv(key)
        temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: socket paths are bounded
        try:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                _temp_dir=temp,
                log_to_driver=False,
            )
            yield ray
        finally:
            ray.shutdown()
            dispose_all()
            shutil.rmtree(temp, ignore_errors=True)
