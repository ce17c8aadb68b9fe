"""Initialization x optimizer on a deep tanh network: which pairs train, each at its best learning rate?

Six tanh layers on digits: the 'standard' U[-1/sqrt(n), 1/sqrt(n)] and unit 'normal' inits
vanish or saturate where xavier, lecun and orthogonal keep the signal (Glorot & Bengio 2010);
adaptive optimizers rescue some of them. The table ranks init x optimizer pairs over seeds.

    python studies/init_vs_optimizer.py --quick              # a few minutes on 2 cores
    python studies/init_vs_optimizer.py --workers 4          # the full study; rerun to resume
"""

from workbench.studies import Categorical, Float, Quick, Study

study = Study(
    name="init-vs-optimizer",
    description=__doc__.splitlines()[0],
    base={"data": {"source": "digits"}, "model": {"hidden": [64] * 6, "activation": "tanh"},
          "training": {"epochs": 30, "batch_size": 32}, "monitor": {"every": 10, "log_every": 10}},
    space={"model.init": Categorical(["standard", "xavier_normal", "he_normal", "lecun_normal", "orthogonal",
                                      "normal"]),
           "optimizer.name": Categorical(["sgd", "momentum", "adam", "rmsprop"]),
           "optimizer.lr": Float(1e-4, 0.5, log=True)},
    metric="val/accuracy", direction="maximize", seeds=3, n_trials=150, pruner="median",
    quick=Quick(n_trials=40, seeds=2, overrides={"training.epochs": 8}),
)

if __name__ == "__main__":
    study.main()
