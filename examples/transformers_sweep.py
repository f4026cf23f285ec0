"""A learning-rate sweep of a tiny BERT with ``Trainer.hyperparameter_search``, plain and recycled.

The task is real and local: which of four Python help topics (``pydoc_data.topics``, shipped
with Python) a paragraph comes from; the tokenizer is a WordPiece vocabulary trained here, the
model a 2-layer BERT (hidden 64) built from a config. Both sweeps run the same learning rates
in the same order (enqueued in the Optuna study), one trial of each in turn, with the optuna
backend on one SQLite file that also holds the teacher registry. The recycled sweep is the
plain one with ``RecycleTrainer`` for ``Trainer`` and a ``recycle=`` config (the lines marked
``# recycler``): each trial distils from the earlier trials' models and becomes a teacher.

    python examples/transformers_sweep.py            # 5 rates x 4 epochs, twice: ~1 min on a CPU
    python examples/transformers_sweep.py --quick    # 3 rates x 2 epochs on less data
    recycler --registry sqlite:///recycler-demo/transformers.db \\
             --blobs recycler-demo/transformers-teachers lineage hf-recycled
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import optuna
import torch
from transformers import PrinterCallback, Trainer, TrainingArguments

from recycler.demo import text
from recycler.integrations.transformers import RecycleTrainer  # recycler

OUT = "recycler-demo"
DB = f"sqlite:///{OUT}/transformers.db"  # Optuna's studies and the teacher registry
RECYCLE = {"registry": DB, "blobs": f"{OUT}/transformers-teachers"}
NAMES = ("hf-plain", "hf-recycled")


def trainer_for(name: str, recycled: bool, rates: list[float], epochs: int, data: Any) -> Any:
    """The sweep's Trainer, and its Optuna study with the learning rates enqueued in order."""
    train, test, topics = data
    tokenizer = text.wordpiece_tokenizer(1000)

    def model_init(trial: Any) -> Any:
        return text.tiny_bert(tokenizer, num_labels=len(topics), hidden=64, max_length=64)

    study = optuna.create_study(study_name=name, storage=DB, direction="maximize")
    for lr in rates:  # the same rates in the same order for both sweeps
        study.enqueue_trial({"learning_rate": lr})
    args = TrainingArguments(
        output_dir=f"{OUT}/runs/{name}",
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    common: dict[str, Any] = {
        "model_init": model_init,
        "args": args,
        "train_dataset": train,
        "eval_dataset": test,
        "compute_metrics": text.accuracy,
    }
    recycling: dict[str, Any] = {"recycle": RECYCLE} if recycled else {}  # recycler
    trainer = (RecycleTrainer if recycled else Trainer)(**common, **recycling)  # recycler
    trainer.pop_callback(PrinterCallback)  # no log lines: the table below says it
    return trainer


def hp_space(trial: optuna.Trial) -> dict[str, float]:
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)}


def next_trial(trainer: Any, name: str) -> None:
    """One more trial of the sweep ``name`` (the study is loaded, its next rate dequeued)."""
    trainer.hyperparameter_search(
        hp_space=hp_space,
        n_trials=1,
        direction="maximize",
        backend="optuna",
        storage=DB,
        study_name=name,
        load_if_exists=True,
    )


def seconds(trial: Any) -> float:
    return float((trial.datetime_complete - trial.datetime_start).total_seconds())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="3 rates x 2 epochs on less data")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for stale in (f"{OUT}/transformers.db", RECYCLE["blobs"], f"{OUT}/runs"):
        if os.path.isdir(stale):
            shutil.rmtree(stale)
        elif os.path.exists(stale):
            os.remove(stale)
    os.makedirs(OUT, exist_ok=True)
    rates = [3e-3, 1e-2, 3e-2] if args.quick else [1e-3, 3e-3, 6e-3, 1e-2, 3e-2]
    epochs = 2 if args.quick else 4
    train, test, topics = text.topic_data(text.wordpiece_tokenizer(1000))
    if args.quick:
        train, test = train[:192], test[:96]
    print(f"topics {', '.join(topics)}: {len(train)} training, {len(test)} test paragraphs")
    data = (train, test, topics)
    sweeps = {name: trainer_for(name, name == "hf-recycled", rates, epochs, data) for name in NAMES}
    started = time.perf_counter()
    for _ in rates:  # one trial of each sweep in turn: the machine's load hits both alike
        for name, trainer in sweeps.items():
            next_trial(trainer, name)
    print(f"both sweeps: {time.perf_counter() - started:.0f} s")
    plain, recycled = (optuna.load_study(study_name=n, storage=DB).trials for n in NAMES)

    print("\n      lr   plain  recycled  teachers  KD steps  plain s  recycled s")
    for p, r in zip(plain, recycled, strict=True):
        kd = r.user_attrs["recycler"]
        print(
            f"{p.params['learning_rate']:8.4f}  {p.value:6.3f}  {r.value:8.3f}  "
            f"{len(kd['teachers_used']):8}  {kd['steps_distilled']:8}  "
            f"{seconds(p):7.1f}  {seconds(r):10.1f}"
        )
    best_p, best_r = (max(t.value or 0.0 for t in trials) for trials in (plain, recycled))
    print(f"\nbest accuracy: plain {best_p:.3f}, recycled {best_r:.3f}")
    total_p, total_r = sum(map(seconds, plain)), sum(map(seconds, recycled))
    print(f"sweep wall-clock: plain {total_p:.1f} s, recycled {total_r:.1f} s")


if __name__ == "__main__":
    main()
