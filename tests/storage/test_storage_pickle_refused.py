"""A checkpoint carrying a pickle payload is refused by every read path; it never runs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _storage_helpers import tiny_state
from sqlalchemy import text

from storage import BlobError, Registry, Status, _checkpoint, load_torch_file
from storage._rdb.engine import get_engine, writing
from storage.blobs import key_for


class _Payload:
    """Unpickling this object runs code that writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (exec, (f"__import__('pathlib').Path({str(self.marker)!r}).write_text('pwned')",))


def _raw_pickle(marker: Path, path: Path) -> None:
    path.write_bytes(pickle.dumps({"weight": _Payload(marker)}, protocol=4))


def _torch_zip(marker: Path, path: Path) -> None:
    torch.save({"weight": torch.ones(2), "evil": _Payload(marker)}, path)


def _torch_legacy(marker: Path, path: Path) -> None:
    torch.save({"evil": _Payload(marker)}, path, _use_new_zipfile_serialization=False)


MAKERS: dict[str, Callable[[Path, Path], None]] = {
    "raw-pickle": _raw_pickle,
    "torch-zip": _torch_zip,
    "torch-legacy": _torch_legacy,
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_payload_is_live(tmp_path: Path, kind: str) -> None:
    """Control: an unsafe load of the same payload does write its marker."""
    marker = tmp_path / "control-marker"
    path = tmp_path / "payload.bin"
    MAKERS[kind](marker, path)
    _unsafe_unpickle(path)  # deliberately unsafe: the control
    assert marker.read_text() == "pwned"


class _AnyStorage(pickle.Unpickler):
    """Plain pickle that stubs torch's tensor storages: what an unsafe loader would run."""

    def persistent_load(self, pid: object) -> None:
        return None

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("torch"):  # tensors rebuild from storages we stubbed
            return lambda *args, **kwargs: None
        return super().find_class(module, name)


def _unsafe_unpickle(path: Path) -> None:
    """Unpickle every pickle in a raw, torch-zip or legacy torch file, as torch would."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            _AnyStorage(io.BytesIO(archive.read(name))).load()
        return
    # a legacy file is several pickles in a row
    with path.open("rb") as fh, contextlib.suppress(EOFError, pickle.UnpicklingError):
        while True:
            _AnyStorage(fh).load()


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_every_read_path_refuses_a_pickle(
    registry: Registry, db_url: str, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "payload.bin"
    MAKERS[kind](marker, path)
    payload = path.read_bytes()
    sha = hashlib.sha256(payload).hexdigest()

    # plant it as the blob of a READY teacher, with a row that matches its checksum
    rec = registry.register(tiny_state(1), study="s", trial_number=0, metric_value=1.0)
    registry.blobs.put(key_for(sha), payload)
    with writing(get_engine(db_url)) as conn:
        conn.execute(
            text(
                "UPDATE recycler_teachers SET sha256 = :sha, blob_key = :key, size_bytes = :n "
                "WHERE id = :id"
            ),
            {"sha": sha, "key": key_for(sha), "n": len(payload), "id": rec.id},
        )
    assert registry.verify().ok == 1  # the checksum passes: only the format check stops it

    with pytest.raises(BlobError, match="not a safetensors file") as info:
        registry.load(rec.id)
    assert "quarantined" in str(info.value)
    got = registry.get(rec.id)
    assert got.status is Status.QUARANTINED and "pickled checkpoints are refused" in (
        got.reason or ""
    )

    with pytest.raises(BlobError, match="not a safetensors file"):
        _checkpoint.decode(payload)
    with pytest.raises(BlobError, match="refusing torch checkpoint"):
        load_torch_file(str(path))
    assert not marker.exists()


def test_load_torch_file_accepts_a_plain_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    state = tiny_state(3)
    torch.save(state, path)
    got = load_torch_file(str(path))
    assert set(got) == set(state)
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_load_torch_file_refuses_non_tensor_content(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    torch.save({"w": torch.ones(1), "lr": 0.1}, path)
    with pytest.raises(BlobError, match="expected a state dict of tensors"):
        load_torch_file(str(path))
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(BlobError, match="refusing torch checkpoint"):
        load_torch_file(str(tmp_path / "junk.pt"))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x05\x00\x00\x00\x00\x00\x00\x00{", b"\xff" * 8 + b"{}", b"PK\x03\x04" + b"\x00" * 40],
)
def test_decode_refuses_malformed_bytes(data: bytes) -> None:
    with pytest.raises(BlobError):
        _checkpoint.decode(data)
