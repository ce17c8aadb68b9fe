"""Optuna studies over experiment specs, tracked in MLflow: one parent run, one child run per trial.

    from workbench.studies import Study, Quick, Categorical, Float, Int

    study = Study(name="init-vs-optimizer", base={...} or "experiments/x.toml",
                  space={"model.init": Categorical([...]), "optimizer.lr": Float(1e-4, 1e-1, log=True)},
                  metric="val/accuracy", direction="maximize", seeds=3, n_trials=60, pruner="median",
                  quick=Quick(n_trials=16, seeds=2, overrides={"training.epochs": 8}))
    if __name__ == "__main__":
        study.main()

    comparison = Comparison(name="init-vs-optimizer", base=..., compare={"model.init": [...], "optimizer.name": [...]},
                            tune={"optimizer.lr": Float(1e-4, 0.5, log=True)}, trials_per_arm=8, confirm_seeds=5)

- study.py: `Study` (the declaration, `main`, `run`), `Quick`, resuming rules.
- comparison.py: `Comparison`: arms (every combination of the compared factors), each its own Optuna
  study with the same tuning budget, then confirmation runs on fresh seeds; the protocol and why.
- confirm.py, comparison_report.py, comparison_figures.py, statistics.py: a confirmation run; the
  comparison's ranked table, intervals, ties with the best (Holm) and figures.
- samplers.py: samplers ("tpe", "random", "qmc": Sobol points) and pruners by name.
- space.py: `Categorical`, `Float`, `Int`; checking keys and values against the spec.
- objective.py: one trial = one configuration over the seeds, one MLflow child run.
- workers.py: worker processes, the exact trial budget, heartbeats and lost workers.
- storage.py: journal file (default) or RDB URL; the budget lock.
- parent_run.py, report.py: the parent run and the study report logged on it.

Importing this package imports neither optuna nor mlflow; running a study does.
"""

from workbench.studies.comparison import Comparison
from workbench.studies.space import Categorical, Float, Int
from workbench.studies.study import Quick, Settings, Study, StudyResult

__all__ = ["Categorical", "Comparison", "Float", "Int", "Quick", "Settings", "Study", "StudyResult"]
