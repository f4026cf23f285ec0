"""Ray Tune adapter parts that need no running Ray: ids, paths, state, files, import guards."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray")
from ray import tune
from test_ray_tune import mlp, recycle_config

from recycler.config import RecycleConfig
from recycler.errors import ConfigError, RecyclerError
from recycler.integrations._ray_common import (
    WEIGHTS_FILE,
    read_meta,
    read_weights,
    shareable,
    write_checkpoint,
)
from recycler.integrations.ray_tune import (
    RegistryCallback,
    get_distiller,
    trial_number_of,
)
from storage import BlobError


def test_trial_numbers_are_stable_ints() -> None:
    assert trial_number_of("4cc34_00003") == 3
    assert trial_number_of("4cc34_00000") == 0
    hashed = trial_number_of("9f1c2ab0")
    assert hashed == trial_number_of("9f1c2ab0") and 0 <= hashed < 2**31
    assert trial_number_of("9f1c2ab1") != hashed


def test_config_paths_become_absolute_for_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = shareable(RecycleConfig.coerce({"registry": "sqlite:///r.db", "blobs": "teachers"}))
    assert cfg.registry == f"sqlite:///{tmp_path / 'r.db'}"
    assert cfg.blobs == str(tmp_path / "teachers")
    with pytest.raises(ConfigError, match="relative path"):
        shareable(RecycleConfig.coerce({"blobs": "teachers"}), resolve=False)
    with pytest.raises(ConfigError, match="in-memory"):
        shareable(RecycleConfig.coerce({"registry": "sqlite://"}))
    server = RecycleConfig.coerce({"registry": "postgresql+psycopg://u@db/s", "blobs": "s3://b/t"})
    assert shareable(server) is server


def test_callback_state_round_trips_and_pickles_without_connections(tmp_path: Path) -> None:
    callback = RegistryCallback(recycle_config(tmp_path), metric="accuracy", mode="max")
    callback.set_state({"keys": ["t_00001/66/ab"], "teachers": {"t_00001": [4]}})
    assert callback.registry is not None  # opened
    again = pickle.loads(pickle.dumps(callback))
    assert again.get_state() == callback.get_state()
    assert again._registry is None
    with pytest.raises(ConfigError, match="mode"):
        RegistryCallback(recycle_config(tmp_path), mode="maximum")
    from_tune = RegistryCallback(tune_config=tune.TuneConfig(metric="loss", mode="min"))
    assert (from_tune.metric, from_tune.mode) == ("loss", "min")


def test_checkpoint_files_round_trip_and_torch_files_are_never_unpickled(tmp_path: Path) -> None:
    net = mlp()
    write_checkpoint(tmp_path, net, {"study": "s", "trial_number": 3})
    meta = read_meta(tmp_path)
    assert meta["study"] == "s" and meta["weights"] == WEIGHTS_FILE
    loaded = read_weights(tmp_path, meta)
    assert loaded is not None
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in loaded[0].items())
    torch.save(net.state_dict(), tmp_path / "model.pt")  # a user's own checkpoint file
    from_torch = read_weights(tmp_path, {}, "model.pt")
    assert from_torch is not None and set(from_torch[0]) == set(net.state_dict())
    torch.save({"weights": net.state_dict(), "note": object()}, tmp_path / "pickled.pt")
    with pytest.raises(BlobError, match="refusing"):
        read_weights(tmp_path, {}, "pickled.pt")
    with pytest.raises(ValueError, match="plain file name"):
        read_weights(tmp_path, {"weights": "../../etc/passwd"})
    assert read_weights(tmp_path, {}, "absent.safetensors") is None


def test_outside_a_trial_get_distiller_says_where_it_works() -> None:
    with pytest.raises(RecyclerError, match="inside a Ray Tune trial"):
        get_distiller()


def test_core_never_imports_ray_and_missing_ray_names_the_extra() -> None:
    core = "import recycler, recycler.distiller, recycler.cli, sys; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", core], check=True, timeout=120)
    missing = (
        "import sys; sys.modules['ray'] = None\n"
        "try:\n    import recycler.integrations.ray_tune\n"
        "except ImportError as exc:\n"
        "    from recycler.errors import MissingExtraError\n"
        "    assert isinstance(exc, MissingExtraError) and 'recycler[ray]' in str(exc), exc\n"
        "else:\n    raise SystemExit('imported without ray')\n"
    )
    subprocess.run([sys.executable, "-c", missing], check=True, timeout=120)
