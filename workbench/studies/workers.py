"""Workers: processes that ask the storage for trials until the budget is spent.

Each worker loops: (fail stale trials) -> under the budget lock, ask the study's plan for the
next job (count and ask) -> run the trial with a heartbeat -> tell. A plain search's plan
(`SearchPlan`) has one Optuna study and one budget; a comparison's (`comparison.ComparisonPlan`)
one study and one budget per arm, plus its confirmation runs. The budget `n_trials` counts every trial in the storage
(running, finished, pruned, failed) except a trial lost with its worker and retried: its
retry counts instead. WAITING trials (retries, or trials enqueued by hand) always run, so a
lost trial is redone even when the budget is spent: N trials, plus one per lost trial.

`--workers K` starts K processes on this machine (forked from a fork server that imported what they need
once: forked itself from this process where that is safe, `fork_server`, else `worker_preload`; spawned
where there is none), each limited to cores // K BLAS threads (fewer where
OPENBLAS_NUM_THREADS or the like caps BLAS; `--blas-threads N`: N each). OpenBLAS may split a large matrix
product differently with another thread count, which changes the last bits of the result: runs with
different K agree bit for bit only with the same N (tests/test_determinism.py).
A worker that dies (SIGKILL, out of memory) is noticed here: its running trial is failed
with the reason and retried (`lost_trials`), and a replacement worker is started.
On a shared RDB, other machines' workers are covered by heartbeats instead: a worker whose
budget is spent waits for the others' running trials, so that it can retry one whose worker
stops beating for `grace_period` seconds.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.machine import BLAS_THREAD_VARIABLES, blas_thread_budget
from workbench.signals import interrupts_deferred
from workbench.studies.lost_trials import StaleTrialHandler, process_start_ticks, queue_retry, reap_lost_trials
from workbench.studies.objective import COMPLETE, PRUNED, run_trial
from workbench.studies.report import short_key
from workbench.studies.samplers import build_pruner, build_sampler
from workbench.studies.storage import budget_lock, open_storage
from workbench.tracking.tracker import take_held_back_interrupt

WAIT_FOR_STALE_S = 2.0
EXIT_INTERRUPTED = 130


def worker_id() -> str:
    """How a trial names its worker: host:pid (a lost worker's trials are found by it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def threads_per_worker(workers: int) -> int:
    """BLAS threads per worker so that workers x threads <= cores (or the environment's BLAS cap)."""
    return max(1, blas_thread_budget() // max(1, workers))


def blas_threads(settings) -> int:
    """BLAS threads per worker: `--blas-threads`, else cores // workers."""
    return getattr(settings, "blas_threads", None) or threads_per_worker(settings.workers)


# -- what a worker runs next ----------------------------------------------------------------------
@dataclass
class Job:
    """A trial a worker claimed: the Optuna study it belongs to, how to run it, how to print its outcome."""

    optuna_study: Any
    trial: Any
    run: Callable[[str | None, Any], Any]  # (parent_run_id, storage) -> TrialResult
    line: Callable[[Any], str]  # TrialResult -> the line printed on stderr
    stop_on_exhausted: bool = True  # a grid sampler's "stop" ends this worker (a plain search)


class SearchPlan:
    """A plain search: one Optuna study whose trials count against `n_trials`.

    A plan is what `work` asks for the next job (under the budget lock) and what the main process
    reaps lost trials in; a comparison has its own (`workbench.studies.comparison.ComparisonPlan`).
    """

    def __init__(self, study, settings, storage, worker_index: int | None = None, optuna_study=None) -> None:
        import optuna

        self.study, self.settings = study, settings
        self.optuna_study = optuna_study or optuna.load_study(study_name=settings.study_name, storage=storage,
                                                              pruner=build_pruner(study, settings))
        if worker_index is not None:
            self.optuna_study.sampler = build_sampler(study, settings, worker_index,
                                                      len(self.optuna_study.get_trials(deepcopy=False)))

    def studies(self) -> list:
        return [self.optuna_study]

    def next_job(self, deadline: float | None, heartbeat: bool):
        import optuna

        trial = next_trial(self.optuna_study, self.settings.n_trials, deadline, heartbeat)
        if not isinstance(trial, optuna.Trial):
            return trial
        study, settings = self.study, self.settings
        return Job(self.optuna_study, trial,
                   lambda parent_run_id, storage: run_trial(trial, study, settings, parent_run_id, storage),
                   lambda result: trial_line(trial, result, settings, study))

    def has_work(self) -> bool:
        return has_work(self.optuna_study, self.settings)

    def done(self) -> int:
        return budget_used(self.optuna_study.get_trials(deepcopy=False))

    def stored(self, report_only: bool) -> str:
        done = self.done()
        todo = 0 if report_only else max(0, self.settings.n_trials - done)
        return f"{done} of {self.settings.n_trials} trials stored, {todo} to run"


# -- one worker --------------------------------------------------------------------------------
def next_trial(study, n_trials: int, deadline: float | None, heartbeat: bool):
    """Under the budget lock: a new Trial, "wait" (others' trials may still need a retry) or None."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    if optuna.trial.TrialState.WAITING in states:
        return study.ask()
    if deadline is not None and time.monotonic() >= deadline:
        return None
    if budget_used(trials) < n_trials:
        return study.ask()
    if heartbeat and optuna.trial.TrialState.RUNNING in states:
        return "wait"
    return None


def budget_used(trials) -> int:
    """Trials that count against n_trials: all of them but those lost with their worker and retried."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return sum(t.number not in retried for t in trials)


class Heartbeat:
    """Records the trial's heartbeat every interval in a thread (RDB storages with heartbeats)."""

    def __init__(self, storage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.thread = threading.Thread(target=self._beat, args=(interval,), daemon=True) if interval else None

    def _beat(self, interval: float) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(interval):
                return

    def __enter__(self):
        if self.thread is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


def work(study, settings, worker_index: int, parent_run_id: str | None, threads: int | None = None) -> int:
    """Run trials until the budget (or timeout) is spent; returns how many this worker ran."""
    import optuna
    from threadpoolctl import threadpool_limits

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    limiter = threadpool_limits(limits=threads) if threads else contextlib.nullcontext()
    stale = StaleTrialHandler(settings, f"no heartbeat for {settings.storage.grace_period} s")
    storage = open_storage(settings.storage, stale)
    plan = study.open_plan(settings, storage, worker_index)
    deadline = time.monotonic() + settings.timeout if settings.timeout else None
    take_held_back_interrupt()  # one held back by an earlier run of this process is not this study's
    ran = 0
    with limiter:
        while True:
            if settings.storage.heartbeat:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for optuna_study in plan.studies():
                        optuna.storages.fail_stale_trials(optuna_study)
            with budget_lock(settings.storage, settings.study_name):
                job = plan.next_job(deadline, settings.storage.heartbeat)
                if isinstance(job, Job):
                    trial = job.trial
                    trial.set_user_attr("worker", worker_id())  # before any work: a lost worker's trial is found
                    trial.set_user_attr("worker_started", process_start_ticks(os.getpid()))  # tells a reused pid
                    trial.set_user_attr("blas_threads", threads)  # the last bits of large products depend on it
            if job is None:
                return ran
            if job == "wait":
                time.sleep(min(WAIT_FOR_STALE_S, settings.storage.heartbeat_interval))
                continue
            with Heartbeat(storage, trial._trial_id):
                try:
                    result = job.run(parent_run_id, storage)
                except KeyboardInterrupt:  # failed as "interrupted", and queued again for the next launch
                    with interrupts_deferred(), contextlib.suppress(Exception):  # a second signal cannot split the two
                        job.optuna_study.tell(trial, state=optuna.trial.TrialState.FAIL)
                        queue_retry(job.optuna_study, storage.get_trial(trial._trial_id), settings.storage.max_retry)
                    raise
            ran += 1
            stop = tell(job.optuna_study, trial, result)
            if not settings.quiet:
                print(job.line(result), file=sys.stderr, flush=True)
            if take_held_back_interrupt():  # Ctrl-C came while the trial's run was saved: it is stored, now stop
                raise KeyboardInterrupt("interrupted while a trial's run was saved")
            if stop and job.stop_on_exhausted:
                return ran


def tell(optuna_study, trial, result) -> bool:
    """Store the trial's outcome; True when the sampler asks the study to stop (a grid is exhausted)."""
    import optuna

    state = {COMPLETE: optuna.trial.TrialState.COMPLETE, PRUNED: optuna.trial.TrialState.PRUNED}.get(
        result.state, optuna.trial.TrialState.FAIL)
    try:
        optuna_study.tell(trial, result.value if result.state == COMPLETE else None, state=state)
    except ValueError as exc:  # "Cannot tell a FAIL trial": another worker failed it (missed heartbeats)
        print(f"workbench: warning: trial {trial.number}: {exc} (failed as stale by another worker; "
              "its retry will run)", file=sys.stderr, flush=True)
    except RuntimeError as exc:  # GridSampler calls study.stop(), which only works inside study.optimize;
        if "Study.stop" not in str(exc):  # the outcome is stored before (tell saves it in a finally)
            raise
        return True
    return False


def trial_line(trial, result, settings, study) -> str:
    arm = f"{settings.arm}  " if getattr(settings, "arm", "") else ""
    params = "  ".join(f"{short_key(k, trial.params)}={_short(v)}" for k, v in trial.params.items())
    if result.state == COMPLETE:
        spread = f" ± {result.std:.3g}" if len(result.values) > 1 else ""
        outcome = f"{study.metric} {result.value:.4g}{spread} over {len(result.values)} seed(s)"
    else:
        outcome = f"{result.state.lower()}: {result.reason}"
    return f"{arm}trial {trial.number}  {params}  -> {outcome}  ({result.seconds:.1f} s)"


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# -- K workers on this machine -------------------------------------------------------------------
def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _worker_entry(study, settings, worker_index: int, parent_run_id: str | None, threads: int,
                  environment: dict | None = None, interrupts: bool = True) -> None:
    if environment is not None:  # forked from the fork server: the main process's environment now, not its own
        os.environ.clear()
        os.environ.update(environment)
    signal.signal(signal.SIGINT, signal.default_int_handler if interrupts else signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        work(study, settings, worker_index, parent_run_id, threads)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


def run_workers(study, settings, parent_run_id: str | None, plan) -> bool:
    """Run the workers to the end of the budget; returns True when interrupted. `plan`: the main
    process's view of the study (`SearchPlan` or a comparison's plan), to reap a dead worker's trials."""
    if settings.workers == 1:
        try:
            work(study, settings, 0, parent_run_id, blas_threads(settings))
        except KeyboardInterrupt:
            return True
        return False
    threads = blas_threads(settings)
    context = worker_context(study.data_imports())  # the preloads `start_worker_server` gave it
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in BLAS_THREAD_VARIABLES})  # children load BLAS with this limit
    processes: list = []
    replacements, next_index = settings.workers, settings.workers

    def forward_sigterm(signum, frame):  # `kill MAIN` stops the workers too (Ctrl-C reaches them by itself)
        for p in processes:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, forward_sigterm) if _main_thread() else None
    try:
        for index in range(settings.workers):
            processes.append(_start(context, study, settings, index, parent_run_id, threads))
        while any(p.is_alive() for p in processes):
            for p in list(processes):
                p.join(timeout=0.2)
                if p.exitcode is None or p.exitcode in (0, EXIT_INTERRUPTED):
                    continue
                processes.remove(p)
                for optuna_study in plan.studies():
                    reap_lost_trials(optuna_study, settings, {p.pid}, f"worker process died (exit code {p.exitcode})")
                if replacements > 0 and plan.has_work():
                    replacements, next_index = replacements - 1, next_index + 1
                    processes.append(_start(context, study, settings, next_index, parent_run_id, threads))
        interrupted = any(p.exitcode == EXIT_INTERRUPTED for p in processes)
    except KeyboardInterrupt:  # the workers got the signal too; one saving a run stops once the run is saved
        for timeout, stop in ((30, "terminate"), (15, "kill"), (None, None)):
            for p in processes:
                p.join(timeout)
                if stop and p.is_alive():
                    getattr(p, stop)()
        interrupted = True
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return interrupted


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def worker_context(also: tuple[str, ...] = ()):
    """Where workers come from: a fork server that imported what they need once (`worker_preload`, and `also`),
    where the platform has one; else spawn (each worker imports everything itself)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["workbench.studies.worker_preload", *also])
    return context


def start_worker_server(also: tuple[str, ...] = ()) -> None:
    """Start the fork server now, with `also` imported (what the study's data needs: scikit-learn's data sets
    cost each worker 2 s otherwise): forked from this process where that is safe (`fork_server`), else a new
    interpreter whose imports overlap this process's own start (stores, plan)."""
    context = worker_context(also)
    if context.get_start_method() == "forkserver":
        with contextlib.suppress(Exception):  # then it starts with the first worker, or spawn takes over
            from multiprocessing import forkserver

            from workbench.studies.fork_server import fork_server_from_here

            if not fork_server_from_here(also):
                forkserver.ensure_running()


def _start(context, study, settings, index, parent_run_id, threads):
    # The environment as it is now (the fork server's is from when it started) and whether Ctrl-C interrupts
    # (a study started with SIGINT ignored, like `nohup`, keeps its workers deaf to it, as spawn did).
    interrupts = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    args = (study, settings, index, parent_run_id, threads, dict(os.environ), interrupts)
    try:
        process = context.Process(target=_worker_entry, args=args, name=f"study-worker-{index}")
        process.start()
    except OSError:  # no fork server here after all (a socket refused): spawn
        if context.get_start_method() == "spawn":
            raise
        process = multiprocessing.get_context("spawn").Process(target=_worker_entry, args=args,
                                                               name=f"study-worker-{index}")
        process.start()
    return process


def has_work(optuna_study, settings) -> bool:
    import optuna

    trials = optuna_study.get_trials(deepcopy=False)
    return budget_used(trials) < settings.n_trials or any(t.state == optuna.trial.TrialState.WAITING for t in trials)
