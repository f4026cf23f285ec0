"""Real text that ships with Python, a WordPiece tokenizer trained on it, and a tiny BERT.

The text is ``pydoc_data.topics``: the standard library's help topics (about 470 kB of
English prose and code, the same wherever the Python version is). Nothing is downloaded:
the tokenizer is trained here with ``tokenizers`` (a second), the models are built from a
config. Two tasks: masked language modelling on every topic (:func:`mlm_data`) and a
4-way sequence classification with real labels, which help topic a paragraph comes from
(:func:`topic_data`). Models saved with ``save_pretrained`` load back with
:func:`load_pretrained` (a local folder; a hub name only where the hub is reachable).

Needs the transformers extra (``pip install 'recycler[transformers]'``).

Example:
    >>> tok = wordpiece_tokenizer(500)  # doctest: +SKIP
    >>> train, test, names = topic_data(tok)  # doctest: +SKIP
    >>> model = tiny_bert(tok, num_labels=len(names))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .._imports import require

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "SPECIAL_TOKENS",
    "TOPICS",
    "accuracy",
    "argmax_logits",
    "load_pretrained",
    "mlm_accuracy",
    "mlm_data",
    "paragraphs",
    "tiny_bert",
    "topic_data",
    "wordpiece_tokenizer",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: The help topics of the classification task: the four with the most paragraphs.
TOPICS = ("compound", "specialnames", "debugger", "string-methods")
Example = dict[str, torch.Tensor]


def _transformers() -> Any:
    return require("transformers", "transformers", minimum="5.0", feature="the text task")


def paragraphs(min_chars: int = 40) -> list[tuple[str, str]]:
    """``(topic, paragraph)`` of every help topic, in a fixed order (topics sorted)."""
    topics = require("pydoc_data.topics", None, feature="the text task").topics
    out: list[tuple[str, str]] = []
    for topic in sorted(topics):
        for block in str(topics[topic]).split("\n\n"):
            text = " ".join(block.split())
            if len(text) >= min_chars:
                out.append((topic, text))
    return out


@functools.lru_cache(maxsize=4)
def wordpiece_tokenizer(vocab_size: int = 1000) -> Any:
    """A BERT-style WordPiece tokenizer trained on the help topics (lower-cased).

    Returns a ``PreTrainedTokenizerFast`` with BERT's special tokens and post-processor
    (``[CLS] A [SEP]``), usable everywhere a Trainer wants a tokenizer. Cached per size.
    """
    tokenizers = require("tokenizers", "transformers", feature="the text task")
    hf = _transformers()
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tok.train_from_iterator([text for _, text in paragraphs()], trainer)
    # the trainer's ids follow a hash order that changes from process to process (its
    # vocabulary does not): number the pieces in a fixed order, so every run sees the same ids
    pieces = [t for t in sorted(tok.get_vocab()) if t not in SPECIAL_TOKENS]
    ordered = {piece: i for i, piece in enumerate([*SPECIAL_TOKENS, *pieces])}
    tok.model = tokenizers.models.WordPiece(ordered, unk_token="[UNK]")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = tokenizers.decoders.WordPiece()
    return hf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_bert(
    tokenizer: Any,
    *,
    num_labels: int | None = None,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 64,
    dropout: float = 0.1,
) -> nn.Module:
    """A small BERT built from a config: ``BertForMaskedLM``, or with ``num_labels``
    ``BertForSequenceClassification``. Random weights (seed torch first)."""
    hf = _transformers()
    config = hf.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=max_length,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels or 2,
    )
    if num_labels is None:
        return hf.BertForMaskedLM(config)  # type: ignore[no-any-return]
    return hf.BertForSequenceClassification(config)  # type: ignore[no-any-return]


def load_pretrained(name_or_path: str, *, num_labels: int | None = None) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` from a folder written by ``save_pretrained`` (or a hub name,
    where the hub is reachable): ``AutoModelForMaskedLM``, or with ``num_labels``
    ``AutoModelForSequenceClassification``."""
    hf = _transformers()
    tokenizer = hf.AutoTokenizer.from_pretrained(name_or_path)
    if num_labels is None:
        model = hf.AutoModelForMaskedLM.from_pretrained(name_or_path)
    else:
        model = hf.AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=num_labels
        )
    return model, tokenizer


def _split(items: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cut = round(len(items) * (1 - fraction))
    return [items[i] for i in order[:cut]], [items[i] for i in order[cut:]]


def mlm_data(
    tokenizer: Any,
    *,
    max_length: int = 64,
    eval_fraction: float = 0.1,
    mask_probability: float = 0.15,
    seed: int = 0,
    limit: int | None = None,
) -> tuple[list[Example], list[Example]]:
    """Masked-LM examples of ``max_length`` tokens cut from the help topics' token stream.

    Returns ``(train, eval)``: training examples hold ``input_ids`` and ``attention_mask``
    only (mask them with ``DataCollatorForLanguageModeling``); evaluation examples are
    masked once, here, with ``seed`` (BERT's 80/10/10 rule; ``labels`` -100 elsewhere), so
    every run is scored on the same positions. ``limit``: keep only that many sequences.
    """
    body = max_length - 2
    stream: list[int] = []
    for ids in tokenizer([text for _, text in paragraphs()], add_special_tokens=False)["input_ids"]:
        stream += ids
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    chunks = [[cls, *stream[i : i + body], sep] for i in range(0, len(stream) - body + 1, body)]
    if limit is not None:
        chunks = chunks[:limit]
    train_ids, eval_ids = _split(chunks, eval_fraction, seed)
    ones = torch.ones(max_length, dtype=torch.long)
    train = [{"input_ids": torch.tensor(ids), "attention_mask": ones} for ids in train_ids]
    gen = torch.Generator().manual_seed(seed)
    special = torch.tensor([cls, sep])
    evals = []
    for ids in eval_ids:
        x = torch.tensor(ids)
        labels = x.clone()
        chosen = (torch.rand(max_length, generator=gen) < mask_probability) & ~torch.isin(
            x, special
        )
        labels[~chosen] = -100
        roll = torch.rand(max_length, generator=gen)
        x = torch.where(chosen & (roll < 0.8), tokenizer.mask_token_id, x)
        noise = torch.randint(len(tokenizer), (max_length,), generator=gen)
        x = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), noise, x)
        evals.append({"input_ids": x, "attention_mask": ones, "labels": labels})
    return train, evals


def topic_data(
    tokenizer: Any,
    *,
    topics: Sequence[str] = TOPICS,
    max_length: int = 64,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[Example], list[Example], list[str]]:
    """Which help topic a paragraph comes from: ``(train, test, topic names)``.

    Each paragraph of the chosen topics becomes one example (truncated and padded to
    ``max_length``) with its topic's index as ``labels``; a seeded random split. With the
    default topics on Python 3.11: 746 paragraphs, 4 classes (the largest 37%).
    """
    names = list(topics)
    rows = [(names.index(t), text) for t, text in paragraphs() if t in names]
    train_rows, test_rows = _split(rows, test_fraction, seed)

    def encode(batch: list[tuple[int, str]]) -> list[Example]:
        enc = tokenizer(
            [text for _, text in batch],
            truncation=True,
            max_length=max_length,
            padding="max_length",
            return_tensors="pt",
        )
        return [
            {
                "input_ids": enc["input_ids"][i],
                "attention_mask": enc["attention_mask"][i],
                "labels": torch.tensor(label),
            }
            for i, (label, _) in enumerate(batch)
        ]

    return encode(train_rows), encode(test_rows), names


def argmax_logits(logits: Any, labels: Any) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: keep the argmax only (eval memory: ``[N, T]``)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)  # type: ignore[no-any-return]


def mlm_accuracy(prediction: Any) -> dict[str, float]:
    """``compute_metrics`` for MLM: the share of masked positions predicted right.

    Expects the argmax predictions (:func:`argmax_logits`) and the labels (-100 ignored).
    """
    predicted = torch.as_tensor(prediction.predictions)
    labels = torch.as_tensor(prediction.label_ids)
    kept = labels != -100
    right = (predicted[kept] == labels[kept]).sum().item()
    return {"accuracy": float(right) / max(1, int(kept.sum().item()))}


def accuracy(prediction: Any) -> dict[str, float]:
    """``compute_metrics`` for classification: accuracy of the logits' argmax."""
    logits = prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    predicted = torch.as_tensor(logits).argmax(dim=-1)
    labels = torch.as_tensor(prediction.label_ids)
    return {"accuracy": float((predicted == labels).float().mean().item())}
