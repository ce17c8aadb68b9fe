"""`workbench run SPEC`: train the model a spec describes and print the final metrics.

`workbench run --resume RUN_ID [--tracking-uri URI]` continues a stopped (KILLED or FAILED) tracked run
from the checkpoint of its last finished epoch, in the same MLflow run.
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.cli.output import is_interactive, print_metrics


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train the model described by a TOML spec")
    p.add_argument("spec", nargs="?", default=None, help="experiment spec, e.g. experiments/digits_mlp.toml")
    p.add_argument("--resume", metavar="RUN_ID", default=None,
                   help="continue the tracked run RUN_ID from its last checkpoint (instead of SPEC)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key with a TOML value, e.g. --set optimizer.lr=0.01 (repeatable)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--json", action="store_true", help="print one JSON object with the outcome on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from workbench.execute import execute
    from workbench.spec import load_spec

    from workbench.errors import UserError

    progress = not args.quiet and is_interactive()
    if args.resume is not None:
        if args.spec is not None or args.overrides:
            raise UserError("--resume continues a run with the spec it was started with: give no SPEC and no --set")
        if args.no_track:
            raise UserError("--resume continues a tracked run: it cannot be combined with --no-track")
        outcome = execute(resume_run_id=args.resume, tracking_uri=args.tracking_uri, progress=progress)
    else:
        if args.spec is None:
            raise UserError("give a SPEC to run, e.g. `workbench run experiments/digits_mlp.toml`, "
                            "or --resume RUN_ID to continue a tracked run")
        spec = load_spec(args.spec, args.overrides)
        outcome = execute(spec, track=not args.no_track, tracking_uri=args.tracking_uri,
                          progress=progress, spec_path=args.spec)
    if args.json:
        print(json.dumps(outcome.to_json()))
    else:
        print_metrics(outcome, sys.stdout)
    return outcome.exit_code
