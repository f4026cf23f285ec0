"""What the transformers tests share: offline switches, a tiny BERT, data and arguments.

Everything is local: the WordPiece tokenizer is trained on ``pydoc_data.topics`` (cached per
process), the models are built from a config, nothing is downloaded (``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from recycler.demo import text  # noqa: E402

__all__ = ["one_thread"]

VOCAB = 400
LENGTH = 24
HIDDEN = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread (tiny models; the machine is shared), registry engines closed after."""
    from storage._rdb.engine import dispose_all

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    dispose_all()


def tokenizer() -> Any:
    return text.wordpiece_tokenizer(VOCAB)


def bert(*, num_labels: int | None = None, seed: int = 0, dropout: float = 0.0) -> Any:
    """The tiny BERT of the tests (2 layers, hidden 32), seeded."""
    torch.manual_seed(seed)
    return text.tiny_bert(
        tokenizer(), num_labels=num_labels, hidden=HIDDEN, max_length=LENGTH, dropout=dropout
    )


def mlm(limit: int = 96, n_eval: int = 16) -> tuple[list[Any], list[Any]]:
    """Masked-LM data, every example masked once with a fixed seed (no collator needed)."""
    _, masked = text.mlm_data(tokenizer(), max_length=LENGTH, limit=limit + n_eval, eval_fraction=1)
    return masked[:limit], masked[limit:]


def topics(n_train: int = 96, n_test: int = 48) -> tuple[list[Any], list[Any]]:
    train, test, _ = text.topic_data(tokenizer(), max_length=LENGTH)
    return train[:n_train], test[:n_test]


def args(out: Path, **overrides: Any) -> Any:
    """TrainingArguments for a quick CPU run: no saving, no logging, no progress bars."""
    base: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 32,
        "num_train_epochs": 1,
        "learning_rate": 3e-3,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_pin_memory": False,
        "seed": 0,
    }
    base.update(overrides)
    return transformers.TrainingArguments(**base)


def recycle_config(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "registry": f"sqlite:///{tmp / 'registry.db'}",
        "blobs": str(tmp / "teachers"),
        "teachers": {"seed": 0},
        **extra,
    }
