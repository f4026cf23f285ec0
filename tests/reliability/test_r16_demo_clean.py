"""Item 2: ``recycler demo --out DIR`` deletes only what a demo made there: never a real
registry's blobs, never a file the demo did not write."""

from __future__ import annotations

from pathlib import Path

import pytest
from _r16 import blob_path, fill, weights

from recycler.cli import main
from recycler.demo.sweep import DB_NAME, TEACHERS, DemoOptions, clean
from storage import Registry

MARKER = ".recycler-demo"  # recycler.demo.sweep.MARKER: what a demo leaves in its folder


def test_a_folder_no_demo_made_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "project"
    real = Registry(f"sqlite:///{tmp_path / 'real.db'}", out / TEACHERS)  # a real registry
    ids = fill(real, 3)
    notes = out / TEACHERS / "NOTES.txt"
    notes.write_text("mine")
    (out / "sweep.png").write_bytes(b"my plot")
    with pytest.raises(ValueError, match="no earlier demo made"):
        clean(out, DemoOptions(out=out).url)
    args = ["demo", "--quick", "--trials", "1", "--epochs", "1", "--out", str(out)]
    assert main(args) == 2  # refused before any training
    assert "nothing was removed" in capsys.readouterr().err
    assert notes.read_text() == "mine" and (out / "sweep.png").read_bytes() == b"my plot"
    assert real.verify().ok == 3 and len(ids) == 3


def test_a_demo_folder_is_cleaned_of_the_demos_files_only(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    opts = DemoOptions(out=out)
    (out / MARKER).write_text("made by `recycler demo`")
    demo = Registry(opts.url, opts.blobs)
    demo_ids = fill(demo, 2, study="demo-plain")
    shared = demo.register(weights(50), study="demo-plain", trial_number=7)
    other = Registry(f"sqlite:///{tmp_path / 'other.db'}", opts.blobs)  # pointed at it later
    theirs = other.register(weights(50), study="demo-plain", trial_number=7)  # same bytes
    assert theirs.blob_key == shared.blob_key
    own = other.register(weights(51), study="mine", trial_number=1)
    demo_keys = [demo.get(t).blob_key for t in demo_ids]
    stray = out / TEACHERS / "README"
    stray.write_text("not the demo's")
    (out / "sweep.png").write_bytes(b"demo plot")
    removed = clean(out, opts.url)
    assert removed == [DB_NAME, "sweep.png", TEACHERS + "/"]
    for key in demo_keys:
        assert not blob_path(opts.blobs, key).exists()
    assert stray.read_text() == "not the demo's"
    assert blob_path(opts.blobs, shared.blob_key).exists()  # another registry uses it
    assert other.load(theirs.id).teacher.id == theirs.id
    assert other.load(own.id).teacher.id == own.id
    assert not (out / MARKER).exists() and not (out / DB_NAME).exists()
    with pytest.raises(ValueError, match="no earlier demo made"):
        clean(out, opts.url)  # unmarked now, and teachers/ holds another registry's blobs
