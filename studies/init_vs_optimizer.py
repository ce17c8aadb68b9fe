"""Initialization x optimizer on a deep tanh network: which pairs train, each tuned with the same budget?

Six tanh layers on digits: the 'standard' U[-1/sqrt(n), 1/sqrt(n)] and unit 'normal' inits
vanish or saturate where xavier, lecun and orthogonal keep the signal (Glorot & Bengio 2010);
adaptive optimizers rescue some of them.

The comparison protocol (workbench/studies/comparison.py has the details and the references):

- every init x optimizer pair is an arm (6 x 4 = 24), and every arm gets the same tuning budget:
  8 trials x 2 seeds x 30 epochs (--quick: 3 trials x 1 seed x 8 epochs), the learning rate drawn by
  the same sampler (Sobol points on a log scale: every arm tries the same learning rates), pruning
  only against the arm's own trials. A single search over init x optimizer x lr would spend its
  budget where it already found good results and rank the best of 8 trials against the best of 1;
  rankings of optimizers flip with the tuning protocol (Choi et al. 2019; Sivaprasad et al. 2020;
  Schmidt, Schneider & Hennig 2021, who tune every optimizer with the same budget and report the
  spread over seeds);
- each arm's best learning rate is trained again on 5 fresh seeds (--quick: 4) that no tuning trial
  used, and scored on the test split, which tuning never read: the ranking comes from these runs,
  not from the best-of-N tuning score, which is optimistic;
- the table gives each arm's confirmed test accuracy (mean and 95% t interval), whether it is tied
  with the best (Welch t-tests, Holm-corrected), the tuned learning rate, the tuning trials completed,
  pruned and failed, the median first/last layer gradient ratio and the diagnosis verdicts of the
  confirmed runs; an arm that trains at no learning rate tried is reported with its reasons.

    python studies/init_vs_optimizer.py --quick              # every arm, a few minutes on 2 cores
    python studies/init_vs_optimizer.py --workers 2          # the full comparison; rerun to resume
"""

from workbench.studies import Categorical, Comparison, Float, Quick, Study

BASE = {"data": {"source": "digits"}, "model": {"hidden": [64] * 6, "activation": "tanh"},
        "training": {"epochs": 30, "batch_size": 32}, "monitor": {"every": 10, "log_every": 10}}
INITS = ["standard", "xavier_normal", "he_normal", "lecun_normal", "orthogonal", "normal"]
OPTIMIZERS = ["sgd", "momentum", "adam", "rmsprop"]
LEARNING_RATE = Float(1e-4, 0.5, log=True)

comparison = Comparison(
    name="init-vs-optimizer",
    description=__doc__.splitlines()[0],
    base=BASE,
    compare={"model.init": INITS, "optimizer.name": OPTIMIZERS},
    tune={"optimizer.lr": LEARNING_RATE},
    metric="val/accuracy", seeds=2, trials_per_arm=8, confirm_seeds=5, pruner="median", sampler="qmc",
    quick=Quick(n_trials=3, seeds=1, confirm_seeds=4, overrides={"training.epochs": 8}),
)

# The plain search this comparison replaces (one sampler over init x optimizer x lr): it only optimizes,
# and it is what benchmarks/study_scaling.py measures worker throughput on.
search = Study(
    name="init-vs-optimizer-search",
    description="One search over init x optimizer x lr (not a fair comparison: see the docstring)",
    base=BASE,
    space={"model.init": Categorical(INITS), "optimizer.name": Categorical(OPTIMIZERS), "optimizer.lr": LEARNING_RATE},
    metric="val/accuracy", direction="maximize", seeds=3, n_trials=150, pruner="median",
    quick=Quick(n_trials=40, seeds=2, overrides={"training.epochs": 8}),
)
study = search  # the name benchmarks/study_scaling.py loads

if __name__ == "__main__":
    comparison.main()
