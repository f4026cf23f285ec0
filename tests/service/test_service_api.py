"""The JSON API against a real server: what it answers equals what the registry holds.

Every count and value is read from the registry (or Optuna) in the test, never written down.
"""

from __future__ import annotations

import math

import optuna
import pytest
from _service_data import ODD, PLAIN, RECYCLED
from _service_helpers import FOREIGN_URL, STATIC, Served

from storage import Status, TeacherQuery


def _ids(rows: list[dict[str, object]]) -> list[object]:
    return [r["id"] for r in rows]


def test_info_says_read_only_loopback_and_masked_urls(served: Served) -> None:
    with served.client() as c:
        info = c.get("/api/info").json()
    assert info["writes_enabled"] is False and info["reads_need_token"] is False
    assert info["optuna"] is True
    assert info["registry"] == served.registry.url


def test_teachers_equal_the_registry(served: Served) -> None:
    reg = served.registry
    with served.client() as c:
        ready = c.get("/api/teachers").json()
        assert _ids(ready) == [r.id for r in reg.query()]
        assert all(r["status"] == "READY" for r in ready)
        every = c.get("/api/teachers", params={"status": "all"}).json()
        assert _ids(every) == [r.id for r in reg.query(status=None)]
        for status in Status:
            rows = c.get("/api/teachers", params={"status": status.value}).json()
            assert _ids(rows) == [r.id for r in reg.query(status=status)], status
        study = c.get("/api/teachers", params={"study": "demo-recycled"}).json()
        assert _ids(study) == [r.id for r in reg.query(study="demo-recycled")]
        top = c.get("/api/teachers", params={"study": "demo-recycled", "top": 2}).json()
        assert _ids(top) == [r.id for r in reg.query(study="demo-recycled", top_k=2)]
        assert [t["metric_value"] for t in top] == sorted(RECYCLED, reverse=True)[:2]
        pruned = c.get("/api/teachers", params={"state": "pruned"}).json()
        assert _ids(pruned) == [r.id for r in reg.query(trial_states=["pruned"])]
        assert len(pruned) == 1
        odd = c.get("/api/teachers", params={"study": ODD}).json()
        assert [t["study"] for t in odd] == [ODD]
        desc = c.get("/api/teachers", params={"order_by": "metric", "descending": True}).json()
        assert _ids(desc) == [r.id for r in reg.query(order_by="metric", descending=True)]


def test_one_teacher_every_field(served: Served) -> None:
    reg = served.registry
    tid = served.data.ids["r2"]
    rec = reg.get(tid)
    with served.client() as c:
        detail = c.get(f"/api/teachers/{tid}").json()
    t = detail["teacher"]
    assert (t["study"], t["trial_number"], t["metric_value"]) == (
        rec.study,
        rec.trial_number,
        rec.metric_value,
    )
    assert (t["sha256"], t["size_bytes"], t["status"], t["params"], t["tags"]) == (
        rec.sha256,
        rec.size_bytes,
        rec.status.value,
        dict(rec.params),
        dict(rec.tags),
    )
    assert [(r["study"], r["trial_number"]) for r in detail["taught"]] == [
        (r.study, r.trial_number) for r in reg.taught(tid)
    ]
    assert [r["teacher_id"] for r in detail["learned_from"]] == [
        r.teacher_id for r in reg.lineage(rec.study, rec.trial_number)
    ]


def test_studies_equal_the_registry_and_optuna(served: Served, demo_like: object) -> None:
    reg = served.registry
    with served.client() as c:
        studies = {s["study"]: s for s in c.get("/api/studies").json()}
    summaries = {s.study: s for s in reg.studies()}
    assert set(studies) == set(summaries) | {"demo-plain"}  # plain: an Optuna study only
    for name, s in summaries.items():
        got = studies[name]
        assert got["ready"] == len(reg.query(study=name)) == s.teachers["READY"]
        assert got["teachers"] == dict(s.teachers)
        assert got["lineage_rows"] == len(reg.lineage(name))
    assert studies["demo-recycled"]["best_value"] == max(RECYCLED)
    assert studies["bert-mlm"]["best_value"] == pytest.approx(2.31)
    assert studies["bert-mlm"]["direction"] == "minimize"
    plain = studies["demo-plain"]
    assert plain["ready"] == 0 and plain["optuna"]["trials"] == len(PLAIN)
    assert plain["optuna"]["best_value"] == max(PLAIN)
    rec = studies["demo-recycled"]
    assert rec["paired_with"] == "demo-plain" and plain["paired_with"] == "demo-recycled"
    storage = optuna.storages.RDBStorage(served.data.url, skip_table_creation=True)
    try:
        trials = optuna.load_study(study_name="demo-recycled", storage=storage).trials
    finally:
        storage.engine.dispose()
    forward = sum(t.user_attrs["recycler"]["teacher_forward_s"] for t in trials)
    assert rec["optuna"]["teacher_forward_s"] == pytest.approx(forward)
    assert rec["optuna"]["kd_trials"] == sum(1 for t in trials if t.user_attrs["recycler"]["kd"])
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    assert rec["optuna"]["trial_seconds"] == pytest.approx(seconds)
    assert rec["time_saved_s"] is not None and rec["speedup"] is not None


def test_lineage_graph_equals_the_registry(served: Served) -> None:
    reg = served.registry
    for study in ("demo-recycled", "lr-sweep"):
        rows = reg.lineage(study)
        with served.client() as c:
            graph = c.get("/api/lineage", params={"study": study}).json()
        teachers = {r.teacher_id: reg.get(r.teacher_id) for r in rows}
        pairs = {
            (
                f"{teachers[r.teacher_id].trial_number}@{teachers[r.teacher_id].study}",
                f"{r.trial_number}@{r.study}",
            )
            for r in rows
        }
        nodes = {n for pair in pairs for n in pair}
        assert {n["id"] for n in graph["nodes"]} == nodes
        assert {(e["source"], e["target"]) for e in graph["edges"]} == pairs
        assert len(graph["rows"]) == len(rows)
        assert sum(e["steps"] for e in graph["edges"]) == sum(r.steps_distilled for r in rows)
    cross = [n for n in graph["nodes"] if not n["in_study"]]
    assert [n["study"] for n in cross] == ["demo-recycled"]
    # lr-sweep: trial 2 started from trial 0's weights and distilled from it; trial 3 only started
    kinds = {
        (e["source"], e["target"]): (e["kinds"], e["steps"], e["overhead"]) for e in graph["edges"]
    }
    assert kinds == {
        ("0@lr-sweep", "2@lr-sweep"): (["init", "kd"], 30, 0.1),
        ("4@demo-recycled", "2@lr-sweep"): (["kd"], 50, 0.1),
        ("0@lr-sweep", "3@lr-sweep"): (["init"], 0, None),
    }
    assert [r["kind"] for r in graph["rows"]] == [r.kind for r in reg.lineage("lr-sweep")]
    assert sorted(r["kind"] for r in graph["rows"]) == ["init", "init", "kd", "kd"]
    with served.client() as c:
        one = c.get("/api/lineage", params={"study": "demo-recycled", "trial": 3}).json()
        none = c.get("/api/lineage", params={"study": "no such study"}).json()
    assert len(one["rows"]) == len(reg.lineage("demo-recycled", 3)) == 3
    assert none["nodes"] == [] and none["edges"] == []


def test_trials_curve_and_compare_from_optuna(served: Served) -> None:
    with served.client() as c:
        trials = c.get("/api/trials", params={"study": "demo-recycled"}).json()
        curve = c.get("/api/curve", params={"study": "demo-plain"}).json()
        cmp = c.get("/api/compare", params={"plain": "demo-plain", "recycled": "demo-recycled"})
        registry_only = c.get("/api/curve", params={"study": "lr-sweep"}).json()
    assert [t["value"] for t in trials] == RECYCLED
    assert all(len(t["intermediate"]) == 10 and t["recycler"]["study"] for t in trials)
    assert trials[-1]["intermediate"][-1] == [9, RECYCLED[-1]]
    assert curve["source"] == "optuna" and curve["wall_clock"] is True
    assert [t["value"] for t in curve["trials"]] == PLAIN
    best = [v for _, v in curve["best_by_trial"]]
    assert best == [max(PLAIN[: i + 1]) for i in range(len(PLAIN))]
    times = [t for t, _ in curve["best_by_time"]]
    assert times == sorted(times) and curve["trials"][-1]["end_s"] == pytest.approx(max(times))
    body = cmp.json()
    assert body["target"] == max(PLAIN)
    assert body["plain_s"] is not None and body["recycled_s"] is not None
    assert body["time_saved_s"] == pytest.approx(body["plain_s"] - body["recycled_s"])
    assert math.isclose(body["speedup"], body["plain_s"] / body["recycled_s"], rel_tol=1e-4)
    assert registry_only["source"] == "registry" and registry_only["wall_clock"] is False
    finals = served.registry.query(TeacherQuery(study="lr-sweep", final=True))
    assert sorted(t["number"] for t in registry_only["trials"]) == sorted(
        {r.trial_number for r in finals}
    )


BAD = [
    ("/api/teachers", {"status": "ready-ish"}),
    ("/api/teachers", {"top": "0"}),
    ("/api/teachers", {"top": "many"}),
    ("/api/teachers", {"top": str(10**30)}),
    ("/api/teachers", {"limit": "-1"}),
    ("/api/teachers", {"order_by": "password"}),
    ("/api/teachers", {"order_by": "id; DROP TABLE recycler_teachers"}),
    ("/api/teachers", {"final": "maybe"}),
    ("/api/teachers", {"study": ""}),
    ("/api/teachers", {"study": "x" * 600}),
    ("/api/teachers", {"study": "a\x00b"}),
    ("/api/teachers/0", {}),
    ("/api/teachers/-3", {}),
    ("/api/teachers/abc", {}),
    ("/api/teachers/" + "9" * 40, {}),
    ("/api/teachers/999999", {}),
    ("/api/lineage", {}),
    ("/api/lineage", {"study": "demo-recycled", "trial": "-1"}),
    ("/api/lineage", {"study": "demo-recycled", "trial": str(2**40)}),
    ("/api/trials", {"study": "lr-sweep"}),
    ("/api/trials", {}),
    ("/api/curve", {"study": "no such study"}),
    ("/api/compare", {"plain": "demo-plain"}),
    ("/api/compare", {"plain": "demo-plain", "recycled": "lr-sweep"}),
    ("/api/nothing-here", {}),
]


@pytest.mark.parametrize(("path", "params"), BAD, ids=[f"{p} {q}"[:60] for p, q in BAD])
def test_bad_parameters_answer_4xx_json(served: Served, path: str, params: dict[str, str]) -> None:
    with served.client() as c:
        response = c.get(path, params=params)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_wrong_methods_and_writes_answer_4xx_json(served: Served) -> None:
    with served.client() as c:
        for method, path in [
            ("POST", "/api/teachers"),
            ("DELETE", "/api/teachers/1"),
            ("GET", "/api/teachers/1/delete"),
            ("POST", "/api/teachers/1/delete"),
        ]:
            response = c.request(method, path)
            assert 400 <= response.status_code < 500, (method, path, response.text)
            assert isinstance(response.json()["detail"], str)


def test_openapi_schema_and_page(served: Served) -> None:
    with served.client() as c:
        schema = c.get("/api/openapi.json").json()
        page = c.get("/")
        script = c.get("/static/main.js")
        missing = c.get("/static/nope.js")
        docs = c.get("/docs")
    assert schema["openapi"].startswith("3.")
    assert {"/api/teachers", "/api/studies", "/api/lineage", "/api/curve"} <= set(schema["paths"])
    assert all(p.startswith("/api/") for p in schema["paths"])
    assert page.status_code == 200 and "recycler registry" in page.text
    for asset in sorted(STATIC.iterdir()):  # nothing is fetched from elsewhere
        assert FOREIGN_URL.search(asset.read_text()) is None, asset.name
        assert c_get_ok(served, f"/static/{asset.name}"), asset.name
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert missing.status_code == 404 and docs.status_code == 404  # no CDN-backed docs page
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp


def c_get_ok(served: Served, path: str) -> bool:
    with served.client() as c:
        return c.get(path).status_code == 200
