"""The page in a real headless Chromium (Debian's, driven by Playwright; no browser download).

The page loads with no console error and no failed request; the teachers table shows exactly
the registry's READY teachers, and its filters narrow them; the lineage graph has exactly the
lineage's nodes and edges; a screenshot is written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _service_helpers import Served

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"Debian's chromium is not installed at {CHROMIUM}: `make venv` installs it "
        "(apt-get install -y chromium); browser tests skipped",
        allow_module_level=True,
    )

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile, for this module's tests."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


class Watched:
    """A page and everything that went wrong on it."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        page.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"),
        )

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")


@pytest.fixture
def page(browser: BrowserContext, served: Served) -> Iterator[Watched]:
    tab = browser.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    watched = Watched(tab)
    tab.goto(served.url)
    tab.wait_for_selector("body[data-ready='1']")
    try:
        yield watched
    finally:
        tab.close()


def _rows(page: Page) -> list[int]:
    return [
        int(x)
        for x in page.eval_on_selector_all(
            "#teachers-table tbody tr", "rows => rows.map(r => r.dataset.id)"
        )
    ]


def _wait_rows(page: Page, count: int) -> None:
    page.wait_for_function(
        "n => !document.querySelector('#teachers-table').dataset.loading && "
        "document.querySelectorAll('#teachers-table tbody tr').length === n",
        arg=count,
    )


def test_page_loads_without_console_errors(page: Watched, served: Served, tmp_path: Path) -> None:
    p = page.page
    assert p.title() == "recycler registry"
    assert p.inner_text("#registry-url") == served.registry.url
    assert p.inner_text("#mode") == "read-only"
    studies = p.eval_on_selector_all("#studies-table tbody tr", "r => r.map(x => x.dataset.study)")
    assert studies == sorted({s.study for s in served.registry.studies()} | {"demo-plain"})
    assert p.locator("#plot-trial circle").count() > 0
    assert p.locator("#plot-time path.line").count() == 2
    assert "reached it after" in p.inner_text("#compare-summary")
    shot = tmp_path / "page.png"
    p.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert page.problems == []


def test_table_rows_are_the_ready_teachers_and_filters_narrow(
    page: Watched, served: Served
) -> None:
    p, reg = page.page, served.registry
    assert _rows(p) == [r.id for r in reg.query()]
    p.select_option("#filter-study", "lr-sweep")
    expected = [r.id for r in reg.query(study="lr-sweep")]
    _wait_rows(p, len(expected))
    assert _rows(p) == expected and 0 < len(expected) < len(reg.query())
    p.select_option("#filter-status", "all")
    expected = [r.id for r in reg.query(study="lr-sweep", status=None)]
    _wait_rows(p, len(expected))
    assert _rows(p) == expected
    p.select_option("#filter-study", "")
    p.select_option("#filter-status", "READY")
    p.select_option("#filter-state", "pruned")
    expected = [r.id for r in reg.query(trial_states=["pruned"])]
    _wait_rows(p, len(expected))
    assert _rows(p) == expected
    p.select_option("#filter-state", "")
    _wait_rows(p, len(reg.query()))
    p.fill("#filter-text", "0.0234")  # the lr of one recycled trial, in its params
    expected = [r.id for r in reg.query() if "0.0234" in str(dict(r.params))]
    _wait_rows(p, len(expected))
    assert _rows(p) == expected and len(expected) == 1
    assert page.problems == []


def test_sorting_and_detail(page: Watched, served: Served) -> None:
    p, reg = page.page, served.registry
    p.click("#teachers-table th[data-key='metric_value']")
    p.click("#teachers-table th[data-key='metric_value']")  # descending
    by_value = sorted(reg.query(), key=lambda r: (-(r.metric_value or -1e9), r.id))
    assert _rows(p) == [r.id for r in by_value]
    tid = served.data.ids["r3"]
    p.click(f"#teachers-table tbody tr[data-id='{tid}']")
    p.wait_for_selector("#detail:not([hidden])")
    assert f"Teacher {tid}:" in p.inner_text("#detail-title")
    assert p.locator("#detail-taught li").count() == len(reg.taught(tid))
    assert p.locator("#detail-learned li").count() == len(reg.lineage("demo-recycled", 3))
    assert p.locator("#detail-actions").is_hidden()  # read-only: no delete button
    odd = p.locator("#studies-table tbody tr").filter(has_text="o'neil")
    assert odd.locator("b").count() == 0  # markup in a study name is text
    assert page.problems == []


def _graph(p: Page) -> tuple[set[str], set[tuple[str, str]]]:
    nodes = p.eval_on_selector_all("#lineage-graph g.node", "n => n.map(x => x.dataset.id)")
    edges: list[Any] = p.eval_on_selector_all(
        "#lineage-graph path.edge", "e => e.map(x => [x.dataset.source, x.dataset.target])"
    )
    assert len(nodes) == len(set(nodes)) and len(edges) == len({tuple(e) for e in edges})
    return set(nodes), {(a, b) for a, b in edges}


def _expected(served: Served, study: str) -> tuple[set[str], set[tuple[str, str]]]:
    reg = served.registry
    pairs = set()
    for r in reg.lineage(study):
        t = reg.get(r.teacher_id)
        pairs.add((f"{t.trial_number}@{t.study}", f"{r.trial_number}@{r.study}"))
    return {n for pair in pairs for n in pair}, pairs


def test_lineage_graph_has_exactly_the_lineage(page: Watched, served: Served) -> None:
    p = page.page
    assert p.get_attribute("#lineage-graph", "data-study") == "demo-recycled"
    assert _graph(p) == _expected(served, "demo-recycled")
    p.select_option("#lineage-study", "lr-sweep")
    p.wait_for_function(
        "() => document.querySelector('#lineage-graph').dataset.study === 'lr-sweep'"
    )
    nodes, edges = _graph(p)
    assert (nodes, edges) == _expected(served, "lr-sweep")
    assert "0@lr-sweep" in nodes and "4@demo-recycled" in nodes  # a teacher of another study
    assert page.problems == []
