"""Database URLs: parse them, find their SQLite file, and hide their passwords wherever shown.

Every rule about a URL's secrets is here, once: which query keys hold a password
(``_PASSWORD_KEYS``), how a password is masked (``***``), and how a message is cleaned of the
secrets of the URLs it may repeat (:func:`scrub`).
"""

from __future__ import annotations

import contextlib
import os
import re
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ._errors import ConfigurationError

_MASK = "***"
_PASSWORD_KEYS = {"password", "pass", "pwd", "passwd"}
# in free text a password runs to the last "@" of its run of non-space characters: an
# unencoded "@" or "/" in it is masked too (a URL's own text is masked by its parsed parts)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S*)@")
_SCHEME = re.compile(r"[a-zA-Z][\w+.-]*")
_BARE_USERINFO = re.compile(r"(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@")
_QUERY_PW = re.compile(r"(?i)\b(password|passwd|pwd|pass)=([^&\s'\"]*)")


def redact(text: str) -> str:
    """Return ``text`` with every URL password and ``password=`` value replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
    return _QUERY_PW.sub(lambda m: f"{m[1]}={_MASK}", text)


def secrets_of(url: str) -> list[str]:
    """The password strings hidden in ``url`` (userinfo and query), as written and decoded.

    The userinfo is read the widest way (it runs to the last ``@``), and also as SQLAlchemy and
    ``urlsplit`` read it, so every reading's password is found whatever characters (``/``,
    ``@``, spaces, ``?``) it holds. A text that is no URL at all yields none; :func:`redact`
    still masks whatever looks like a password in it.
    """
    found: list[str] = []

    def add(secret: str | None) -> None:
        for form in (secret, unquote(secret or ""), unquote_plus(secret or "")):
            if form and form not in found:  # drivers repeat the decoded password
                found.append(form)

    parts = _userinfo(url)
    tail = url
    if parts is not None:
        add(parts[2])
        tail = parts[3]
    with contextlib.suppress(ArgumentError, ValueError, TypeError):
        add(_password_to_last_at(url, make_url(url)).password)
    with contextlib.suppress(ValueError):
        add(urlsplit(url).password)
    query = tail.partition("?")[2]
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key.lower() in _PASSWORD_KEYS:
            add(value)
    return found


def _userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """``(scheme://, user, password or None, the rest)`` of a URL with a userinfo part.

    Read the widest way: the userinfo runs to the last ``@`` (an unencoded ``@``, ``/``, ``?``
    or space in a password stays in it). None when the URL has no authority userinfo (e.g.
    ``sqlite:////abs/path.db``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme) or rest.startswith("/"):
        return None
    at = rest.rfind("@")
    if at < 0:
        return None
    user, colon, password = rest[:at].partition(":")
    if "/" in user or "?" in user:
        return None  # the "@" is in the path or the query: there is no userinfo
    return scheme + sep, user, (password if colon else None), rest[at + 1 :]


def scrub(message: str, *urls: str) -> str:
    """Remove every secret of ``urls`` from ``message`` (e.g. a driver's error text).

    Example:
        >>> scrub("auth failed for p@ss", "postgresql://me:p%40ss@db/reg")
        'auth failed for ***'
    """
    secrets = {secret for url in urls for secret in secrets_of(url)}
    for secret in sorted(secrets, key=len, reverse=True):  # a longer secret before its parts
        message = message.replace(secret, _MASK)
    return redact(message)


def sqlite_file(url: str) -> str | None:
    """The database file a SQLite URL names, as written (maybe relative); None for the rest.

    None for other backends, in-memory databases (see :func:`sqlite_in_memory`) and ``file:``
    URIs. A text that is not a supported database URL raises ``ConfigurationError``.

    Example:
        >>> sqlite_file("sqlite:///runs/recycler.db"), sqlite_file("postgresql://db/reg")
        ('runs/recycler.db', None)
    """
    return file_of(parse_db_url(url))


def sqlite_in_memory(url: str) -> bool:
    """Whether ``url`` is a SQLite database in one process's memory (``sqlite://``,
    ``:memory:``, ``?mode=memory``): no other process, nor a later one, can see it.

    A text that is not a supported database URL raises ``ConfigurationError``.
    """
    return _in_memory(parse_db_url(url))


def file_of(parsed: URL) -> str | None:
    """:func:`sqlite_file` of a parsed URL (the engine and the change counter use it too)."""
    if parsed.get_backend_name() != "sqlite" or _in_memory(parsed):
        return None
    database = parsed.database or ""
    return None if database.startswith("file:") else database


def _in_memory(parsed: URL) -> bool:
    if parsed.get_backend_name() != "sqlite":
        return False
    return parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"


def with_sqlite_file(url: str, path: str | os.PathLike[str]) -> str:
    """``url`` (a SQLite file URL) naming the database file ``path`` instead; the rest is kept.

    Example:
        >>> with_sqlite_file("sqlite:///recycler.db?timeout=5", "/abs/recycler.db")
        'sqlite:////abs/recycler.db?timeout=5'
    """
    if sqlite_file(url) is None:
        raise ConfigurationError(
            f"registry URL {display_url(url)!r} is not a SQLite file URL: "
            "it names no database file to change"
        )
    return make_url(url).set(database=os.fspath(path)).render_as_string(hide_password=False)


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
    parsed = _password_to_last_at(url, parsed)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"registry URL {display_url(url)!r} names backend {backend!r}; recycler supports "
            "sqlite and postgresql (postgresql+psycopg://...)"
        )
    if backend == "sqlite" and parsed.host:
        raise ConfigurationError(
            f"registry URL {display_url(url)!r} puts {parsed.host!r} where SQLite has no host: "
            f"a SQLite file takes three slashes (sqlite:///{parsed.host}), or four for an "
            "absolute path (sqlite:////abs/path.db)"
        )
    query = dict(parsed.query)
    pw = next((query.pop(k) for k in list(query) if k.lower() in _PASSWORD_KEYS), None)
    if pw is not None:
        parsed = parsed.set(password=pw if isinstance(pw, str) else pw[0], query=query)
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _password_to_last_at(url: str, parsed: URL) -> URL:
    """``parsed`` with the password read to the last ``@`` (SQLAlchemy stops at the first).

    ``postgresql://u:p@ss@h/db`` means the password ``p@ss`` on host ``h``; SQLAlchemy would
    connect to host ``ss@h`` with password ``p`` (and print half the password as the host).
    """
    parts = _userinfo(url)
    if parts is None or "@" not in (parsed.host or ""):
        return parsed
    scheme, user, password, rest = parts
    if password is None:
        return parsed
    fixed = f"{scheme}{user}:{quote(unquote(password), safe='')}@{rest}"
    try:
        return make_url(fixed)
    except (ArgumentError, ValueError):
        return parsed


def display_url(url: str) -> str:
    """A URL fit for logs and CLI output: the password (wherever it was) is masked.

    Only the secrets change: ``sqlite:////abs/path.db`` keeps its slashes.

    Example:
        >>> display_url("postgresql://me:pw@db/reg?sslmode=require&password=pw")
        'postgresql://me:***@db/reg?sslmode=require&password=***'
    """
    parts = _userinfo(url)
    front, tail = "", url
    if parts is not None:
        scheme, user, password, tail = parts
        front = f"{scheme}{user}:{_MASK}@" if password is not None else f"{scheme}{user}@"
    head, sep, query = tail.partition("?")
    pairs = []
    for pair in query.split("&") if sep else []:
        name = unquote_plus(pair.partition("=")[0])
        pairs.append(
            f"{pair.partition('=')[0]}={_MASK}" if name.lower() in _PASSWORD_KEYS else pair
        )
    return redact(front + head + sep + "&".join(pairs))
