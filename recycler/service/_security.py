"""Who may reach the service and what it may say: bind rules, the token, secrets kept out.

The rules, in one place:

- The service binds a loopback address (``127.0.0.1``) by default. Binding anything else
  (``0.0.0.0``, a LAN address, a host name) is refused unless a token is configured; then
  every API call, reads included, must carry it (``Authorization: Bearer TOKEN``).
- The write actions (delete, restore) need the token always, on loopback too; without a
  configured token the service is read-only.
- On loopback without a token, requests must name a loopback ``Host`` (no DNS rebinding: a web
  page elsewhere cannot point a name of its own at 127.0.0.1 and read the API).
- No secret leaves in a response: the registry's and the blob store's passwords and the token
  are replaced by ``***`` in every body and header (see ``_guard``), on top of the masked URLs
  the views show.

Example:
    >>> Access.create("127.0.0.1").reads_need_token
    False
    >>> Access.create("0.0.0.0")
    Traceback (most recent call last):
    ...
    recycler.service._security.AccessError: refusing to serve on 0.0.0.0 without a token: ...
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass, field

from .._storage import secrets_of

#: The environment variable holding the token (safer than a command-line argument).
TOKEN_ENV = "RECYCLER_SERVE_TOKEN"
MIN_TOKEN_LENGTH = 16
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
_MIN_SECRET = 4  # shorter strings are too common to mask in bodies (they would garble them)


class AccessError(ValueError):
    """A bind address or a token the rules refuse; the message says what to do.

    Example:
        >>> try:
        ...     check_token("short")
        ... except AccessError as exc:
        ...     print(str(exc)[:40])
        the token must be at least 16 printable
    """


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is a loopback one: 127.0.0.0/8, ::1, localhost.

    Example:
        >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "")]
        [True, True, True, False, False]
    """
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_token(token: str | None) -> str | None:
    """``token`` if it is usable (None: no token); refuses short or odd ones."""
    if token is None:
        return None
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or token != token.strip():
        raise AccessError(
            f"the token must be at least {MIN_TOKEN_LENGTH} printable characters without "
            "surrounding spaces: make one with `python -c 'import secrets; "
            "print(secrets.token_urlsafe())'`"
        )
    return token


@dataclass(frozen=True)
class Access:
    """The access rules of one server: where it binds, its token, the secrets it must hide.

    Example:
        >>> a = Access.create("127.0.0.1", token="x" * 20)
        >>> a.writes_enabled, a.allows_write("Bearer " + "x" * 20)
        (True, True)
    """

    host: str = "127.0.0.1"
    token: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:  # never the token
        return f"Access(host={self.host!r}, token={'***' if self.token else None})"

    @classmethod
    def create(cls, host: str, token: str | None = None, urls: tuple[str, ...] = ()) -> Access:
        """The rules for serving on ``host``; refuses a non-loopback bind without a token."""
        token = check_token(token)
        if not is_loopback(host) and token is None:
            shown = host or "all addresses"
            raise AccessError(
                f"refusing to serve on {shown} without a token: anyone who can reach it would "
                f"read the registry. Set ${TOKEN_ENV} (or --token-file) to a secret of at least "
                f"{MIN_TOKEN_LENGTH} characters, or serve on 127.0.0.1"
            )
        found = [s for url in urls for s in secrets_of(url)]
        if token is not None:
            found.append(token)
        unique = sorted({s for s in found if len(s) >= _MIN_SECRET}, key=len, reverse=True)
        return cls(host=host, token=token, secrets=tuple(unique))

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def reads_need_token(self) -> bool:
        """Beyond loopback every API call needs the token."""
        return not self.loopback

    @property
    def writes_enabled(self) -> bool:
        return self.token is not None

    def _matches(self, authorization: str | None) -> bool:
        if self.token is None or not authorization:
            return False
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def allows_read(self, authorization: str | None) -> bool:
        return not self.reads_need_token or self._matches(authorization)

    def allows_write(self, authorization: str | None) -> bool:
        return self._matches(authorization)

    def host_allowed(self, host_header: str | None) -> bool:
        """On loopback without a token: only loopback ``Host`` headers (DNS rebinding)."""
        if not self.loopback or self.token is not None:
            return True
        if not host_header:
            return False
        name = host_header.strip()
        if name.startswith("["):  # [::1]:8765
            name = name[1 : name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        return is_loopback(name)


def token_from(file: str | None) -> str | None:
    """The token from ``file`` (its first line), else ``$RECYCLER_SERVE_TOKEN``, else None."""
    if file is not None:
        try:
            with open(file, encoding="utf-8") as handle:
                text = handle.readline().strip()
        except OSError as exc:
            raise AccessError(f"cannot read the token file {file}: {exc.strerror}") from None
        if not text:
            raise AccessError(f"the token file {file} is empty")
        return text
    return os.environ.get(TOKEN_ENV) or None
