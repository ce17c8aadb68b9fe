"""Regularization on a small training set: dropout, batch norm, weight decay and early stopping.

A wide network trained on 450 digits overfits; the study searches how much of each regularizer
helps held-out accuracy (150 validation digits). With early stopping the restored epoch is chosen
on the validation split, so compare the best configurations' test/accuracy (in their MLflow
runs) before concluding.

    python studies/regularization.py --quick
    python studies/regularization.py --workers 4
"""

from workbench.studies import Categorical, Float, Quick, Study

study = Study(
    name="regularization",
    description=__doc__.splitlines()[0],
    base={"data": {"source": "digits", "limit": 800, "val_fraction": 0.25}, "model": {"hidden": [256, 256]},
          "training": {"epochs": 60}, "monitor": {"every": 10, "log_every": 10},
          "early_stopping": {"patience": 8, "restore_best_weights": True}},
    space={"model.dropout": Float(0.0, 0.6),
           "model.batch_norm": Categorical([False, True]),
           "optimizer.weight_decay": Float(1e-6, 1e-2, log=True),
           "early_stopping.enabled": Categorical([False, True])},
    metric="val/accuracy", direction="maximize", seeds=3, n_trials=80,
    quick=Quick(n_trials=16, seeds=2, overrides={"training.epochs": 15}),
)

if __name__ == "__main__":
    study.main()
