"""Every docstring example in recycler and storage runs and prints what it says; so do the
README's SQL queries, and its install table names every extra of ``pyproject.toml``."""

from __future__ import annotations

import contextlib
import doctest
import importlib
import pkgutil
import re
import sqlite3
from pathlib import Path
from types import ModuleType

import pytest
import torch

import recycler
import storage
from storage import SCHEMA_VERSION, Registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _modules() -> list[str]:
    names = []
    for package in (recycler, storage):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if ".migrations" not in info.name:
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


# -- the README ----------------------------------------------------------------------------


def test_readme_install_table_names_every_extra() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    install = README.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([\w-]+)` \|", install, flags=re.MULTILINE)
    assert listed == list(extras)


def test_readme_names_the_current_schema_version() -> None:
    named = re.search(r"the schema\s+version \(`(\d{4})` now\)", README)
    assert named is not None and named.group(1) == SCHEMA_VERSION


def _readme_registry(folder: Path) -> Path:
    """The registry of the README's examples, after teacher 5's blob went bad and 6 was deleted.

    Study ``cifar100-lr``: trials 0-5 (teachers 1-6); trials 3 and 4 distilled from the three
    teachers before them for 3900 steps, trial 5 from teachers 1 and 2 for 1950.
    """
    db = folder / "recycler.db"
    reg = Registry(f"sqlite:///{db}", str(folder / "recycler-teachers"))
    gen = torch.Generator().manual_seed(0)
    trials = [(0.1, 0.612, 39000), (0.05, 0.684, 39000), (0.02, 0.701, 39000)]
    trials += [(0.01, 0.667, 39000), (0.2, 0.623, 39000), (0.5, 0.214, 7800)]
    records = []
    for number, (lr, value, step) in enumerate(trials):
        weights = {"fc.weight": torch.randn(100, 64, generator=gen), "fc.bias": torch.zeros(100)}
        records.append(
            reg.register(
                weights,
                study="cifar100-lr",
                trial_number=number,
                trial_id=str(number + 1),
                framework="optuna",
                params={"lr": lr, "weight_decay": 0.0005},
                metric_name="accuracy",
                metric_value=value,
                step=step,
                epoch=step // 390,
                output_signature="logits/2d/100",
                tags={"model": "resnet56"},
            )
        )
    for student, teachers, steps in ((3, (1, 2, 3), 3900), (4, (2, 3, 4), 3900), (5, (1, 2), 1950)):
        for teacher in teachers:
            reg.add_lineage("cifar100-lr", student, teacher, steps_distilled=steps, overhead=0.18)
    blob = Path(records[4].blob_uri.removeprefix("file://"))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # one byte damaged on disk
    blob.write_bytes(bytes(data))
    reg.delete(6)
    assert reg.verify().quarantined == (5,)
    reg.close()
    return db


def _columns(cursor: sqlite3.Cursor) -> str:
    """A result as ``sqlite3 -header -column`` prints it (trailing blanks dropped)."""
    header = [d[0] for d in cursor.description]
    rows = [
        ["" if v is None else repr(v) if isinstance(v, float) else str(v) for v in r]
        for r in cursor.fetchall()
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def test_readme_sql_queries_print_what_the_readme_shows(tmp_path: Path) -> None:
    blocks = re.findall(r"```sql\n(.*?)```\n```text\n(.*?)```", README, flags=re.DOTALL)
    assert len(blocks) == 3
    with contextlib.closing(sqlite3.connect(_readme_registry(tmp_path))) as conn:
        for query, shown in blocks:
            got = _columns(conn.execute(query))
            assert got == "\n".join(line.rstrip() for line in shown.strip("\n").splitlines())
