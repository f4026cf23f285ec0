"""recycler's arrows go one way (DESIGN.md, "Shape of the code"), read from the source's AST.

``cli → {integrations, service, demo} → distiller → {teachers, sampling, schedule, losses,
config, time} → storage``; ``teachers → fused``; ``fused`` imports only torch; nothing outside
``storage/`` imports sqlalchemy; core modules never import an optional framework when they
are imported; recycler reaches ``storage`` only through ``recycler/_storage.py``.

The allowed imports are data (:data:`ALLOWED`, taken from the code as it is): a new arrow is
one line here, and :func:`test_the_map_follows_the_design` checks that the line points down
the design's layers.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import recycler

ROOT = Path(recycler.__file__).resolve().parent
REPO = ROOT.parent

#: The design's layers, top first. A group is a package folder or a single module of
#: recycler (``recycler`` itself: the facade ``recycler/__init__.py``). Arrows point down.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("recycler",),  # the public API's re-exports; only the CLI imports it (for __version__)
    ("integrations", "service", "demo"),
    ("distiller",),
    ("teachers", "sampling", "schedule", "losses", "config", "time"),
    ("_names",),  # the registries of names (losses, pool policies), torch-free for config
    ("fused",),
    ("_storage",),  # the one door to the storage package
    ("_imports",),
    ("errors",),
)

#: Private modules that are a piece of one group (they would sit in its folder were it one).
PARTS: dict[str, str] = {"_config_checks": "config", "_config_yaml": "config"}

#: Imported by any group but ``fused``: the error hierarchy and the optional-import helper.
UTILITIES = frozenset({"errors", "_imports"})

#: What each group imports of the other groups (besides UTILITIES), as the code does now.
ALLOWED: dict[str, frozenset[str]] = {
    "cli": frozenset({"recycler", "demo", "service", "_storage"}),
    "recycler": frozenset(
        {"distiller", "teachers", "sampling", "schedule", "losses", "config", "time", "_storage"}
    ),
    "integrations": frozenset({"distiller", "teachers", "config", "time", "_storage"}),
    "service": frozenset({"_storage"}),  # "storage only, no torch"
    "demo": frozenset({"integrations", "distiller", "config", "_storage"}),
    "distiller": frozenset(
        {"teachers", "sampling", "schedule", "losses", "config", "time", "_storage"}
    ),
    "teachers": frozenset({"fused", "_storage"}),
    "sampling": frozenset({"_names", "_storage"}),
    "schedule": frozenset({"time"}),
    "losses": frozenset({"_names", "fused"}),
    "config": frozenset({"_names", "schedule", "time", "_storage"}),
    "time": frozenset(),
    "_names": frozenset(),
    "fused": frozenset(),  # fused imports only torch
    "_storage": frozenset(),
    "_imports": frozenset(),
    "errors": frozenset(),
}

#: Arrows inside one layer (the layer's members are otherwise peers).
SIDEWAYS = frozenset(
    {
        ("demo", "integrations"),  # the demo's sweep runs the Optuna adapter
        ("config", "schedule"),  # a config holds a parsed schedule
        ("config", "time"),
        ("schedule", "time"),
    }
)

#: Imports under ``if TYPE_CHECKING:`` only (annotations), which would be cycles at run time.
TYPE_ONLY = frozenset({("_names", "losses"), ("_names", "sampling")})

#: Optional frameworks (extras): only the adapters (integrations, cli, demo) import them
#: when they are imported; elsewhere only inside a function, through ``recycler._imports``.
FRAMEWORKS = frozenset({"optuna", "ray", "transformers", "torchvision"})
NOT_CORE = frozenset({"integrations", "cli", "demo"})


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is, and when it runs."""

    path: Path
    line: int
    target: str  # absolute module name (``from x import y``: ``x.y`` when y is a module)
    top_level: bool  # runs when the module is imported (not inside a function)
    type_only: bool  # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def _module_name(path: Path) -> str:
    parts = ("recycler", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        assert node.module is not None
        return [node.module]
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    if node.module is not None:
        return [".".join([*base, node.module])]
    return [".".join([*base, alias.name]) for alias in node.names]  # from . import a, b


def _walk(node: ast.AST, path: Path, top: bool, type_only: bool) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _targets(child, path):
                yield Import(path, child.lineno, target, top, type_only)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, path, False, type_only)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), path, top, True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), path, top, type_only)
        else:
            yield from _walk(child, path, top, type_only)


def imports_of(path: Path) -> list[Import]:
    """Every import statement of a source file."""
    return list(_walk(ast.parse(path.read_text(), filename=str(path)), path, True, False))


def group_of_file(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    if len(parts) > 1:
        return parts[0]
    name = "recycler" if parts[0] == "__init__.py" else parts[0].removesuffix(".py")
    return PARTS.get(name, name)


def group_of_module(name: str) -> str | None:
    """The group of an absolute module name inside recycler; None outside recycler."""
    parts = name.split(".")
    if parts[0] != "recycler":
        return None
    if len(parts) > 1 and ((ROOT / f"{parts[1]}.py").is_file() or (ROOT / parts[1]).is_dir()):
        return PARTS.get(parts[1], parts[1])
    return "recycler"  # the package itself, or a name it defines (__version__)


SOURCES = sorted(ROOT.rglob("*.py"))
IMPORTS = [imp for path in SOURCES for imp in imports_of(path)]


def _fail(problems: list[str], rule: str) -> None:
    assert not problems, f"{rule}:\n  " + "\n  ".join(sorted(problems))


def test_the_walk_finds_the_package() -> None:
    assert len(SOURCES) >= 40 and len(IMPORTS) >= 200
    assert {group_of_file(p) for p in SOURCES} <= set(ALLOWED), (
        "a new recycler package or module: give it a layer in LAYERS and its imports in ALLOWED"
    )


def test_the_map_follows_the_design() -> None:
    rank = {group: depth for depth, layer in enumerate(LAYERS) for group in layer}
    assert set(rank) == set(ALLOWED)
    upward = [
        f"{src} -> {dst}"
        for src, targets in ALLOWED.items()
        for dst in targets
        if not (rank[dst] > rank[src] or (src, dst) in SIDEWAYS)
    ]
    _fail(upward, "ALLOWED has arrows that do not point down DESIGN.md's layers")
    assert all(rank[a] == rank[b] for a, b in SIDEWAYS)
    # sideways arrows must not close a cycle
    order: list[str] = []
    seen: set[str] = set()

    def visit(group: str, path: tuple[str, ...]) -> None:
        assert group not in path, f"import cycle in ALLOWED: {' -> '.join((*path, group))}"
        if group not in seen:
            for dst in sorted(ALLOWED[group]):
                visit(dst, (*path, group))
            seen.add(group)
            order.append(group)

    for group in ALLOWED:
        visit(group, ())


def test_each_module_imports_only_what_the_map_allows() -> None:
    problems = []
    for imp in IMPORTS:
        src, dst = group_of_file(imp.path), group_of_module(imp.target)
        if dst is None or dst == src:
            continue
        allowed = ALLOWED.get(src, frozenset()) | (UTILITIES if src != "fused" else frozenset())
        if imp.type_only:
            allowed |= {b for a, b in TYPE_ONLY if a == src}
        if dst not in allowed:
            problems.append(
                f"{imp.where()} imports {imp.target}: {src} -> {dst} is not an arrow of the "
                f"design ({src} may import {sorted(allowed) or 'nothing of recycler'})"
            )
    _fail(problems, "imports against DESIGN.md's arrows (a right new arrow: add it to ALLOWED)")


def test_fused_imports_only_torch() -> None:
    problems = []
    for imp in IMPORTS:
        if group_of_file(imp.path) != "fused":
            continue
        top = imp.target.split(".")[0]
        inside = imp.target == "recycler.fused" or imp.target.startswith("recycler.fused.")
        if not (inside or top == "torch" or top in sys.stdlib_module_names):
            problems.append(f"{imp.where()} imports {imp.target}")
    _fail(problems, "fused imports only torch and the standard library")


def test_nothing_outside_storage_imports_sqlalchemy() -> None:
    problems = [
        f"{imp.where()} imports {imp.target}: ask storage instead (storage.sqlite_file, "
        "storage.scrub, StorageError, ... through recycler._storage)"
        for imp in IMPORTS
        if imp.target.split(".")[0] in ("sqlalchemy", "alembic")
    ]
    _fail(problems, "only storage/ imports sqlalchemy and alembic")


def test_core_modules_import_no_framework_when_imported() -> None:
    problems = [
        f"{imp.where()} imports {imp.target} at module level: import it inside the function "
        "that needs it, through recycler._imports.require (or under TYPE_CHECKING)"
        for imp in IMPORTS
        if imp.top_level
        and not imp.type_only
        and group_of_file(imp.path) not in NOT_CORE
        and imp.target.split(".")[0] in FRAMEWORKS
    ]
    _fail(problems, "core modules never import optuna, ray, transformers or torchvision")


def test_recycler_reaches_storage_only_through_recycler_storage() -> None:
    door = ROOT / "_storage.py"
    problems = [
        f"{imp.where()} imports {imp.target}: import it from recycler._storage (relative: "
        "`from .._storage import ...`), which survives a user's own `storage` module"
        for imp in IMPORTS
        if imp.path != door
        and (imp.target.split(".")[0] == "storage" or imp.target.startswith("recycler._storage_"))
    ]
    _fail(problems, "recycler imports the registry only through recycler/_storage.py")


def test_importing_the_core_loads_no_framework() -> None:
    """The AST checks above, at run time: the core's transitive imports stay framework-free."""
    core = sorted(
        _module_name(path)
        for path in SOURCES
        if group_of_file(path) not in NOT_CORE and not path.name.startswith("__main__")
    )
    frameworks = sorted(FRAMEWORKS)
    code = (
        "import importlib, json, sys\n"
        f"for name in {core!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {frameworks!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == [], f"importing {core} loaded {out.stdout}"
