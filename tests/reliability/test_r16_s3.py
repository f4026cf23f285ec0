"""Item 12: the fsspec store against a real S3-protocol server (moto's server mode) on
loopback: the store's contract and the registry's, registries sharing one prefix, concurrent
registration from several processes, and the server stopped mid-trial (the trial goes on)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _r16 import weights
from _s3 import BUCKET, MotoServer, register_worker
from torch import nn

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from storage import (
    BlobCorruptError,
    BlobError,
    Registry,
    Status,
    UnsafeKeyError,
)
from storage.blobs import key_for

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        server.make_bucket()
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"teachers-{uuid.uuid4().hex[:8]}"


def test_the_store_contract_on_s3(moto: MotoServer, prefix: str) -> None:
    store = moto.store(prefix)
    data = b"weights" * 100
    key = key_for(hashlib.sha256(data).hexdigest())
    assert not store.exists(key)
    store.put(key, data)
    assert store.exists(key) and store.get(key) == data and store.read(key, len(data)) == data
    with pytest.raises(BlobError, match="more than the"):
        store.read(key, 10)
    assert [k for k, _ in list(store.keys())] == [key]
    assert store.uri(key) == f"s3://{BUCKET}/{prefix}/{key}"
    store.add_ref("a" * 32, key)
    assert store.ref_owners(key) == {"a" * 32} and store.refs() == {"a" * 32: {key}}
    store.drop_ref("a" * 32, key)
    assert store.ref_owners(key) == set()
    store.delete(key)
    store.delete(key)  # twice: no error
    assert not store.exists(key)
    with pytest.raises(BlobError, match="missing"):
        store.get(key)
    for bad in ("../x", f"sha256/{'0' * 2}/../../etc", "/etc/passwd"):
        with pytest.raises(UnsafeKeyError):
            store.put(bad, b"x")


def test_the_registry_contract_on_s3(moto: MotoServer, prefix: str, tmp_path: Path) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", moto.store(prefix))
    recs = [reg.register(weights(i), study="s", trial_number=i, metric_value=i) for i in range(3)]
    assert reg.register(weights(0), study="s", trial_number=0).id == recs[0].id  # idempotent
    assert torch.equal(reg.load(recs[1].id).tensors["w0"], weights(1)["w0"])
    assert reg.verify().ok == 3
    store = reg.blobs
    store.put(recs[2].blob_key, b"not the bytes")  # corrupt one in place
    with pytest.raises(BlobCorruptError):
        reg.load(recs[2].id)
    assert reg.get(recs[2].id).status is Status.QUARANTINED
    reg.delete(recs[0].id)
    report = reg.gc(grace_seconds=0)
    assert (report.blobs_removed, report.errors) == (1, ())
    assert not store.exists(recs[0].blob_key) and store.exists(recs[1].blob_key)


def test_two_registries_share_one_s3_prefix(moto: MotoServer, prefix: str, tmp_path: Path) -> None:
    a = Registry(f"sqlite:///{tmp_path / 'a.db'}", moto.store(prefix))
    b = Registry(f"sqlite:///{tmp_path / 'b.db'}", moto.store(prefix))
    ids = [a.register(weights(i), study="a", trial_number=i).id for i in range(3)]
    report = b.gc(grace_seconds=0)
    assert (report.orphans_removed, report.kept_shared) == (0, 3)
    assert a.verify().ok == 3 and len(ids) == 3


def test_concurrent_registration_from_processes(
    moto: MotoServer, prefix: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Registry(url, moto.store(prefix)).upgrade()
    ctx = mp.get_context("forkserver")
    # (the soak test starts its workers from the same server: it preloads the distiller too)
    ctx.set_forkserver_preload(
        ["torch", "safetensors.torch", "storage", "recycler.distiller", "s3fs"]
    )
    out = ctx.Queue()
    procs = [
        ctx.Process(target=register_worker, args=(url, moto.options(), prefix, w, out))
        for w in range(3)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [r[0] for r in results] == ["ok"] * 3, results
    reg = Registry(url, moto.store(prefix))
    ready = reg.query(status=Status.READY)
    assert len(ready) == 6 and reg.verify().ok == 6
    assert {k for k, _ in list(reg.blobs.keys())} == {r.blob_key for r in ready}


def test_the_server_stopped_mid_trial(moto: MotoServer, tmp_path: Path) -> None:
    server = moto  # the module's server: this test, the last one, stops it
    try:
        reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", server.store("mid-trial"))
        for i in range(2):
            torch.manual_seed(i)
            reg.register(nn.Linear(3, 2).state_dict(), study="s", trial_number=i, metric_value=i)
        cfg = RecycleConfig.from_dict({"teachers": {"quality_gate": False}})
        net = nn.Linear(3, 2)
        kd = Distiller(
            cfg, study="s", trial_number=5, registry=reg, model=net, background_refresh=False
        )
        x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
        kd.loss(net(x), y, x).backward()
        assert len(kd.teachers) == 2
        server.stop()  # the object store goes away mid-trial
        start = time.perf_counter()
        for _ in range(3):
            kd.loss(net(x), y, x).backward()  # the loaded teachers go on teaching
        with pytest.warns(RuntimeWarning, match="registering the model failed"):
            outcome = kd.finish("complete", 0.9)
        assert time.perf_counter() - start < 60
        assert outcome.state == "complete" and outcome.record is None
        assert kd.stats()["steps_distilled"] == 4 and outcome.info["registry_errors"]
        later = Distiller(
            cfg, study="s", trial_number=6, registry=reg, model=net, background_refresh=False
        )
        with pytest.warns(RuntimeWarning, match="did not load"):
            later.loss(net(x), y, x).backward()  # a trial that starts now: no teachers, trains
        assert later.teachers == [] and {r.status for r in reg.query()} == {Status.READY}
    finally:
        server.stop()
