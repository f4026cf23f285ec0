"""One worker process of a shared study: ``python _optuna_worker.py URL BLOBS TRIALS``."""

from __future__ import annotations

import sys

import optuna
import torch
from _optuna_helpers import objective

from recycler.integrations.optuna import recycle

if __name__ == "__main__":
    url, blobs, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="shared", storage=url, pruner=optuna.pruners.NopPruner())
    study.optimize(recycle(objective, config={"registry": url, "blobs": blobs}), n_trials=trials)
