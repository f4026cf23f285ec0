"""A registry URL's password never shows: not in reprs, properties, nor error messages."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from _storage_helpers import tiny_state

from storage import (
    ConfigurationError,
    Registry,
    RegistryUnavailableError,
    StorageError,
    display_url,
    redact,
)
from storage._urls import parse_db_url, scrub, secrets_of

PW = "Hunter2-s3cret"

UNREACHABLE = [
    f"postgresql+psycopg://alice:{PW}@127.0.0.1:1/reg",
    f"postgresql://alice:{PW}@127.0.0.1:1/reg",
    f"postgresql+psycopg://alice@127.0.0.1:1/reg?password={PW}",
    f"postgresql+psycopg://alice@127.0.0.1:1/reg?sslmode=disable&PASSWORD={PW}",
    f"postgresql+psycopg://alice:{PW}@127.0.0.1:1/reg?connect_timeout=3&password={PW}",
]

MALFORMED = [
    f"postgresql+psycopg://alice:{PW}@127.0.0.1:notaport/reg",
    f"mysql://alice:{PW}@127.0.0.1/reg",
    f"oracle://alice@127.0.0.1/reg?password={PW}",
    f"postgresql+nosuchdriver://alice:{PW}@127.0.0.1/reg",
    f"postgresql+nosuchdriver://alice@127.0.0.1/reg?password={PW}",
    f"alice:{PW}@127.0.0.1/reg",
    f"://alice:{PW}@",
]


def _everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc.args)


@pytest.mark.parametrize("url", UNREACHABLE)
def test_unreachable_registry_hides_the_password(url: str, tmp_path: Path) -> None:
    reg = Registry(url, tmp_path / "blobs")
    assert PW not in repr(reg) and PW not in reg.url and PW not in str(reg)
    assert "***" in reg.url and "alice" in reg.url and "127.0.0.1:1" in reg.url
    with pytest.raises(RegistryUnavailableError, match="unreachable") as info:
        reg.query()
    said = _everything_said(info.value)
    assert PW not in said
    assert "127.0.0.1" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_registry_url_hides_the_password(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        Registry(url, tmp_path / "blobs")
    said = _everything_said(info.value)
    assert PW not in said
    assert "sqlite" in str(info.value)  # the message says what would work


def test_missing_sqlite_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnavailableError, match="does not exist"):
        Registry(f"sqlite:///{tmp_path / 'nope' / 'r.db'}", tmp_path / "blobs")
    with pytest.raises(ConfigurationError, match="empty"):
        Registry("", tmp_path / "blobs")


def test_errors_are_storage_errors() -> None:
    assert issubclass(ConfigurationError, StorageError)
    assert issubclass(RegistryUnavailableError, StorageError)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///recycler.db", "sqlite:///recycler.db"),
        ("sqlite:////abs/path/r.db", "sqlite:////abs/path/r.db"),
        ("sqlite://", "sqlite://"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=pw&a=b", "postgresql://u@h/db?password=***&a=b"),
        ("postgresql://u@h/db?a=b&PassWord=pw", "postgresql://u@h/db?a=b&PassWord=***"),
        (
            "postgresql://u@h/db?pwd=pw&passwd=pw&pass=pw",
            "postgresql://u@h/db?pwd=***&passwd=***&pass=***",
        ),
        ("postgresql://u@h/db?pass%77ord=pw", "postgresql://u@h/db?pass%77ord=***"),
        ("postgresql://u@h/db?passwords=keep", "postgresql://u@h/db?passwords=keep"),
    ],
)
def test_display_url(url: str, shown: str) -> None:
    assert display_url(url) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("connect postgresql://u:pw@h/db failed", "connect postgresql://u:***@h/db failed"),
        ("a s3://k:sec@bucket/x and pg://u:p@h", "a s3://k:***@bucket/x and pg://u:***@h"),
        ("dsn password=pw host=h", "dsn password=*** host=h"),
        ("?PASSWORD=pw&x=1", "?PASSWORD=***&x=1"),
        ("nothing secret here: a@b.c, x=1", "nothing secret here: a@b.c, x=1"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_secrets_of_and_scrub() -> None:
    url = f"postgresql://u:{PW}@h/db?password=other"
    assert secrets_of(url) == [PW, "other"]
    said = scrub(f"FATAL: password authentication failed ({PW}, other)", url)
    assert PW not in said and "other" not in said


def test_parse_db_url_moves_a_query_password_into_the_url() -> None:
    parsed = parse_db_url(f"postgresql://u@h/db?password={PW}&sslmode=require")
    assert parsed.password == PW
    assert dict(parsed.query) == {"sslmode": "require"}
    assert parsed.drivername == "postgresql+psycopg"
    assert PW not in repr(parsed)


@pytest.mark.server
def test_missing_postgresql_database_hides_the_password(pg_url: str, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    server = make_url(pg_url)
    url = server.set(password=PW, database="recycler_no_such_db").render_as_string(False)
    reg = Registry(url, tmp_path / "blobs")
    with pytest.raises(RegistryUnavailableError, match="recycler_no_such_db") as info:
        reg.get(1)
    assert PW not in _everything_said(info.value)


def test_blob_store_credentials_are_not_shown(tmp_path: Path) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", f"memory://bob:{PW}@bucket/teachers")
    rec = reg.register(tiny_state(0), study="s", trial_number=0)
    assert PW not in repr(reg) and PW not in reg.blobs.url and PW not in rec.blob_uri
    assert reg.load(rec.id).teacher == rec  # the store itself still works
    reg.blobs.delete(rec.blob_key)
    with pytest.raises(ConfigurationError) as info:
        Registry(f"sqlite:///{tmp_path / 'r.db'}", f"nosuchproto://bob:{PW}@bucket/x")
    assert PW not in _everything_said(info.value)
