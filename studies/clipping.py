"""Gradient clipping modes compared on a network prone to exploding gradients, each at its tuned learning rate.

Six ReLU layers regress the unscaled diabetes target with MSE: without clipping the gradients
explode and the NaN guard or the live diagnosis stops the trial (a failed trial, with its reason);
clipping by global norm, per-layer norm or value keeps it trainable. Each clipping mode is an arm
(4 arms), tuned with the same budget over the learning rate and the thresholds (max_norm applies
to the norm modes, max_value to 'value'; the other is ignored by that mode), then confirmed on fresh
seeds and scored on the test split. An arm that trains at no learning rate tried is reported as
such, with the verdicts. Protocol and references: workbench/studies/comparison.py.

    python studies/clipping.py --quick
    python studies/clipping.py --workers 2
"""

from workbench.studies import Comparison, Float, Quick

comparison = Comparison(
    name="clipping",
    description=__doc__.splitlines()[0],
    base={"data": {"source": "diabetes"}, "model": {"hidden": [64] * 6, "activation": "relu"},
          "optimizer": {"name": "momentum"}, "training": {"loss": "mse", "epochs": 40},
          "monitor": {"every": 5, "log_every": 10}},
    compare={"clipping.mode": ["none", "global_norm", "layer_norm", "value"]},
    tune={"optimizer.lr": Float(1e-4, 0.3, log=True),
          "clipping.max_norm": Float(0.1, 10.0, log=True),
          "clipping.max_value": Float(0.01, 1.0, log=True)},
    metric="val/r2", seeds=2, trials_per_arm=10, confirm_seeds=5,
    quick=Quick(n_trials=4, seeds=1, confirm_seeds=4, overrides={"training.epochs": 15}),
)

if __name__ == "__main__":
    comparison.main()
