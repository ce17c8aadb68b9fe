"""The declarative study: base spec, search space, objective, seeds, budget; one `main()`.

    study = Study(
        name="lr-sweep", base="experiments/digits_mlp.toml",
        space={"optimizer.lr": Float(1e-4, 1e-1, log=True)},
        metric="val/accuracy", direction="maximize", seeds=3, n_trials=40,
        quick=Quick(n_trials=8, seeds=2, overrides={"training.epochs": 5}),
    )
    if __name__ == "__main__":
        study.main()        # python studies/lr_sweep.py [--n-trials N] [--workers K] [--quick] ...

Running the same command again resumes: trial numbers continue, and `n_trials` is the
*total* budget, counting the finished, pruned and failed trials already in the storage
(so `--n-trials 40` after 25 trials runs 15 more). A trial lost with its worker (killed,
out of memory, no heartbeat) is failed and retried; the retry takes its place in the budget.
Seeds, metric and direction are fixed when the study is created; `--quick` runs a
separate study named NAME-quick. `study.run(...)` is the same from Python.
"""

from __future__ import annotations

import difflib
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.errors import UserError
from workbench.spec import Spec, load_spec, spec_from_dict
from workbench.studies.space import Dimension, check_space
from workbench.studies.storage import StorageConfig, budget_lock, dashboard_command, resolve_storage

METRICS = ("val/accuracy", "val/loss", "val/r2", "train/loss", "test/accuracy", "test/loss", "test/r2")
PRUNERS, SAMPLERS = ("median", "hyperband", "none"), ("tpe", "random", "qmc")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
EXIT_OK, EXIT_NOTHING_COMPLETED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class Quick:
    """What `--quick` changes: the budget, the seeds and spec overrides (fewer epochs, less data).

    In a `Comparison`, `n_trials` is the tuning budget of each arm and `confirm_seeds` the fresh
    seeds each arm's best setting is retrained on."""

    n_trials: int
    seeds: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    confirm_seeds: int | None = None


@dataclass(frozen=True)
class Settings:
    """One invocation, resolved: what workers need besides the Study itself."""

    study_name: str
    base: Spec
    n_trials: int
    seeds: int
    workers: int
    storage: StorageConfig
    tracking_uri: str
    timeout: float | None = None
    sampler_seed: int = 0
    quiet: bool = False
    blas_threads: int | None = None  # per worker; None: cores // workers
    plots: bool = True  # the report's figures (`--no-plots`: tables only)
    arm: str = ""  # a comparison's arm these settings train (its base has the arm's values)
    confirm_seeds: int = 0  # a comparison's fresh seeds per arm

@dataclass
class StudyResult:
    study_name: str
    parent_run_id: str
    report: Any
    interrupted: bool
    settings: Settings

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if self.report.counts["COMPLETE"] else EXIT_NOTHING_COMPLETED


@dataclass
class Study:
    """A search over dotted spec keys of `base` (a TOML path, a dict or a Spec)."""

    name: str
    base: str | Path | dict | Spec
    space: dict[str, Dimension]
    metric: str = "val/accuracy"
    direction: str = "maximize"
    seeds: int = 3
    n_trials: int = 50
    pruner: Any = "median"  # "median" | "hyperband" | "none" | an optuna pruner
    sampler: Any = "tpe"  # "tpe" | "random" | an optuna sampler
    quick: Quick | None = None
    description: str = ""
    trial_plots: bool = False  # each trial's PNGs (seconds per trial); its statistics and curves are logged anyway
    stop_on: tuple[str, ...] = ("divergence", "exploding_gradients")  # live diagnosis verdicts that fail a trial
    trial_hooks: tuple[Callable[[], Any], ...] = ()  # hook makers (e.g. Hook classes): one new hook per seed run
    origin: str = field(default="", repr=False)  # the defining script: relative base paths start there

    def __post_init__(self) -> None:
        if not self.origin:
            caller = sys._getframe(2).f_code.co_filename  # 0 here, 1 the dataclass __init__, 2 the script
            self.origin = str(Path(caller).resolve()) if not caller.startswith("<") else ""

    # -- entry points ----------------------------------------------------------------------------
    def main(self, argv: list[str] | None = None) -> None:
        """The study script's command line; exits with 0, 1 (no trial completed), 2 (bad input) or 130."""
        sys.exit(self.cli(argv))

    def cli(self, argv: list[str] | None = None) -> int:
        prog = Path(self.origin).name if self.origin.endswith(".py") else self.name
        args = self.parser(prog).parse_args(argv)
        try:
            result = self.run(**vars(args))
        except UserError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        return result.exit_code

    def parser(self, prog: str):
        from workbench.studies.cli_args import build_parser

        return build_parser(prog, self.description or f"Optuna study {self.name}")

    def run(self, *, report_only: bool = False, register: str | None = None, **options) -> StudyResult:
        """Create or resume the study, run its remaining budget (none with `report_only`), report;
        with `register`, register the best trial's model as a new version of that registered model.

        `options` are those of `settings` (the command line's): n_trials, workers, storage,
        tracking_uri, seeds, study_name, timeout, quick, sampler_seed, heartbeat_interval,
        grace_period, quiet, blas_threads, plots.
        """
        if register is not None:
            from workbench.tracking.registry import check_model_name

            check_model_name(register)
        result = execute_study(self, self.settings(**options), report_only=report_only)
        if register is not None:
            from workbench.tracking.registry import register_study_best

            register_study_best(result.settings.tracking_uri, result.report, register)
        return result

    # -- resolution ----------------------------------------------------------------------------------
    def settings(self, *, n_trials: int | None = None, workers: int = 1, storage: str | None = None,
                 tracking_uri: str | None = None, seeds: int | None = None, study_name: str | None = None,
                 timeout: float | None = None, quick: bool = False, sampler_seed: int = 0,
                 heartbeat_interval: int = 10, grace_period: int = 60, quiet: bool = False,
                 blas_threads: int | None = None, plots: bool = True) -> Settings:
        """Validate everything the user gave (one-line UserError) before anything is created."""
        from workbench.tracking import resolve_tracking_uri

        self.check()
        if quick and self.quick is None:
            raise UserError(f"study {self.name} has no quick version (Study(quick=Quick(...)))")
        if blas_threads is not None and (not isinstance(blas_threads, int) or blas_threads < 1):
            raise UserError(f"blas_threads must be an integer >= 1, got {blas_threads!r}")
        q = self.quick if quick else None
        name = study_name or (f"{self.name}-quick" if q else self.name)
        if not NAME_PATTERN.match(name):
            raise UserError(f"study name {name!r}: use letters, digits, '.', '_', '-' and spaces")
        base = self.base_spec()
        base = base.with_overrides({**(q.overrides if q else {}), "name": name})
        check_metric_task(self.metric, base)
        check_space(self.space, base)
        tracking = resolve_tracking_uri(tracking_uri)
        return Settings(
            study_name=name, base=base,
            n_trials=n_trials or (q.n_trials if q else self.n_trials),
            seeds=seeds or (q.seeds if q and q.seeds else self.seeds),
            workers=workers,
            storage=resolve_storage(storage, tracking, workers=workers, heartbeat_interval=heartbeat_interval,
                                    grace_period=grace_period),
            tracking_uri=tracking, timeout=timeout, sampler_seed=sampler_seed, quiet=quiet,
            blas_threads=blas_threads, plots=plots,
        )

    def data_imports(self) -> tuple[str, ...]:
        """What loading the data of this study's trials imports: the base's source and any tuned over."""
        from workbench.data.loader import source_imports

        tuned = self.space.get("data.source")
        sources = {self.base_spec().data.source, *(getattr(tuned, "choices", ()))}
        return tuple(sorted({name for source in sources for name in source_imports(str(source))}))

    def base_spec(self) -> Spec:
        if isinstance(self.base, Spec):
            return self.base
        if isinstance(self.base, dict):
            return spec_from_dict(self.base)
        path = Path(self.base)
        if not path.is_absolute() and not path.exists() and self.origin:
            beside = Path(self.origin).parent / path
            path = beside if beside.exists() else path
        return load_spec(path)

    def check(self) -> None:
        from workbench.diagnose import VERDICTS

        if self.metric not in METRICS:
            match = difflib.get_close_matches(self.metric, METRICS, n=1)
            hint = f": did you mean '{match[0]}'?" if match else ""
            raise UserError(f"metric '{self.metric}' is not a run metric{hint} (allowed: {', '.join(METRICS)})")
        if self.direction not in ("maximize", "minimize"):
            raise UserError(f"direction '{self.direction}': use 'maximize' or 'minimize'")
        natural = "minimize" if self.metric.endswith("loss") else "maximize"
        if self.direction != natural:
            raise UserError(f"metric {self.metric} with direction '{self.direction}': a "
                            f"{'loss' if natural == 'minimize' else 'score'} is to {natural}")
        if isinstance(self.pruner, str) and self.pruner not in PRUNERS:
            raise UserError(f"pruner '{self.pruner}': use one of {', '.join(PRUNERS)} or an optuna pruner")
        if isinstance(self.sampler, str) and self.sampler not in SAMPLERS:
            raise UserError(f"sampler '{self.sampler}': use one of {', '.join(SAMPLERS)} or an optuna sampler")
        unknown = sorted(set(self.stop_on) - set(VERDICTS))
        if unknown:
            raise UserError(f"stop_on: unknown verdict(s) {', '.join(unknown)}; allowed: {', '.join(VERDICTS)}")
        if not isinstance(self.seeds, int) or self.seeds < 1 or not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise UserError(f"seeds and n_trials must be integers >= 1, got {self.seeds!r} and {self.n_trials!r}")

    # -- what execute_study asks of a study (a Comparison answers differently) ---------------------------
    def create_plan(self, settings: Settings, storage):
        """Under the budget lock: create or load the Optuna study, check it can be resumed; its plan."""
        import optuna

        from workbench.studies.workers import SearchPlan

        optuna_study = optuna.create_study(study_name=settings.study_name, storage=storage,
                                           direction=self.direction, load_if_exists=True)
        name_objective(optuna_study, self.metric)
        check_resumable(optuna_study, self, settings)
        return SearchPlan(self, settings, storage, optuna_study=optuna_study)

    def open_plan(self, settings: Settings, storage, worker_index: int):
        """A worker's plan: the stored study with this worker's sampler and the study's pruner."""
        from workbench.studies.workers import SearchPlan

        return SearchPlan(self, settings, storage, worker_index)

    def build_report(self, plan, settings: Settings, folder: Path):
        from workbench.studies.report import build_report

        return build_report(plan.optuna_study, self, settings, folder)

    def run_params(self, settings: Settings) -> dict[str, str]:
        """The parent run's params."""
        params = {"study.metric": self.metric, "study.direction": self.direction, "study.seeds": str(settings.seeds),
                  "study.pruner": _name(self.pruner), "study.sampler": _name(self.sampler)}
        params.update({f"space.{key}": dimension.describe() for key, dimension in self.space.items()})
        return params


def check_metric_task(metric: str, base: Spec) -> None:
    """val/accuracy needs a classification loss, val/r2 a regression one (the runs log one or the other)."""
    from workbench.spec.schema import CLASSIFICATION_LOSSES

    loss, split = base.training.loss, metric.partition("/")[0]
    if metric.endswith("/accuracy") and loss not in CLASSIFICATION_LOSSES:
        raise UserError(f'metric {metric} needs a classification run, but training.loss = "{loss}" is a '
                        f"regression loss: use {split}/r2 or {split}/loss")
    if metric.endswith("/r2") and loss in CLASSIFICATION_LOSSES:
        raise UserError(f'metric {metric} needs a regression run, but training.loss = "{loss}" is a '
                        f"classification loss: use {split}/accuracy or {split}/loss")


def execute_study(study: Study, settings: Settings, *, report_only: bool = False) -> StudyResult:
    """Create or load the study (a comparison: its arms) and its parent run, run the workers, then report."""
    import optuna

    from workbench.machine import cores
    from workbench.studies.lost_trials import reap_lost_trials, requeue_interrupted
    from workbench.studies.parent_run import ensure_parent_run, finish_parent_run
    from workbench.studies.storage import open_storage
    from workbench.studies.workers import blas_threads, run_workers, start_worker_server

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if settings.workers > 1 and not report_only:
        # before the stores open: forked from here, or its imports overlap opening them
        start_worker_server(study.data_imports())
    storage = open_storage(settings.storage)
    with budget_lock(settings.storage, settings.study_name):
        plan = study.create_plan(settings, storage)
        parent_run_id, created = ensure_parent_run(settings, study)
        for optuna_study in plan.studies():
            if settings.storage.kind == "journal":  # one machine: a running trial whose process is gone was lost
                # under the lock: no worker is between asking for a trial and claiming it (user attr `worker`)
                reap_lost_trials(optuna_study, settings, None, "worker lost: its process is gone", unclaimed=True)
            requeue_interrupted(optuna_study, settings.storage.max_retry)
    stored = plan.stored(report_only)
    if settings.workers > cores():
        print(f"workbench: warning: {settings.workers} workers on {cores()} cores: they will share cores",
              file=sys.stderr)
    if not settings.quiet:
        verb = "created" if created and not plan.done() else "resumed"
        print(f"study {settings.study_name} {verb}: {stored} on "
              f"{settings.workers} worker(s) x {blas_threads(settings)} BLAS thread(s); "
              f"{settings.seeds} seed(s) per trial; storage {settings.storage.shown()}; "
              f"MLflow {settings.tracking_uri} (parent run {parent_run_id})", file=sys.stderr, flush=True)
    interrupted = False if report_only else run_workers(study, settings, parent_run_id, plan)
    with tempfile.TemporaryDirectory(prefix="workbench-study-") as tmp:
        report = study.build_report(plan, settings, Path(tmp) / "report")
        finish_parent_run(settings, parent_run_id, report, "KILLED" if interrupted else "FINISHED")
    print(report.markdown)
    print(how_to_open(settings, parent_run_id))
    return StudyResult(settings.study_name, parent_run_id, report, interrupted, settings)


def name_objective(optuna_study, metric: str) -> None:
    """The objective's name in Optuna's storage (optuna-dashboard shows val/accuracy, not Objective 0)."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    if optuna_study.metric_names != [metric]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # stable in use since Optuna 3.2
            optuna_study.set_metric_names([metric])


def check_resumable(optuna_study, study: Study, settings: Settings) -> None:
    """A resumed study keeps its seeds, metric and direction; a new one records them."""
    attrs = optuna_study.user_attrs
    if "workbench.seeds" not in attrs:
        optuna_study.set_user_attr("workbench.seeds", settings.seeds)
        optuna_study.set_user_attr("workbench.metric", study.metric)
        optuna_study.set_user_attr("workbench.base_seed", settings.base.seed)
        optuna_study.set_user_attr("workbench.space", {k: d.describe() for k, d in study.space.items()})
        return
    if optuna_study.direction.name.lower() != study.direction:
        raise UserError(f"study {settings.study_name} in {settings.storage.shown()} was created to "
                        f"{optuna_study.direction.name.lower()}: choose a new --study-name")
    if attrs.get("workbench.metric") != study.metric:
        raise UserError(f"study {settings.study_name} optimizes {attrs.get('workbench.metric')}, not {study.metric}: "
                        "choose a new --study-name")
    if attrs["workbench.seeds"] != settings.seeds:
        raise UserError(f"study {settings.study_name} was created with --seeds {attrs['workbench.seeds']}: run it "
                        f"with --seeds {attrs['workbench.seeds']} or choose a new --study-name")


def how_to_open(settings: Settings, parent_run_id: str) -> str:
    from workbench.tracking.uri import resolve_tracking_uri

    default = settings.tracking_uri == resolve_tracking_uri(None)
    ui = "workbench ui" if default else f"workbench ui --tracking-uri {settings.tracking_uri}"
    runs = ("one child run per tuning trial and per confirmation run" if settings.confirm_seeds else
            "one child run per trial")
    return (f"Open the results:\n"
            f"  {ui}    # MLflow: experiment '{settings.study_name}', parent run {parent_run_id}, {runs}\n"
            f"  pip install optuna-dashboard && {dashboard_command(settings.storage)}    # Optuna dashboard")


def _name(value) -> str:
    return value if isinstance(value, str) else type(value).__name__
