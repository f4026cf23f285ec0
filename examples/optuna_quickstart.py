"""Optuna quickstart, recycled: a learning-rate search on sklearn's digits with a small MLP.

The five lines marked ``# recycler`` are all that changed from the plain Optuna objective
(see the README's diff). Every finished trial becomes a teacher, and each later trial distils
from the best earlier ones. The study and the teacher registry share one SQLite file; run the
script again and the new trials also learn from the first run's.

    python examples/optuna_quickstart.py            # 10-30 s on a CPU
    recycler --registry sqlite:///recycler-demo/quickstart.db \\
             --blobs recycler-demo/quickstart-teachers lineage quickstart
"""

from __future__ import annotations

import os

import optuna
import torch
from sklearn.datasets import load_digits
from torch import nn

from recycler.integrations.optuna import recycle  # recycler

DB = os.environ.get("RECYCLER_REGISTRY", "sqlite:///recycler-demo/quickstart.db")
EPOCHS, BATCH = 10, 64

x, y = load_digits(return_X_y=True)  # 1,797 8x8 images, shipped with scikit-learn
x, y = torch.tensor(x, dtype=torch.float32) / 16, torch.tensor(y)
x_train, y_train, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]
batches = range(0, len(y_train), BATCH)


@recycle(config={"registry": DB, "blobs": "recycler-demo/quickstart-teachers"})  # recycler
def objective(trial, kd):  # recycler
    lr = trial.suggest_float("lr", 1e-3, 0.5, log=True)
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    kd.attach(model).plan(epochs=EPOCHS, steps_per_epoch=len(batches))  # recycler
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for epoch in range(EPOCHS):
        for i in batches:
            xb, yb = x_train[i : i + BATCH], y_train[i : i + BATCH]
            loss = kd.loss(model(xb), yb, xb)  # recycler
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return accuracy


if __name__ == "__main__":
    os.makedirs("recycler-demo", exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="quickstart", storage=DB, direction="maximize", load_if_exists=True
    )
    study.optimize(objective, n_trials=8)
    print("trial  lr      accuracy  state     teachers  KD steps")
    for t in study.trials:
        kd = t.user_attrs["recycler"]
        value = "-" if t.value is None else f"{t.value:.3f}"
        print(
            f"{t.number:5}  {t.params['lr']:.4f}  {value:>8}  {t.state.name.lower():8}  "
            f"{len(kd['teachers_used']):8}  {kd['steps_distilled']:8}"
        )
    print(f"best: trial {study.best_trial.number}, accuracy {study.best_value:.3f}")
