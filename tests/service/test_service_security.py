"""Security: no password or token in any response; writes need the token; binds and hosts.

The passwords hold ``@``, ``/`` and a space (written percent-encoded, as URLs must carry
them); no response shows them in any form: as written, decoded, or JSON-escaped.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from _service_data import DemoLike
from _service_helpers import TOKEN, Served
from starlette.testclient import TestClient

from recycler.service import Access, AccessError, ServeOptions, Service, create_app, is_loopback
from storage import FsspecBlobStore, Registry, Status

PASSWORD = "p@ss/w rd s3cr3t"
ENCODED = urllib.parse.quote(PASSWORD, safe="")
FORMS = (PASSWORD, ENCODED, urllib.parse.quote_plus(PASSWORD), "s3cr3t")
PG_URL = f"postgresql+psycopg://alice:{ENCODED}@127.0.0.1:1/registry?connect_timeout=2"
BLOBS = f"memory://alice:{ENCODED}@bucket/teachers"

GETS = [
    "/",
    "/static/main.js",
    "/favicon.ico",
    "/api/openapi.json",
    "/api/info",
    "/api/studies",
    "/api/teachers",
    "/api/teachers?status=all",
    "/api/teachers/1",
    "/api/teachers/2",
    "/api/lineage?study=s",
    "/api/trials?study=s",
    "/api/curve?study=s",
    "/api/compare?plain=s&recycled=s",
    "/api/nowhere",
]


def _said(response: httpx.Response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{response.status_code}\n{headers}\n{response.text}"


def _assert_secret_free(served_url: str, token: str | None = None) -> list[int]:
    statuses = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=served_url, timeout=30.0, headers=headers) as c:
        responses = [c.get(path) for path in GETS]
        responses += [c.post("/api/teachers/1/delete"), c.post("/api/teachers/1/restore")]
        responses += [c.post("/api/teachers/1/delete", headers={"Authorization": "Bearer x"})]
    for r in responses:
        said = _said(r)
        for form in FORMS:
            assert form not in said, (r.request.url, form)
        assert TOKEN not in said, r.request.url
        assert r.status_code < 500 or r.status_code == 503, said[:500]
        assert "Traceback" not in said
        statuses.append(r.status_code)
    return statuses


@pytest.fixture
def unreachable() -> Iterator[str]:
    service = Service(ServeOptions(PG_URL, BLOBS, port=0, token=TOKEN))
    assert PASSWORD not in repr(service.options) and TOKEN not in repr(service.access)
    with service.running() as url:
        yield url


def test_no_password_when_the_database_is_unreachable(unreachable: str) -> None:
    statuses = _assert_secret_free(unreachable, TOKEN)
    assert 503 in statuses  # the registry's calls fail, saying so
    with httpx.Client(base_url=unreachable, timeout=30.0) as c:
        info = c.get("/api/info").json()
        failed = c.get("/api/studies").json()
    assert info["registry"].startswith("postgresql+psycopg://alice:***@127.0.0.1:1/")
    assert info["blobs"] == "memory://alice:***@bucket/teachers"
    assert "unavailable" in failed["detail"] and "127.0.0.1" in failed["detail"]


@pytest.fixture
def credentialed_blobs(tmp_path: Path) -> Iterator[str]:
    """A working SQLite registry whose blob URIs carry the store's credentials."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    reg = Registry(url, FsspecBlobStore(BLOBS))
    for n in range(2):
        reg.register({"w": torch.full((2,), float(n))}, study="s", trial_number=n, metric_value=n)
    reg.add_lineage("s", 1, 1, steps_distilled=3)
    reg.quarantine(2, f"blob missing: {BLOBS}/x")
    assert ENCODED in str(reg.get(2).reason)  # the secret is in the data the API shows
    service = Service(ServeOptions(url, BLOBS, port=0, token=TOKEN))
    with service.running() as served_url:
        yield served_url
    reg.close()


def test_no_password_from_a_working_registry(credentialed_blobs: str) -> None:
    statuses = _assert_secret_free(credentialed_blobs, TOKEN)
    assert statuses.count(200) >= 8
    with httpx.Client(base_url=credentialed_blobs, timeout=30.0) as c:
        teacher = c.get("/api/teachers/1").json()["teacher"]
        other = c.get("/api/teachers/2").json()["teacher"]
    assert teacher["blob_uri"].startswith("memory://alice:***@bucket/teachers/")
    assert other["reason"].startswith("blob missing: memory://alice:***@")


def test_writes_need_the_token(writable: Served) -> None:
    tid = writable.data.ids["r0"]
    with writable.client() as c:
        assert c.get("/api/info").json()["writes_enabled"] is True
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
        ):
            refused = c.post(f"/api/teachers/{tid}/delete", headers=headers)
            assert refused.status_code == 401 and "token" in refused.json()["detail"]
            assert refused.headers["www-authenticate"] == "Bearer"
    assert writable.registry.get(tid).status is Status.READY
    quarantined = writable.data.ids["lr1"]  # its blob is intact
    with writable.client() as c:
        refused = c.post(f"/api/teachers/{quarantined}/restore")
    assert refused.status_code == 401
    assert writable.registry.get(quarantined).status is Status.QUARANTINED
    with writable.client(TOKEN) as c:
        done = c.post(f"/api/teachers/{tid}/delete")
        missing = c.post("/api/teachers/999999/delete")
        not_quarantined = c.post(f"/api/teachers/{tid}/restore")
        restored = c.post(f"/api/teachers/{quarantined}/restore")
    assert done.status_code == 200 and done.json()["status"] == "DELETED"
    assert TOKEN not in done.text
    assert writable.registry.get(tid).status is Status.DELETED
    assert missing.status_code == 404
    assert not_quarantined.status_code == 409, not_quarantined.text  # only QUARANTINED ones
    assert "QUARANTINED" in not_quarantined.json()["detail"]
    assert restored.status_code == 200 and restored.json()["status"] == "READY"
    assert writable.registry.get(quarantined).status is Status.READY


def test_read_only_server_refuses_every_write(served: Served) -> None:
    tid = served.data.ids["r1"]
    with served.client(TOKEN) as c:
        response = c.post(f"/api/teachers/{tid}/delete")
    assert response.status_code == 403 and "read-only" in response.json()["detail"]
    assert served.registry.get(tid).status is Status.READY


def test_foreign_host_header_is_refused_on_loopback(served: Served) -> None:
    with served.client() as c:
        response = c.get("/api/teachers", headers={"Host": "evil.example:8765"})
        fine = c.get("/api/info", headers={"Host": "localhost:8765"})
    assert response.status_code == 400 and "Host" in response.json()["detail"]
    assert fine.status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.7", "example.org"])
def test_non_loopback_bind_is_refused_without_a_token(host: str, demo_like: DemoLike) -> None:
    assert not is_loopback(host)
    with pytest.raises(AccessError, match="without a token"):
        Service(ServeOptions(demo_like.url, str(demo_like.blobs), host=host, port=0))
    with pytest.raises(AccessError, match="at least 16"):
        Access.create(host, token="short")
    assert Access.create(host, token=TOKEN).reads_need_token


def test_beyond_loopback_every_read_needs_the_token(demo_like: DemoLike) -> None:
    # the rules of a server bound to 0.0.0.0, exercised in-process (tests bind loopback only)
    registry = Registry(demo_like.url, demo_like.blobs, create=False)
    app = create_app(registry, Access.create("0.0.0.0", TOKEN))
    with TestClient(app) as c:
        refused = c.get("/api/teachers")
        page = c.get("/")
        allowed = c.get("/api/teachers", headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 401 and TOKEN not in refused.text
    assert page.status_code == 200  # the page itself holds no data
    assert allowed.status_code == 200 and len(allowed.json()) == len(registry.query())


def test_the_guard_masks_every_form_of_a_secret_in_bodies_and_headers() -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from recycler.service._guard import Guard

    def leak(_: object) -> JSONResponse:
        body = {"raw": PASSWORD, "encoded": ENCODED, "token": TOKEN, "quote": 'a"b\\c-secret'}
        return JSONResponse(body, headers={"x-leak": ENCODED})

    inner = Starlette(routes=[Route("/", leak)])
    access = Access.create("127.0.0.1", TOKEN, (PG_URL, 'memory://u:a"b\\c-secret@x'))
    with TestClient(Guard(inner, access), base_url="http://127.0.0.1") as c:
        response = c.get("/")
    said = _said(response)
    for secret in (*FORMS, TOKEN, 'a\\"b\\\\c-secret', 'a"b\\c-secret'):
        assert secret not in said, secret
    assert response.json() == {"raw": "***", "encoded": "***", "token": "***", "quote": "***"}
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["x-content-type-options"] == "nosniff"
