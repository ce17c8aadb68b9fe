"""The command line every study script shares: `python studies/NAME.py [options]`."""

from __future__ import annotations

import argparse

from workbench.cli.arg_types import non_negative_int, positive_float, positive_int


def build_parser(prog: str, description: str, comparison: bool = False) -> argparse.ArgumentParser:
    budget = "each arm's" if comparison else "the study's"
    p = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog=f"Running the same command again resumes the study: --n-trials is {budget} total budget, "
               "counting the finished, pruned and failed trials already stored.",
    )
    p.add_argument("--n-trials", type=positive_int,
                   help="tuning trials of each arm (default: the script's)" if comparison else
                        "total trial budget of the study (default: the script's)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes on this machine (BLAS threads are split so workers x threads <= cores)")
    p.add_argument("--blas-threads", type=positive_int, metavar="N",
                   help="BLAS threads per worker (default: cores // workers). The thread count can change the "
                        "last bits of large matrix products: give the same N to runs that must agree bit for "
                        "bit whatever their --workers")
    p.add_argument("--storage", help="Optuna storage: a journal file (default: optuna.journal beside the MLflow "
                                     "store) or an RDB URL such as postgresql://user:password@host/db")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--seeds", type=positive_int, help="seeds per configuration (default: the script's)")
    p.add_argument("--study-name", help="study name, also the MLflow experiment (default: the script's; "
                                        "with --quick, NAME-quick)")
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                   help="ask for no new trial after this many seconds (running trials finish)")
    p.add_argument("--quick", action="store_true", help="the script's quick version: fewer epochs, trials, seeds")
    p.add_argument("--sampler-seed", type=non_negative_int, default=0, help="seed of the sampler (default 0)")
    p.add_argument("--heartbeat-interval", type=positive_int, default=10,
                   help="RDB storage: seconds between a worker's heartbeats (default 10)")
    p.add_argument("--grace-period", type=positive_int, default=60,
                   help="RDB storage: seconds without heartbeat before a trial is failed and retried (default 60)")
    p.add_argument("--report-only", action="store_true", help="run no trial: rebuild the report from the storage")
    p.add_argument("--register", metavar="NAME",
                   help="register the best trial's model in the MLflow Model Registry as a new version of NAME "
                        "(tagged with its verdict, test metrics and trial)")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines on stderr")
    p.add_argument("--no-plots", dest="plots", action="store_false",
                   help="the report without its figures (its tables, summary and CSVs are written all the same)")
    return p
