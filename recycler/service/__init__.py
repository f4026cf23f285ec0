"""``recycler serve``: the teacher registry in a browser, and a JSON API with an OpenAPI schema.

Storage only: this package reads the registry through ``recycler._storage`` (and Optuna's
tables, when they share its database, through Optuna's public API) and never imports torch.
Read-only by default; loopback by default; serving beyond loopback needs a token, and the
write actions (delete, restore) need it always (see ``_security`` for the rules). Every
asset of the page ships in ``static/``: nothing is fetched from elsewhere.

The API (``/api/openapi.json`` has the schema):

=========================================  ================================================
``GET /api/info``                          version, masked URLs, access rules
``GET /api/studies``                       studies: teachers by status, best, KD, time saved
``GET /api/teachers``                      teachers: study, status, state, final, top, order
``GET /api/teachers/{id}``                 one teacher, whom it taught, what it learned from
``GET /api/lineage?study=S[&trial=N]``     the lineage as a graph (trials, "taught" edges)
``GET /api/trials?study=S``                Optuna trials: values, durations, user attrs
``GET /api/curve?study=S``                 value by trial, best so far by trial-seconds
``GET /api/compare?plain=P&recycled=R``    when each sweep reached the plain sweep's best
``POST /api/teachers/{id}/delete``         mark DELETED (token)
``POST /api/teachers/{id}/restore``        QUARANTINED -> READY once it verifies (token)
=========================================  ================================================

Example:
    >>> from recycler.service import ServeOptions, Service
    >>> opts = ServeOptions("sqlite:///recycler.db", "./recycler-teachers", port=0)
    >>> with Service(opts).running() as url:  # doctest: +SKIP
    ...     print(url)
    http://127.0.0.1:40123/
"""

from __future__ import annotations

from ._app import create_app
from ._security import MIN_TOKEN_LENGTH, TOKEN_ENV, Access, AccessError, is_loopback, token_from
from ._server import DEFAULT_PORT, ServeOptions, Service

__all__ = [
    "DEFAULT_PORT",
    "MIN_TOKEN_LENGTH",
    "TOKEN_ENV",
    "Access",
    "AccessError",
    "ServeOptions",
    "Service",
    "create_app",
    "is_loopback",
    "token_from",
]
