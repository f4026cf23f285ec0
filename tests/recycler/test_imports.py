"""Optional imports go through ``recycler._imports.require``, which names the extra."""

from __future__ import annotations

import sys
import types

import pytest

from recycler._imports import require
from recycler.errors import MissingExtraError, RecyclerError


@pytest.fixture
def fake() -> types.ModuleType:
    module = types.ModuleType("recycler_fake_extra")
    module.__version__ = "2.0.9"  # type: ignore[attr-defined]
    return module


def test_require_returns_the_module(
    fake: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "recycler_fake_extra", fake)
    assert require("recycler_fake_extra", "demo") is fake
    assert require("recycler_fake_extra", "demo", minimum="1.0") is fake
    assert require("recycler_fake_extra", "demo", minimum="2.0.9rc1") is fake  # numbers only


def test_a_too_old_module_says_which_version_it_found(
    fake: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "recycler_fake_extra", fake)
    with pytest.raises(
        MissingExtraError, match=r"needs recycler_fake_extra >= 2\.10, found 2\.0\.9"
    ):
        require("recycler_fake_extra", "demo", minimum="2.10")


def test_a_missing_module_names_the_extra_to_install() -> None:
    with pytest.raises(MissingExtraError) as info:
        require("no_such_module_xyz.sub", "ray", feature="the Ray Tune integration")
    said = str(info.value)
    assert said.startswith("the Ray Tune integration needs the ray extra")
    assert said.endswith("pip install 'recycler[ray]'") and "no_such_module_xyz" in said
    assert isinstance(info.value, ImportError) and isinstance(info.value, RecyclerError)
    assert isinstance(info.value.__cause__, ImportError)


def test_a_missing_dependency_says_to_reinstall() -> None:
    with pytest.raises(MissingExtraError) as info:
        require("no_such_module_xyz", None, minimum="4.0", feature="the Optuna integration")
    said = str(info.value)
    assert said.startswith("the Optuna integration needs no_such_module_xyz >= 4.0")
    assert "pip install 'no_such_module_xyz>=4.0' (or reinstall recycler" in said


def test_the_demo_task_names_the_demo_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from recycler.demo import task

    task.load_mnist1d.cache_clear()
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # importing mnist1d now fails
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(MissingExtraError, match=r"MNIST-1D needs the demo extra.*recycler\[demo\]"):
        task.load_mnist1d(10, 10)
    task.load_mnist1d.cache_clear()
