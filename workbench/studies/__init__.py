"""Optuna studies over experiment specs, tracked in MLflow: one parent run, one child run per trial.

    from workbench.studies import Study, Quick, Categorical, Float, Int

    study = Study(name="init-vs-optimizer", base={...} or "experiments/x.toml",
                  space={"model.init": Categorical([...]), "optimizer.lr": Float(1e-4, 1e-1, log=True)},
                  metric="val/accuracy", direction="maximize", seeds=3, n_trials=60, pruner="median",
                  quick=Quick(n_trials=16, seeds=2, overrides={"training.epochs": 8}))
    if __name__ == "__main__":
        study.main()

- study.py: `Study` (the declaration, `main`, `run`), `Quick`, resuming rules.
- space.py: `Categorical`, `Float`, `Int`; checking keys and values against the spec.
- objective.py: one trial = one configuration over the seeds, one MLflow child run.
- workers.py: worker processes, the exact trial budget, heartbeats and lost workers.
- storage.py: journal file (default) or RDB URL; the budget lock.
- parent_run.py, report.py: the parent run and the study report logged on it.

Importing this package imports neither optuna nor mlflow; running a study does.
"""

from workbench.studies.space import Categorical, Float, Int
from workbench.studies.study import Quick, Settings, Study, StudyResult

__all__ = ["Categorical", "Float", "Int", "Quick", "Settings", "Study", "StudyResult"]
