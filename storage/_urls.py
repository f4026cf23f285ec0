"""Database URLs: parse them, and redact their passwords everywhere they might be shown."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ._errors import ConfigurationError

_MASK = "***"
_PASSWORD_KEYS = {"password", "pass", "pwd", "passwd"}
# the password runs to the last "@" of the authority: an unencoded "@" in it is masked too
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@")
_BARE_USERINFO = re.compile(r"(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@")
_QUERY_PW = re.compile(r"(?i)\b(password|passwd|pwd|pass)=([^&\s'\"]*)")


def redact(text: str) -> str:
    """Return ``text`` with every URL password and ``password=`` value replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
    return _QUERY_PW.sub(lambda m: f"{m[1]}={_MASK}", text)


def secrets_of(url: str) -> list[str]:
    """The password strings hidden in ``url`` (userinfo and query), to scrub from messages."""
    found: list[str] = []
    parts = urlsplit(url)
    if parts.password:
        found.append(parts.password)
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in _PASSWORD_KEYS and v]
    return found


def scrub(message: str, url: str) -> str:
    """Remove every secret of ``url`` from ``message`` (e.g. a driver's error text)."""
    for secret in secrets_of(url):
        message = message.replace(secret, _MASK)
    return redact(message)


def parse_db_url(url: str) -> URL:
    """Parse a registry URL, moving a ``?password=`` query parameter into the URL proper."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            "registry URL is empty: pass e.g. sqlite:///recycler.db or "
            "postgresql+psycopg://user@host/db"
        )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        # the driver's message repeats the URL, password included: do not chain it
        shown = _BARE_USERINFO.sub(lambda m: f"{m['user']}:{_MASK}@", display_url(url))
        raise ConfigurationError(
            f"registry URL {shown!r} is not a database URL: use e.g. "
            "sqlite:///recycler.db or postgresql+psycopg://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"registry URL {display_url(url)!r} names backend {backend!r}; recycler supports "
            "sqlite and postgresql (postgresql+psycopg://...)"
        )
    query = dict(parsed.query)
    pw = next((query.pop(k) for k in list(query) if k.lower() in _PASSWORD_KEYS), None)
    if pw is not None:
        parsed = parsed.set(password=pw if isinstance(pw, str) else pw[0], query=query)
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def display_url(url: str) -> str:
    """A URL fit for logs and CLI output: the password (wherever it was) is masked.

    Only the secrets change: ``sqlite:////abs/path.db`` keeps its slashes.

    Example:
        >>> display_url("postgresql://me:pw@db/reg?sslmode=require&password=pw")
        'postgresql://me:***@db/reg?sslmode=require&password=***'
    """
    head, sep, query = url.partition("?")
    pairs = []
    for pair in query.split("&") if sep else []:
        name = unquote_plus(pair.partition("=")[0])
        pairs.append(
            f"{pair.partition('=')[0]}={_MASK}" if name.lower() in _PASSWORD_KEYS else pair
        )
    return redact(head + sep + "&".join(pairs))
