"""Item 10: a password holding ``/``, a space or ``@`` never shows, in whole or in part:
``db upgrade``, ``teachers show``, the newer-schema error, ``repr(Registry)``,
``repr(RecycleConfig)`` and the Optuna user attrs (``registry_errors``)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import optuna
import pytest
import torch
from _r16 import sql
from sqlalchemy.engine import make_url

from recycler.cli import main
from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from recycler.integrations.optuna import ATTR_KEY, recycle
from storage import Registry, SchemaError, display_url, scrub

PW = "pa/ss w@rd"
PIECES = ("pa/ss", "ss w", "w@rd", "pa%2Fss", "w%40rd")


def _clean(text: str) -> None:
    for piece in PIECES:
        assert piece not in text, (piece, text)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unreachable() -> str:
    return f"postgresql+psycopg://alice:{PW}@127.0.0.1:{_closed_port()}/reg"


def _with_password(pg_url: str) -> str:
    """The scratch database's URL with a password (the server trusts loopback: ignored)."""
    user, rest = pg_url.split("://", 1)[1].split("@", 1)
    return f"postgresql+psycopg://{user.split(':')[0]}:{PW}@{rest}"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://alice:{PW}@db.example:5432/reg",
        f"postgresql+psycopg://alice:{PW}@db/reg?sslmode=require",
        "postgresql://alice:p@ss@db/reg",
        "postgresql://alice:a b/c@d@db/reg",
    ],
)
def test_display_and_reprs_mask_every_character(url: str, tmp_path: Path) -> None:
    secret = url.split("alice:", 1)[1].rsplit("@", 1)[0]
    reg = Registry(url, tmp_path / "blobs")
    cfg = RecycleConfig(registry=url, blobs=f"s3://key:{secret}@bucket/teachers")
    for shown in (display_url(url), reg.url, repr(reg), repr(cfg)):
        assert secret not in shown and "***" in shown
        for part in secret.replace("@", " ").replace("/", " ").split():
            if len(part) > 1:
                assert f":{part}" not in shown and f"{part}@" not in shown, shown
    assert scrub(f"FATAL: password {secret!r} rejected", url) == "FATAL: password '***' rejected"
    assert make_url(url).host is not None


def test_cli_errors_hide_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = _unreachable()
    for args in (["db", "upgrade"], ["teachers", "show", "1"], ["teachers", "list"]):
        assert main(["--registry", url, *args]) == 2
        said = capsys.readouterr()
        _clean(said.out + said.err)
        assert "***" in said.err and "127.0.0.1" in said.err


def test_optuna_user_attrs_hide_the_password(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial, kd: Distiller) -> float:
        net = torch.nn.Linear(3, 2)
        kd.attach(net)
        x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
        kd.loss(net(x), y, x).backward()
        return 0.75

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    cfg = {"registry": _unreachable(), "blobs": str(tmp_path / "blobs")}
    with pytest.warns(RuntimeWarning):
        study.optimize(recycle(objective, config=cfg), n_trials=1)
    (trial,) = study.trials
    assert trial.value == 0.75
    attrs = trial.user_attrs[ATTR_KEY]
    assert attrs["registry_errors"]
    _clean(json.dumps(trial.user_attrs))


@pytest.mark.server
def test_db_upgrade_and_show_on_a_server_mask_the_password(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _with_password(pg_url)
    assert main(["--registry", url, "db", "upgrade"]) == 0
    said = capsys.readouterr().out
    _clean(said)
    assert said.startswith("registry postgresql+psycopg://postgres:***@127.0.0.1")
    reg = Registry(url, tmp_path / "blobs")
    rec = reg.register({"w": torch.ones(2)}, study="s", trial_number=0)
    where = ["--registry", url, "--blobs", str(tmp_path / "blobs")]
    assert main([*where, "teachers", "show", str(rec.id)]) == 0
    _clean(capsys.readouterr().out)


@pytest.mark.server
def test_the_newer_schema_error_masks_the_password(pg_url: str, tmp_path: Path) -> None:
    url = _with_password(pg_url)
    Registry(url, tmp_path / "blobs").upgrade()
    sql(pg_url, "UPDATE recycler_schema SET version_num = '9999'")
    with pytest.raises(SchemaError, match="newer than this recycler") as info:
        Registry(url, tmp_path / "blobs").query()
    _clean(str(info.value))
    assert "***" in str(info.value)
