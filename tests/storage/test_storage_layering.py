"""``storage`` stands alone: it never imports ``recycler`` nor the optional frameworks."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import storage

ROOT = Path(storage.__file__).parent
FORBIDDEN = ("recycler", "optuna", "ray", "transformers", "torchvision")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_storage_source_imports_recycler() -> None:
    sources = sorted(ROOT.rglob("*.py"))
    assert len(sources) >= 15  # the walk found the package, migrations included
    bad = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    }
    assert bad == set()


def test_importing_storage_loads_no_recycler_module() -> None:
    code = (
        "import json, sys, storage, storage.blobs, storage._rdb.schema; "
        "from storage import Registry; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout) == []
