"""`workbench run SPEC`: train the model a spec describes and print the final metrics."""

from __future__ import annotations

import argparse
import json
import sys

from workbench.cli.output import is_interactive, print_metrics


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train the model described by a TOML spec")
    p.add_argument("spec", help="experiment spec, e.g. experiments/digits_mlp.toml")
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

    spec = load_spec(args.spec, args.overrides)
    outcome = execute(
        spec, track=not args.no_track, tracking_uri=args.tracking_uri,
        progress=not args.quiet and is_interactive(), spec_path=args.spec,
    )
    if args.json:
        print(json.dumps(outcome.to_json()))
    else:
        print_metrics(outcome, sys.stdout)
    return outcome.exit_code
