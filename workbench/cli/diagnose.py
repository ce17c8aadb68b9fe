"""`workbench diagnose RUN_ID|latest`: verdicts on a tracked run, with evidence and advice."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose", help="diagnose a run: vanishing/exploding gradients, dead or saturated units, learning rate, ...",
        description="Reads a run's statistics (stats/record.npz) from MLflow, prints the verdicts with their "
                    "evidence and advice, and logs diagnosis.json, plots/diagnosis.png and the tag "
                    "workbench.verdict on the run. Exit code 0 whatever the verdict.",
    )
    p.add_argument("run", metavar="RUN_ID|latest",
                   help="an MLflow run id, `latest` (the most recent run), or a saved statistics .npz file")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", default=None, metavar="NAME",
                   help="with `latest`: the latest run of this experiment")
    p.add_argument("--json", action="store_true", help="print one JSON object (verdict, run_id, findings) on stdout")
    p.add_argument("--no-log", action="store_true", help="only print: leave the run's artifacts and tags as they are")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from workbench.diagnose import diagnose_record
    from workbench.tracking.diagnosis import diagnose_run

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one download: no bar on stderr

    if args.run.endswith(".npz") and Path(args.run).is_file():
        from workbench.monitor import load_record

        diagnosis = diagnose_record(load_record(args.run))
    else:
        diagnosis = diagnose_run(args.run, tracking_uri=args.tracking_uri, experiment=args.experiment,
                                 log=not args.no_log)
    if args.json:
        print(diagnosis.dumps())
    else:
        print(diagnosis.report())
    sys.stdout.flush()
    return 0
