"""Training goes on when the registry's connection pool is exhausted at refresh time.

The pool's own timeout used to escape ``storage`` as SQLAlchemy's ``TimeoutError`` (not a
``StorageError``) and crash the trial; now it is a ``RegistryUnavailableError``, which the
Distiller records in its stats while ``loss`` returns the task loss.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _kd_helpers import batch, fill, make_net
from torch import nn

from recycler.config import RecycleConfig
from recycler.distiller import Distiller
from storage import Registry

TIMEOUT_S = 0.2


def test_an_exhausted_pool_at_refresh_leaves_the_task_loss(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    reg = Registry(url, tmp_path / "blobs", pool_size=1, pool_timeout=TIMEOUT_S)
    fill(reg, 2)  # teachers exist: with a free connection this step would distil
    cfg = RecycleConfig.from_dict(
        {"registry": url, "blobs": str(tmp_path / "blobs"), "teachers": {"refresh": "1ba"}}
    )
    student = make_net(seed=7)
    kd = Distiller(
        cfg, study="s", trial_number=2, registry=reg, model=student, background_refresh=False
    )
    x, y = batch()
    held = reg._engine().connect()  # every connection the pool may open is in use
    try:
        logits = student(x)
        with pytest.warns(RuntimeWarning, match="training goes on"):
            loss = kd.loss(logits, y, x)
    finally:
        held.close()
    assert torch.equal(loss, nn.functional.cross_entropy(logits, y))
    errors = kd.stats()["registry_errors"]
    assert len(errors) == 1 and "pool refresh failed" in errors[0] and "busy" in errors[0]
    assert kd.stats()["steps_distilled"] == 0 and kd.teachers == []

    # the connection is back: the next refresh finds the teachers and the step distils
    logits = student(x)
    loss = kd.loss(logits, y, x)
    assert kd.stats()["steps_distilled"] == 1 and len(kd.teachers) == 2
    assert not torch.allclose(loss, nn.functional.cross_entropy(logits, y))
    reg.close()
