"""Regularization on a small training set: does batch norm, does early stopping, help held-out accuracy?

A wide network trained on 450 digits overfits. The comparison's arms are batch norm on/off x early
stopping on/off (4 arms); in each arm the amounts of dropout and weight decay and the learning rate
are tuned with the same budget (same Sobol points in every arm), then the arm's best setting is
trained again on fresh seeds and scored on the test split. With early stopping the restored epoch
is chosen on the validation split, which the tuning also reads; the test split is read only by the
confirmation runs, so the ranking is not flattered by either. Protocol and references:
workbench/studies/comparison.py.

    python studies/regularization.py --quick
    python studies/regularization.py --workers 2
"""

from workbench.studies import Comparison, Float, Quick

comparison = Comparison(
    name="regularization",
    description=__doc__.splitlines()[0],
    base={"data": {"source": "digits", "limit": 800, "val_fraction": 0.25}, "model": {"hidden": [256, 256]},
          "training": {"epochs": 60}, "monitor": {"every": 10, "log_every": 10},
          "early_stopping": {"patience": 8, "restore_best_weights": True}},
    compare={"model.batch_norm": [False, True], "early_stopping.enabled": [False, True]},
    tune={"optimizer.lr": Float(1e-4, 3e-2, log=True),
          "model.dropout": Float(0.0, 0.6),
          "optimizer.weight_decay": Float(1e-6, 1e-2, log=True)},
    metric="val/accuracy", seeds=2, trials_per_arm=12, confirm_seeds=5,
    quick=Quick(n_trials=4, seeds=1, confirm_seeds=4, overrides={"training.epochs": 15}),
)

if __name__ == "__main__":
    comparison.main()
