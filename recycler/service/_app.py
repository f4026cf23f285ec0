"""The ASGI app: the JSON API (``/api/...``, schema at ``/api/openapi.json``) and the page (``/``).

Routes are synchronous functions (FastAPI runs them in its thread pool: the registry's calls
block). Every error is JSON ``{"detail": ...}`` with a 4xx status, except a registry that
cannot be reached (503); no traceback is ever sent. FastAPI's own docs pages are off: they
load their scripts from a CDN.

Example:
    >>> app = create_app(Registry("sqlite:///r.db", "blobs", create=False),
    ...                  Access.create("127.0.0.1"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles

from .._storage import (
    ORDER_FIELDS,
    ConfigurationError,
    ConflictError,
    Registry,
    RegistryUnavailableError,
    SchemaError,
    Status,
    StorageError,
    TeacherNotFoundError,
    TeacherQuery,
    scrub,
)
from ._guard import ASGIApp, Guard
from ._optuna import OptunaReader
from ._schemas import (
    CompareOut,
    CurveOut,
    ErrorOut,
    InfoOut,
    LineageOut,
    StudyOut,
    TeacherDetailOut,
    TeacherOut,
    TrialOut,
)
from ._security import Access
from ._version import VERSION
from ._views import Views

_log = logging.getLogger("recycler.service")
_MAX_ID = 2**63 - 1
_MAX_TRIAL = 2**31 - 1
_MAX_ROWS = 100_000
_STATUSES = "|".join([*(s.value for s in Status), "all"])
_ORDER = "|".join(ORDER_FIELDS)

Name = Annotated[str, Query(min_length=1, max_length=512, description="a study name")]
OptionalName = Annotated[
    str | None, Query(min_length=1, max_length=512, description="only this study")
]
TeacherId = Annotated[int, Path(ge=1, le=_MAX_ID, description="the teacher's id")]
_BEARER = HTTPBearer(auto_error=False, description="the token the server was started with")
Credentials = Annotated[Any, Depends(_BEARER)]  # shows the scheme in the OpenAPI schema
_E = {"model": ErrorOut}
_READ_ERRORS: dict[int | str, dict[str, Any]] = {400: _E, 401: _E, 404: _E, 422: _E, 503: _E}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {**_READ_ERRORS, 403: _E, 409: _E}


def _static(name: str) -> Response:
    data = (resources.files(__package__) / "static" / name).read_bytes()
    kind = {"html": "text/html; charset=utf-8", "svg": "image/svg+xml"}[name.rpartition(".")[2]]
    return Response(data, media_type=kind)


def _no_nul(*values: str | None) -> None:
    if any(v is not None and "\x00" in v for v in values):
        raise HTTPException(422, "a study name cannot contain NUL")


def create_app(
    registry: Registry,
    access: Access,
    *,
    optuna: OptunaReader | None = None,
    blobs: str = "",
) -> ASGIApp:
    """The service's ASGI app over ``registry`` (and ``optuna``'s studies), guarded."""
    views = Views(registry, optuna, blobs)
    urls = (registry.url, blobs)
    app = FastAPI(
        title="recycler registry",
        version=VERSION,
        description="Teachers, lineage and sweeps of a recycler teacher registry (read-only "
        "unless the server has a token; delete and restore need it).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )

    def read_access(request: Request, _: Credentials = None) -> None:
        if not access.allows_read(request.headers.get("authorization")):
            raise HTTPException(
                401,
                "this server is not on loopback: every call needs its token "
                "(Authorization: Bearer TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def write_access(request: Request, _: Credentials = None) -> None:
        if not access.writes_enabled:
            raise HTTPException(
                403,
                "this server is read-only: restart recycler serve with a token "
                "(RECYCLER_SERVE_TOKEN or --token-file) to delete or restore teachers",
            )
        if not access.allows_write(request.headers.get("authorization")):
            raise HTTPException(
                401,
                "deleting and restoring need the server's token (Authorization: Bearer TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    reads = [Depends(read_access)]
    writes = [Depends(read_access), Depends(write_access)]

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": scrub(str(exc.detail), *urls)}, exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(problems) or "invalid request"}, 422)

    @app.exception_handler(StorageError)
    async def storage_error(_: Request, exc: StorageError) -> JSONResponse:
        message = scrub(str(exc), *urls)
        if isinstance(exc, TeacherNotFoundError):
            return JSONResponse({"detail": message}, 404)
        if isinstance(exc, ConflictError):
            return JSONResponse({"detail": message}, 409)
        _log.warning("registry error: %s", message)
        return JSONResponse({"detail": f"the registry is unavailable: {message}"}, 503)

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": scrub(str(exc), *urls)}, 400)

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> JSONResponse:
        _log.error("internal error: %s", scrub(f"{type(exc).__name__}: {exc}", *urls))
        return JSONResponse({"detail": "internal error (see the server's log)"}, 500)

    # -- the page ------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return _static("index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return _static("favicon.svg")

    app.mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static")

    # -- the API -------------------------------------------------------------------------

    @app.get("/api/info", response_model=InfoOut, dependencies=reads, responses=_READ_ERRORS)
    def info() -> dict[str, Any]:
        """What this server serves and its access rules."""
        return views.info(
            writes_enabled=access.writes_enabled, reads_need_token=access.reads_need_token
        )

    @app.get(
        "/api/studies", response_model=list[StudyOut], dependencies=reads, responses=_READ_ERRORS
    )
    def studies() -> list[dict[str, Any]]:
        """Every study of the registry (and of Optuna, when it shares the database)."""
        return views.studies()

    @app.get(
        "/api/teachers",
        response_model=list[TeacherOut],
        dependencies=reads,
        responses=_READ_ERRORS,
    )
    def teachers(
        study: OptionalName = None,
        status: Annotated[str, Query(pattern=f"^({_STATUSES})$")] = Status.READY.value,
        state: Annotated[
            str | None, Query(min_length=1, max_length=32, description="trial state")
        ] = None,
        final: bool | None = None,
        top: Annotated[int | None, Query(ge=1, le=_MAX_ROWS, description="the k best")] = None,
        order_by: Annotated[str, Query(pattern=f"^({_ORDER})$")] = "id",
        descending: bool = False,
        limit: Annotated[int | None, Query(ge=1, le=_MAX_ROWS)] = None,
    ) -> list[dict[str, Any]]:
        """Teachers, READY by default: the CLI's filters (study, status, top-k) and more."""
        _no_nul(study, state)
        query = TeacherQuery(
            study=study,
            status=None if status == "all" else Status(status),
            trial_states=None if state is None else [state],
            final=final,
            top_k=top,
            order_by=order_by,
            descending=descending,
            limit=limit,
        )
        return views.teachers(query)

    @app.get(
        "/api/teachers/{teacher_id}",
        response_model=TeacherDetailOut,
        dependencies=reads,
        responses=_READ_ERRORS,
    )
    def teacher(teacher_id: TeacherId) -> dict[str, Any]:
        """One teacher in any status, the trials it taught and what its own trial learned."""
        return views.teacher(teacher_id)

    @app.post(
        "/api/teachers/{teacher_id}/delete",
        response_model=TeacherOut,
        dependencies=writes,
        responses=_WRITE_ERRORS,
    )
    def delete(teacher_id: TeacherId) -> dict[str, Any]:
        """Mark a teacher DELETED (needs the token); ``teachers gc`` removes its blob later."""
        return views.delete(teacher_id)

    @app.post(
        "/api/teachers/{teacher_id}/restore",
        response_model=TeacherOut,
        dependencies=writes,
        responses=_WRITE_ERRORS,
    )
    def restore(teacher_id: TeacherId) -> dict[str, Any]:
        """Bring a QUARANTINED teacher back once its blob verifies again (needs the token)."""
        try:
            return views.restore(teacher_id)
        except (TeacherNotFoundError, RegistryUnavailableError, SchemaError, ConfigurationError):
            raise
        except StorageError as exc:  # not QUARANTINED, or its blob still fails: stays as it is
            raise HTTPException(409, str(exc)) from None

    @app.get("/api/lineage", response_model=LineageOut, dependencies=reads, responses=_READ_ERRORS)
    def lineage(
        study: Name,
        trial: Annotated[int | None, Query(ge=0, le=_MAX_TRIAL, description="one trial")] = None,
    ) -> dict[str, Any]:
        """The lineage of a study (or of one trial) as a graph: trials, "taught" edges."""
        _no_nul(study)
        return views.lineage(study, trial)

    @app.get(
        "/api/trials", response_model=list[TrialOut], dependencies=reads, responses=_READ_ERRORS
    )
    def trials(study: Name) -> list[dict[str, Any]]:
        """The Optuna trials of a study in the registry's database, intermediate values too."""
        _no_nul(study)
        found = views.trials(study)
        if found is None:
            raise HTTPException(404, f"no Optuna study {study!r} in the registry's database")
        return found

    @app.get("/api/curve", response_model=CurveOut, dependencies=reads, responses=_READ_ERRORS)
    def curve(study: Name) -> dict[str, Any]:
        """A study's value against trial, and best so far against trial-seconds."""
        _no_nul(study)
        found = views.curve(study)
        if found is None:
            raise HTTPException(404, f"no trial values for study {study!r}")
        return found

    @app.get("/api/compare", response_model=CompareOut, dependencies=reads, responses=_READ_ERRORS)
    def compare(plain: Name, recycled: Name) -> dict[str, Any]:
        """A plain sweep against a recycled one: when each reached the plain sweep's best."""
        _no_nul(plain, recycled)
        found = views.compare(plain, recycled)
        if found is None:
            raise HTTPException(404, "both studies must be Optuna studies in this database")
        return found

    return Guard(app, access)
