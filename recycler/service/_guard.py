"""The outermost layer of the app: Host check, security headers, and no secret in any response.

Every response passes through :class:`Guard`: its body is read whole (the API's bodies are
small JSON, the page's assets a few kilobytes), each secret the server knows (the database
and blob-store passwords, as written and decoded, and the token) is replaced by ``***``, and
``Content-Length`` is set to the new size. The views never put a secret in the first place
(URLs are shown masked); this is the net under them.

Example:
    >>> guard = Guard(app, Access.create("127.0.0.1"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._security import Access

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_MASK = b"***"
#: Sent with every response: no framing, no sniffing, no referrer, assets from here only.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        b"form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_REPLACED = {name for name, _ in SECURITY_HEADERS} | {b"content-length", b"server"}


def forms_of(secret: str) -> list[bytes]:
    """The byte strings a secret may take in a response: as is, and JSON-escaped."""
    escaped = json.dumps(secret)[1:-1]
    forms = {secret.encode(), escaped.encode()}
    return sorted(forms, key=len, reverse=True)


class Guard:
    """ASGI middleware: refuse foreign ``Host`` headers, mask secrets, add security headers.

    Example:
        >>> guard = Guard(app, Access.create("127.0.0.1", token="t" * 16))  # doctest: +SKIP
        >>> guard.mask(b'{"token": "tttttttttttttttt"}')  # doctest: +SKIP
        b'{"token": "***"}'
    """

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access
        self._forms = [f for s in access.secrets for f in forms_of(s)]

    def mask(self, data: bytes) -> bytes:
        """``data`` with every form of every secret replaced by ``***``."""
        for form in self._forms:
            if form in data:
                data = data.replace(form, _MASK)
        return data

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.access.host_allowed(host):
            await _refuse(send, 400, "the Host header must name a loopback address")
            return
        start: Message | None = None
        body: list[bytes] = []
        head = scope.get("method") == "HEAD"

        async def buffered(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":  # pragma: no cover - trailers
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            assert start is not None
            data = self.mask(b"".join(body))
            given = list(start.get("headers", []))
            kept = [(k, self.mask(v)) for k, v in given if k.lower() not in _REPLACED]
            length = [(k, v) for k, v in given if k.lower() == b"content-length"]
            if not head or not length:  # HEAD: the length of the body a GET would get
                length = [(b"content-length", str(len(data)).encode())]
            kept += [*SECURITY_HEADERS, *length]
            await send({**start, "headers": kept})
            await send({"type": "http.response.body", "body": data})

        await self.app(scope, receive, buffered)


async def _refuse(send: Send, status: int, detail: str) -> None:
    data = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        *SECURITY_HEADERS,
        (b"content-length", str(len(data)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
