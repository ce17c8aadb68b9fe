"""Comparison studies: each combination of the compared factors is an arm, each arm tuned with the same
budget, its best setting confirmed on fresh seeds and scored on the test split.

    comparison = Comparison(
        name="init-vs-optimizer", base="experiments/digits_mlp.toml",
        compare={"model.init": ["xavier_normal", "he_normal"], "optimizer.name": ["sgd", "adam"]},
        tune={"optimizer.lr": Float(1e-4, 0.5, log=True)},
        metric="val/accuracy", seeds=2, trials_per_arm=8, confirm_seeds=5,
        quick=Quick(n_trials=3, seeds=1, confirm_seeds=3, overrides={"training.epochs": 6}))
    if __name__ == "__main__":
        comparison.main()    # python studies/x.py [--n-trials PER_ARM] [--confirm-seeds C] [--workers K] ...

Why. A search over init x optimizer x lr with one sampler spends its budget where it already found
good results and then ranks the best of 8 trials against the best of 1. Rankings of optimizers flip
with the tuning protocol (Choi et al. 2019, "On empirical comparisons of optimizers for deep
learning"; Sivaprasad et al. 2020, "Optimizer benchmarking needs to account for hyperparameter
tuning"); Schmidt, Schneider & Hennig (2021, "Descending through a crowded valley") tune every
optimizer with the same budget and report the spread over seeds. So:

1. Tuning. Every arm gets the same budget: `trials_per_arm` trials (completed + pruned + failed; a
   trial lost with its worker is replaced by its retry), each over `seeds` seeds and
   `training.epochs` epochs, with the same sampler over the tuned keys. Each arm is its own Optuna
   study, "NAME arm LABEL": its sampler and its pruner see only its own trials, so an arm is neither
   starved by the sampler nor pruned for being worse than another arm. The budget is counted from
   the storage under the study's budget lock, so K workers and any number of resumes give every arm
   exactly its budget. The default sampler, "qmc", gives trial i of every arm the same i-th Sobol
   point: arms are compared at the same learning rates.
2. Confirmation. When an arm's tuning is done, its best trial's setting is trained again on
   `confirm_seeds` fresh seeds (base seed + 1000 + j; tuning used base seed + k, k < seeds) and
   scored on `score` (default: the metric on the test split). Tuning reads only `metric`, a
   validation metric, so the best-of-N tuning value, which is optimistic, never ranks the arms.
   Each confirmation run is a trial of the study "NAME confirmation" (workers, retries and resume
   as for tuning) and one MLflow child run (tag workbench.role = confirmation).
3. Report (`comparison_report`): per arm the confirmed score's mean and 95% Student t interval
   over the fresh seeds, the tuned values, the tuning trials completed, pruned and failed, the
   median first-to-last layer gradient ratio and the diagnosis verdicts of the confirmed runs;
   each arm tested against the best (Welch t-test), Holm-adjusted over the comparisons: an arm
   not significantly different is tied with the best. An arm none of whose tuning trials completed
   is reported with its failures and verdicts (it is a result).

Why one Optuna study per arm rather than one study with the arm as a fixed parameter: Optuna's
samplers and pruners read the trials of their study, so one study per arm gives each arm stock
TPE / Sobol / median pruning restricted to its own trials with no filtering code, and an arm's
budget is simply the number of trials in its study. The arms share one parent MLflow run, one
experiment and one budget lock.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import UserError
from workbench.studies.space import Categorical, check_space, label
from workbench.studies.study import Settings, Study, check_metric_task, name_objective

CONFIRM_SEED_OFFSET = 1000  # confirmation seed j = base seed + 1000 + j; tuning seeds are base seed + k, k < 1000
ROLE_CONFIRMATION = "confirmation"
ARM_SEPARATOR = "+"


def confirmation_seed(base_seed: int, index: int) -> int:
    return base_seed + CONFIRM_SEED_OFFSET + index


def default_score(metric: str) -> str:
    """The metric on the test split: val/accuracy -> test/accuracy, train/loss -> test/loss."""
    return "test/" + metric.partition("/")[2]


@dataclass(frozen=True)
class Arm:
    """One combination of the compared factors' values."""

    index: int
    values: dict
    label: str  # "he_normal+adam"


def arm_study_name(study_name: str, arm: Arm) -> str:
    return f"{study_name} arm {arm.label}"


def confirmation_study_name(study_name: str) -> str:
    return f"{study_name} confirmation"


def arm_settings(settings: Settings, arm: Arm) -> Settings:
    """The settings an arm's trials run with: the base spec with the arm's values."""
    return dataclasses.replace(settings, base=settings.base.with_overrides(arm.values), arm=arm.label)


@dataclass(init=False, eq=False)
class Comparison(Study):
    """Compared factors (`compare`, every combination an arm) apart from tuned keys (`tune`).

    `trials_per_arm` (`--n-trials`) is each arm's tuning budget, `seeds` the seeds per tuning trial,
    `confirm_seeds` (`--confirm-seeds`) the fresh seeds each arm's best setting is retrained on.
    """

    compare: dict = field(default_factory=dict)
    confirm_seeds: int = 5
    score: str = ""

    def __init__(self, *, name: str, base, compare: dict, tune: dict, metric: str = "val/accuracy",
                 direction: str = "maximize", seeds: int = 2, trials_per_arm: int = 8, confirm_seeds: int = 5,
                 score: str | None = None, pruner: Any = "median", sampler: Any = "qmc", quick=None,
                 description: str = "", trial_plots: bool = False,
                 stop_on: tuple[str, ...] = ("divergence", "exploding_gradients"), trial_hooks: tuple = (),
                 origin: str = "") -> None:
        if not origin:
            caller = sys._getframe(1).f_code.co_filename
            origin = str(Path(caller).resolve()) if not caller.startswith("<") else ""
        super().__init__(name=name, base=base, space=dict(tune), metric=metric, direction=direction, seeds=seeds,
                         n_trials=trials_per_arm, pruner=pruner, sampler=sampler, quick=quick,
                         description=description, trial_plots=trial_plots, stop_on=tuple(stop_on),
                         trial_hooks=tuple(trial_hooks), origin=origin)
        self.compare = {key: value if isinstance(value, Categorical) else Categorical(list(value))
                        for key, value in dict(compare).items()}
        self.confirm_seeds = confirm_seeds
        self.score = score or default_score(metric)

    @property
    def tune(self) -> dict:
        return self.space

    @property
    def trials_per_arm(self) -> int:
        return self.n_trials

    @property
    def score_direction(self) -> str:
        return "minimize" if self.score.endswith("loss") else "maximize"

    def arms(self) -> list[Arm]:
        """Every combination of the compared values, labelled "he_normal+adam" (words stand alone; a number or
        a flag says which key it sets: "batch_norm=True+early_stopping.enabled=False")."""
        from workbench.studies.report import short_key

        keys = list(self.compare)
        combos = itertools.product(*(self.compare[k].checked_values() for k in keys))

        def part(key, value) -> str:
            return label(value) if isinstance(value, str) else f"{short_key(key, keys)}={label(value)}"

        return [Arm(i, dict(zip(keys, values)), ARM_SEPARATOR.join(part(k, v) for k, v in zip(keys, values)))
                for i, values in enumerate(combos)]

    # -- resolution ----------------------------------------------------------------------------------
    def parser(self, prog: str):
        from workbench.cli.arg_types import positive_int
        from workbench.studies.cli_args import build_parser

        parser = build_parser(prog, self.description or f"Comparison study {self.name}", comparison=True)
        parser.add_argument("--confirm-seeds", type=positive_int, metavar="C",
                            help="fresh seeds each arm's best setting is retrained on (default: the script's)")
        return parser

    def settings(self, *, confirm_seeds: int | None = None, **options) -> Settings:
        settings = super().settings(**options)
        q = self.quick if options.get("quick") else None
        confirm = confirm_seeds or (q.confirm_seeds if q is not None and q.confirm_seeds else self.confirm_seeds)
        self.check_comparison(settings, confirm)
        return dataclasses.replace(settings, confirm_seeds=confirm)

    def check_comparison(self, settings: Settings, confirm_seeds: int) -> None:
        from workbench.studies.study import METRICS

        if not self.compare:
            raise UserError("a comparison needs compared factors, e.g. compare={'optimizer.name': ['sgd', 'adam']}; "
                            "a study that only optimizes is a Study")
        overlap = sorted(set(self.compare) & set(self.space))
        if overlap:
            raise UserError(f"{', '.join(overlap)}: a key is either compared or tuned, not both")
        try:
            check_space(self.compare, settings.base)
        except UserError as exc:
            raise UserError(str(exc).replace("search space", "compared factor", 1)) from None
        for arm in self.arms():
            try:
                settings.base.with_overrides(arm.values)
            except UserError as exc:
                raise UserError(f"arm {arm.label}: {exc}") from None
        if self.metric.startswith("test/"):
            raise UserError(f"metric {self.metric}: tuning must not read the test split; tune on a val/ metric "
                            f"(the comparison scores the test split itself, score={self.score!r})")
        if self.score not in METRICS or not self.score.startswith("test/"):
            raise UserError(f"score {self.score!r}: confirmation runs are scored on the test split "
                            "(test/accuracy, test/loss or test/r2)")
        check_metric_task(self.score, settings.base)
        if not isinstance(confirm_seeds, int) or confirm_seeds < 1:
            raise UserError(f"confirm_seeds must be an integer >= 1, got {confirm_seeds!r}")
        if settings.seeds >= CONFIRM_SEED_OFFSET:
            raise UserError(f"--seeds {settings.seeds}: a comparison keeps seeds base + {CONFIRM_SEED_OFFSET} "
                            f"and up for confirmation; use fewer than {CONFIRM_SEED_OFFSET} tuning seeds")

    # -- what execute_study asks of a study ---------------------------------------------------------
    def create_plan(self, settings: Settings, storage):
        from workbench.studies.study import check_resumable

        plan = ComparisonPlan(self, settings, storage, create=True)
        for arm in plan.arms:
            check_resumable(plan.arm_studies[arm.label], self, plan.arm_settings[arm.label])
        attrs = plan.confirm_study.user_attrs
        if "workbench.score" not in attrs:
            plan.confirm_study.set_user_attr("workbench.score", self.score)
            plan.confirm_study.set_user_attr("workbench.compare", {k: c.describe() for k, c in self.compare.items()})
            plan.confirm_study.set_user_attr("workbench.confirm_seed_offset", CONFIRM_SEED_OFFSET)
        elif attrs["workbench.score"] != self.score:
            raise UserError(f"comparison {settings.study_name} is scored on {attrs['workbench.score']}, not "
                            f"{self.score}: choose a new --study-name")
        return plan

    def open_plan(self, settings: Settings, storage, worker_index: int):
        return ComparisonPlan(self, settings, storage, worker_index=worker_index)

    def build_report(self, plan, settings: Settings, folder: Path):
        from workbench.studies.comparison_report import build_comparison_report

        return build_comparison_report(plan, self, settings, folder)

    def run_params(self, settings: Settings) -> dict[str, str]:
        params = super().run_params(settings)
        params.update({f"compare.{key}": c.describe() for key, c in self.compare.items()})
        params.update({"comparison.arms": str(len(self.arms())), "comparison.trials_per_arm": str(settings.n_trials),
                       "comparison.confirm_seeds": str(settings.confirm_seeds), "comparison.score": self.score})
        return params


# -- the workers' side: which trial next, with exact budgets per arm --------------------------------
@dataclass
class ArmState:
    trials: list
    used: int  # trials counting against the budget (running and waiting included; a lost trial's retry replaces it)
    running: int
    waiting: int


def arm_state(trials) -> ArmState:
    from workbench.studies.workers import budget_used

    return ArmState(trials, budget_used(trials), sum(t.state.name == "RUNNING" for t in trials),
                    sum(t.state.name == "WAITING" for t in trials))


def best_trial(trials, maximize: bool):
    """The arm's best completed tuning trial (ties: the earlier one); None when none completed."""
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if not complete:
        return None
    return min(complete, key=lambda t: (-t.value if maximize else t.value, t.number))


class ComparisonPlan:
    """The arms' Optuna studies and the confirmation study; what a worker does next (under the lock):

    1. a retry waiting in an arm (a trial lost with its worker, or interrupted);
    2. a confirmation run: arms whose tuning is done get theirs enqueued (one per fresh seed), and the
       oldest waiting one runs;
    3. a tuning trial of an arm with budget left: the arm with the fewest running trials, then the
       first in order, so K workers tune K arms side by side and arms are finished (and confirmed) early;
    4. otherwise wait while another worker's tuning trial may still lead to confirmations, or stop.
    After `--timeout` nothing new starts (no new tuning trial, no new confirmation enqueued); waiting
    trials still run.
    """

    def __init__(self, comparison: Comparison, settings: Settings, storage, *, worker_index: int | None = None,
                 create: bool = False) -> None:
        import optuna

        from workbench.studies.samplers import build_pruner, build_sampler

        self.comparison, self.settings = comparison, settings
        self.arms = comparison.arms()
        self.arm_settings = {arm.label: arm_settings(settings, arm) for arm in self.arms}

        def load(name: str, direction: str, pruner, metric: str):
            if create:
                created = optuna.create_study(study_name=name, storage=storage, direction=direction, pruner=pruner,
                                              load_if_exists=True)
                name_objective(created, metric)
                return created
            return optuna.load_study(study_name=name, storage=storage, pruner=pruner)

        self.arm_studies = {}
        for arm in self.arms:
            arm_setting = self.arm_settings[arm.label]
            study = load(arm_study_name(settings.study_name, arm), comparison.direction,
                         build_pruner(comparison, arm_setting), comparison.metric)
            if worker_index is not None:
                study.sampler = build_sampler(comparison, arm_setting, worker_index,
                                              len(study.get_trials(deepcopy=False)))
            self.arm_studies[arm.label] = study
        self.confirm_study = load(confirmation_study_name(settings.study_name), comparison.score_direction,
                                  optuna.pruners.NopPruner(), comparison.score)
        self.confirm_study.sampler = optuna.samplers.RandomSampler(seed=0)  # no parameters: nothing to sample

    def studies(self) -> list:
        return [*self.arm_studies.values(), self.confirm_study]

    def states(self) -> dict[str, ArmState]:
        return {arm.label: arm_state(self.arm_studies[arm.label].get_trials(deepcopy=False)) for arm in self.arms}

    def tuned(self, state: ArmState) -> bool:
        """The arm's tuning budget is spent and nothing of it runs or waits."""
        return state.used >= self.settings.n_trials and not state.running and not state.waiting

    def missing_confirmations(self, states: dict[str, ArmState], confirm_trials) -> list[dict]:
        """Confirmation jobs (user attributes) of tuned arms that are not stored yet."""
        present = {(t.user_attrs.get("arm"), t.user_attrs.get("best_trial"), t.user_attrs.get("seed"))
                   for t in confirm_trials}
        maximize = self.comparison.direction == "maximize"
        jobs = []
        for arm in self.arms:
            state = states[arm.label]
            best = best_trial(state.trials, maximize) if self.tuned(state) else None
            if best is None:
                continue
            base_seed = self.arm_settings[arm.label].base.seed
            for j in range(self.settings.confirm_seeds):
                seed = confirmation_seed(base_seed, j)
                if (arm.label, best.number, seed) not in present:
                    jobs.append({"arm": arm.label, "values": arm.values, "best_trial": best.number,
                                 "params": dict(best.params), "tuning_value": best.value, "seed": seed,
                                 "seed_index": j, "tuning_seeds": best.user_attrs.get("seeds")})
        return jobs

    def next_job(self, deadline: float | None, heartbeat: bool):
        past = deadline is not None and time.monotonic() >= deadline
        states = self.states()
        for arm in self.arms:  # 1. retries
            if states[arm.label].waiting:
                return self._tuning_job(arm)
        confirm_trials = self.confirm_study.get_trials(deepcopy=False)
        jobs = [] if past else self.missing_confirmations(states, confirm_trials)
        for job in jobs:  # 2. confirmations
            self.confirm_study.enqueue_trial({}, user_attrs=job)
        if jobs or any(t.state.name == "WAITING" for t in confirm_trials):
            return self._confirmation_job()
        if not past:  # 3. tuning
            open_arms = [arm for arm in self.arms if states[arm.label].used < self.settings.n_trials]
            if open_arms:
                return self._tuning_job(min(open_arms, key=lambda arm: (states[arm.label].running, arm.index)))
        tuning_runs = any(state.running for state in states.values())
        confirm_runs = any(t.state.name == "RUNNING" for t in confirm_trials)
        if (tuning_runs and not past) or (heartbeat and (tuning_runs or confirm_runs)):
            return "wait"  # 4.
        return None

    def _tuning_job(self, arm: Arm):
        from workbench.studies.objective import run_trial
        from workbench.studies.workers import Job, trial_line

        study, settings, comparison = self.arm_studies[arm.label], self.arm_settings[arm.label], self.comparison
        trial = study.ask()
        return Job(study, trial, lambda parent_run_id, storage: run_trial(trial, comparison, settings, parent_run_id,
                                                                          storage),
                   lambda result: trial_line(trial, result, settings, comparison), stop_on_exhausted=False)

    def _confirmation_job(self):
        from workbench.studies.confirm import confirmation_line, run_confirmation
        from workbench.studies.workers import Job

        trial = self.confirm_study.ask()
        comparison, settings = self.comparison, self.settings
        return Job(self.confirm_study, trial,
                   lambda parent_run_id, storage: run_confirmation(trial, comparison, settings, parent_run_id, storage),
                   lambda result: confirmation_line(trial, result, comparison), stop_on_exhausted=False)

    def has_work(self) -> bool:
        states = self.states()
        confirm_trials = self.confirm_study.get_trials(deepcopy=False)
        return (any(s.waiting or s.used < self.settings.n_trials for s in states.values())
                or any(t.state.name == "WAITING" for t in confirm_trials)
                or bool(self.missing_confirmations(states, confirm_trials)))

    def done(self) -> int:
        return sum(s.used for s in self.states().values()) + len(self.confirm_study.get_trials(deepcopy=False))

    def stored(self, report_only: bool) -> str:
        states = self.states()
        n, c, arms = self.settings.n_trials, self.settings.confirm_seeds, len(self.arms)
        used = sum(min(s.used, n) for s in states.values())
        confirmed = sum(t.state.name == "COMPLETE" for t in self.confirm_study.get_trials(deepcopy=False))
        todo = 0 if report_only else sum(max(0, n - s.used) for s in states.values())
        keys = " x ".join(self.comparison.compare)
        return (f"{arms} arms ({keys}), each {n} tuning trial(s) then {c} confirmation seed(s); "
                f"{used} of {arms * n} tuning trials and {confirmed} confirmation runs stored, "
                f"{todo} tuning trial(s) to run")
