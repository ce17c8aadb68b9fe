"""`workbench run SPEC`: train the model a spec describes and print the final metrics.

`workbench run --resume RUN_ID [--tracking-uri URI]` continues a stopped (KILLED or FAILED) tracked run
from the checkpoint of its last finished epoch, in the same MLflow run.
`--register NAME` registers the run's model (an MLflow Model) as a new version of NAME in the Model
Registry, tagged with the run's verdict and test metrics, when the run finishes.

A tracked run hands MLflow's side to a tracking agent (`workbench.tracking.agent`), a second process
started here, before the data are loaded: it imports MLflow and opens the store while this process
trains, and has everything in the store when the command returns. So that the two do not contend for a
core, a tracked run's BLAS uses one thread less than the machine's cores (`--blas-threads N` sets it;
the run's tag `workbench.blas_threads` says what it trained with).
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.cli.arg_types import positive_int
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
    p.add_argument("--no-plots", action="store_true",
                   help="log the run without its figures (plots/: about 2 s of CPU a run); the statistics they are "
                        "drawn from are logged all the same, and `workbench diagnose` still gives its verdict")
    p.add_argument("--register", metavar="NAME", default=None,
                   help="register the run's model in the MLflow Model Registry as a new version of NAME "
                        "(tagged with the verdict and test metrics) when the run finishes")
    p.add_argument("--blas-threads", type=positive_int, metavar="N", default=None,
                   help="BLAS threads of the training (default: every core, one less when tracked: the tracking "
                        "agent gets a core). The thread count can change the last bits of matrix products: give "
                        "the same N to runs that must agree bit for bit, tracked or not")
    p.add_argument("--json", action="store_true", help="print one JSON object with the outcome on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from workbench.machine import limit_blas_threads, training_blas_threads

    with limit_blas_threads(training_blas_threads(not args.no_track, args.blas_threads)):
        return _handle(args)


def _handle(args: argparse.Namespace) -> int:
    from workbench.errors import UserError
    from workbench.execute import execute
    from workbench.spec import load_spec

    progress = not args.quiet and is_interactive()
    options = {}
    if args.register is not None:
        from workbench.tracking.registry import check_model_name

        if args.no_track:
            raise UserError("--register registers the model of a tracked run: it cannot be combined with --no-track")
        options["register"] = check_model_name(args.register)
    if args.no_plots:
        if args.no_track:
            raise UserError("--no-plots leaves the figures out of a tracked run: it does nothing with --no-track")
        options["plots"] = False
    if args.resume is not None:
        if args.spec is not None or args.overrides:
            raise UserError("--resume continues a run with the spec it was started with: give no SPEC and no --set")
        if args.no_track:
            raise UserError("--resume continues a tracked run: it cannot be combined with --no-track")
        outcome = execute(resume_run_id=args.resume, tracking_uri=args.tracking_uri, progress=progress,
                          tracker_options=options or None)
    else:
        if args.spec is None:
            raise UserError("give a SPEC to run, e.g. `workbench run experiments/digits_mlp.toml`, "
                            "or --resume RUN_ID to continue a tracked run")
        spec = load_spec(args.spec, args.overrides)
        agent = None
        if not args.no_track:
            from workbench.tracking.agent import TrackingAgent

            agent = options["agent"] = TrackingAgent.launch(args.tracking_uri, plots=options.get("plots", True))
        try:
            outcome = execute(spec, track=not args.no_track, tracking_uri=args.tracking_uri,
                              progress=progress, spec_path=args.spec, tracker_options=options or None)
        finally:
            if agent is not None:
                agent.discard()
    if args.json:
        print(json.dumps(outcome.to_json()))
    else:
        print_metrics(outcome, sys.stdout)
    return outcome.exit_code
