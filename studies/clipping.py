"""Gradient clipping against the learning rate on a network prone to exploding gradients.

Six ReLU layers regress the unscaled diabetes target with MSE: without clipping the gradients
explode and the NaN guard stops the trial (a failed trial, with its reason); clipping by global
norm, per-layer norm or value keeps it trainable. max_norm applies to the norm modes and
max_value to 'value'; the other one is ignored by that mode.

    python studies/clipping.py --quick
    python studies/clipping.py --workers 4
"""

from workbench.studies import Categorical, Float, Quick, Study

study = Study(
    name="clipping",
    description=__doc__.splitlines()[0],
    base={"data": {"source": "diabetes"}, "model": {"hidden": [64] * 6, "activation": "relu"},
          "optimizer": {"name": "momentum"}, "training": {"loss": "mse", "epochs": 40},
          "monitor": {"every": 5, "log_every": 10}},
    space={"clipping.mode": Categorical(["none", "global_norm", "layer_norm", "value"]),
           "clipping.max_norm": Float(0.1, 10.0, log=True),
           "clipping.max_value": Float(0.01, 1.0, log=True),
           "optimizer.lr": Float(1e-4, 0.3, log=True)},
    metric="val/r2", direction="maximize", seeds=3, n_trials=80,
    quick=Quick(n_trials=20, seeds=2, overrides={"training.epochs": 15}),
)

if __name__ == "__main__":
    study.main()
