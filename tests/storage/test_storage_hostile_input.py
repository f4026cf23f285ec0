"""Hostile blob keys, planted symlinks and awkward names: refused, or stored exactly."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage_helpers import store_files, tiny_state

from storage import (
    BlobStore,
    FsspecBlobStore,
    LocalBlobStore,
    Registry,
    UnsafeKeyError,
    open_store,
)
from storage.blobs import check_key, key_for, sha_of_key

SHA = hashlib.sha256(b"x").hexdigest()
GOOD = key_for(SHA)

HOSTILE_KEYS = [
    "",
    "../x",
    "/etc/passwd",
    "sha256/../../etc/passwd",
    "%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252f",
    "..%2f..%2fetc%2fpasswd",
    "sha256/ab/" + "a" * 64 + ".safetensors",  # prefix does not match the digest
    "sha256/AA/" + "A" * 64 + ".safetensors",  # not lowercase hex
    GOOD + "\x00",
    GOOD.replace("x", "") + "\x00.txt",
    GOOD.replace("/", "\\"),
    "sha256\\..\\..\\etc\\passwd",
    GOOD + " ",
    " " + GOOD,
    GOOD + "\n",
    GOOD + "/",
    "/" + GOOD,
    "./" + GOOD,
    f"sha256/{SHA[:2]}/../{SHA[:2]}/{SHA}.safetensors",
    f"sha256//{SHA}.safetensors",
    f"sha256/{SHA[:2]}/{SHA}.safetensors/../../../../etc/passwd",
    f"sha256/{SHA[:2]}/{SHA}.pt",
    f"sha256%2f{SHA[:2]}%2f{SHA}.safetensors",
    f"file:///{GOOD}",
    f"s3://bucket/{GOOD}",
]


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "store")
    else:
        fs_store = FsspecBlobStore(f"memory://recycler-test-{uuid.uuid4().hex}")
        yield fs_store
        for key, _ in list(fs_store.keys()):
            fs_store.delete(key)


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
def test_hostile_keys_are_refused(store: BlobStore, tmp_path: Path, key: str) -> None:
    before = store_files(tmp_path)
    with pytest.raises(UnsafeKeyError, match="refusing blob key"):
        store.put(key, b"data")
    with pytest.raises(UnsafeKeyError):
        store.get(key)
    with pytest.raises(UnsafeKeyError):
        store.exists(key)
    with pytest.raises(UnsafeKeyError):
        store.delete(key)
    with pytest.raises(UnsafeKeyError):
        store.uri(key)
    with pytest.raises(UnsafeKeyError):
        check_key(key)
    assert store_files(tmp_path) == before  # nothing written anywhere
    assert list(store.keys()) == []


@pytest.mark.parametrize("key", [None, b"sha256", 42, ["sha256"]], ids=repr)
def test_non_string_keys_are_refused(store: BlobStore, key: object) -> None:
    with pytest.raises(UnsafeKeyError):
        store.get(key)  # type: ignore[arg-type]


def test_a_generated_key_round_trips(store: BlobStore) -> None:
    store.put(GOOD, b"x")
    assert store.exists(GOOD) and store.get(GOOD) == b"x"
    assert [key for key, _mtime in store.keys()]  # noqa: SIM118 == [GOOD]
    assert store.uri(GOOD).endswith(GOOD)
    store.delete(GOOD)
    store.delete(GOOD)  # already gone: no error
    assert not store.exists(GOOD)


@pytest.mark.parametrize(
    "digest",
    ["A" * 64, "g" * 64, "a" * 63, "a" * 65, "", "a" * 64 + "\n", "../" + "a" * 61, None],
    ids=repr,
)
def test_key_for_refuses_anything_but_a_hex_digest(digest: object) -> None:
    with pytest.raises(UnsafeKeyError, match="not a sha256 hex digest"):
        key_for(digest)  # type: ignore[arg-type]


def test_sha_of_key_inverts_key_for() -> None:
    assert sha_of_key(key_for(SHA)) == SHA
    with pytest.raises(UnsafeKeyError):
        sha_of_key("sha256/ab/" + "a" * 64 + ".safetensors")


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"{SHA}.safetensors").write_bytes(b"secret")
    return outside


def _assert_all_refused(store: LocalBlobStore) -> None:
    for call in (
        lambda: store.get(GOOD),
        lambda: store.exists(GOOD),
        lambda: store.delete(GOOD),
        lambda: store.put(GOOD, b"overwrite"),
    ):
        with pytest.raises(UnsafeKeyError, match="outside the store root"):
            call()
    assert list(store.keys()) == []


def test_symlinked_prefix_folder_is_refused(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    store = LocalBlobStore(tmp_path / "store")
    (tmp_path / "store" / "sha256").mkdir(parents=True)
    os.symlink(outside, tmp_path / "store" / "sha256" / SHA[:2])
    _assert_all_refused(store)
    assert (outside / f"{SHA}.safetensors").read_bytes() == b"secret"
    assert sorted(os.listdir(outside)) == [f"{SHA}.safetensors"]


def test_symlinked_blob_file_is_refused(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    store = LocalBlobStore(tmp_path / "store")
    (tmp_path / "store" / "sha256" / SHA[:2]).mkdir(parents=True)
    os.symlink(outside / f"{SHA}.safetensors", tmp_path / "store" / GOOD)
    _assert_all_refused(store)
    assert (outside / f"{SHA}.safetensors").read_bytes() == b"secret"


def test_symlinked_sha256_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / SHA[:2]).mkdir(parents=True)
    (outside / SHA[:2] / f"{SHA}.safetensors").write_bytes(b"secret")
    (tmp_path / "store").mkdir()
    os.symlink(outside, tmp_path / "store" / "sha256")
    store = LocalBlobStore(tmp_path / "store")
    _assert_all_refused(store)
    assert (outside / SHA[:2] / f"{SHA}.safetensors").read_bytes() == b"secret"


def test_gc_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "store")
    rec = reg.register(tiny_state(1), study="s", trial_number=0)
    os.symlink(outside, tmp_path / "store" / "sha256" / SHA[:2])
    report = reg.gc(grace_seconds=0)
    assert (report.orphans_removed, report.blobs_removed) == (0, 0)
    assert (outside / f"{SHA}.safetensors").read_bytes() == b"secret"
    assert reg.load(rec.id).teacher == rec


def test_store_under_a_symlinked_root_works(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    store = LocalBlobStore(tmp_path / "link")
    store.put(GOOD, b"x")
    assert store.get(GOOD) == b"x"
    assert (tmp_path / "real" / GOOD).read_bytes() == b"x"


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path / "a"), LocalBlobStore)
    assert isinstance(open_store(f"file://{tmp_path / 'b'}"), LocalBlobStore)
    assert open_store(f"file://{tmp_path / 'b'}").url == str(tmp_path / "b")
    assert isinstance(open_store("memory://x"), FsspecBlobStore)
    store = LocalBlobStore(tmp_path / "c")
    assert open_store(store) is store


def test_registry_on_an_fsspec_store(tmp_path: Path) -> None:
    url = f"memory://recycler-test-{uuid.uuid4().hex}"
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", url)
    keep = reg.register(tiny_state(1), study="s", trial_number=0)
    gone = reg.register(tiny_state(2), study="s", trial_number=1)
    assert keep.blob_uri == f"{url}/{keep.blob_key}"
    assert reg.load(keep.id).tensors["bias"].tolist() == tiny_state(1)["bias"].tolist()
    reg.delete(gone.id)
    assert reg.gc(grace_seconds=0).blobs_removed == 1
    assert [key for key, _mtime in reg.blobs.keys()]  # noqa: SIM118 == [keep.blob_key]
    reg.blobs.delete(keep.blob_key)


AWKWARD = [
    "it's",
    'say "hi"',
    "'; DROP TABLE recycler_teachers; --",
    '"; DROP TABLE recycler_teachers; --',
    "100%",
    "%",
    "a_b",
    "_",
    "études-🚀",
    "back\\slash",
    "tab\tand\nnewline",
    "[x]*?",
    "$1 {{x}} ${x}",
]
DECOYS = ["100x", "1000", "axb", "ab", "x", "etudes-", "études", "backslash", "say hi"]


def test_awkward_study_names_and_tags_round_trip(registry: Registry) -> None:
    ids: dict[str, int] = {}
    for i, name in enumerate(AWKWARD + DECOYS):
        rec = registry.register(
            tiny_state(i),
            study=name,
            trial_number=0,
            metric_value=float(i),
            tags={name: name, "kind": name, "k'ey": "v%"},
            params={name: [name]},
            output_signature=name,
            trial_id=name,
        )
        ids[name] = rec.id
    for name in AWKWARD + DECOYS:
        got = registry.get(ids[name])
        assert (got.study, got.trial_id, got.output_signature) == (name, name, name)
        assert dict(got.tags) == {name: name, "kind": name, "k'ey": "v%"}
        assert dict(got.params) == {name: [name]}
        assert [r.id for r in registry.query(study=name)] == [ids[name]]
        assert [r.id for r in registry.query(tags={"kind": name})] == [ids[name]]
        assert [r.id for r in registry.query(tags={name: name})] == [ids[name]]
        assert [r.id for r in registry.query(output_signature=name)] == [ids[name]]
        assert [r.id for r in registry.query(study=name, top_k=3)] == [ids[name]]
        assert registry.count_finished_trials(name) == 1
    everyone = sorted(ids.values())
    assert [r.id for r in registry.query(tags={"k'ey": "v%"})] == everyone
    assert registry.query(tags={"k'ey": "v_"}) == []
    assert registry.query(tags={"k_ey": "v%"}) == []
    assert registry.query(study="%%") == [] and registry.query(study="a%") == []
    assert len(registry.query()) == len(AWKWARD + DECOYS)  # the table is still there


def test_awkward_names_in_lineage(registry: Registry) -> None:
    teacher = registry.register(tiny_state(0), study="t", trial_number=0).id
    for i, name in enumerate(AWKWARD):
        registry.add_lineage(name, i, teacher, steps_distilled=i)
    registry.add_lineage("1000", 0, teacher, steps_distilled=99)
    for i, name in enumerate(AWKWARD):
        rows = registry.lineage(name)
        assert [(r.study, r.trial_number, r.steps_distilled) for r in rows] == [(name, i, i)]
    assert len(registry.lineage("100%")) == 1
