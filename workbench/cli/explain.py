"""`workbench explain RUN_ID|latest|MODEL.npz`: attributions, feature and unit importance of a trained model."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from workbench.explain.api import DEFAULT_SAMPLES
    from workbench.explain.attributions import DEFAULT_MAX_STEPS, DEFAULT_STEPS, METHODS

    p = sub.add_parser(
        "explain", help="explain a trained model: input attributions, feature and unit importance",
        description="Explains a trained model on the test split of the data it was trained on: input attributions "
                    "(integrated gradients, saliency, gradient x input) of the chosen samples (misclassified ones "
                    "first), with the completeness of integrated gradients per sample; heat maps for images, global "
                    "feature importance beside permutation importance for tabular data; the units whose removal "
                    "would change the loss most. Logged to the run as explain/ artifacts.",
    )
    p.add_argument("run", metavar="RUN_ID|latest|MODEL.npz",
                   help="an MLflow run id, `latest` (the most recent run), or a weights .npz saved by workbench")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                   help=f"test samples to explain, misclassified first (default {DEFAULT_SAMPLES})")
    p.add_argument("--method", default="integrated_gradients", metavar="METHOD",
                   help=f"{' | '.join(METHODS)} (default integrated_gradients)")
    p.add_argument("--baseline", default="zero", metavar="zero|mean",
                   help="integrated gradients' baseline: zero, or the mean training input (default zero)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                   help=f"integrated gradients' first number of steps, doubled until completeness holds "
                        f"(default {DEFAULT_STEPS})")
    p.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, metavar="N",
                   help=f"most steps per sample (default {DEFAULT_MAX_STEPS})")
    p.add_argument("--spec", default=None, metavar="SPEC.toml",
                   help="with MODEL.npz: the spec it was trained with (default: spec.toml beside it)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="also write the artifacts to DIR (MODEL.npz: default explain/ beside it)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", default=None, metavar="NAME", help="with `latest`: the latest run of this experiment")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-log", action="store_true", help="do not log explain/ artifacts to the run")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from workbench.explain.tracked import explain_run

    result = explain_run(args.run, tracking_uri=args.tracking_uri, experiment=args.experiment, samples=args.samples,
                         method=args.method, baseline=args.baseline, steps=args.steps, max_steps=args.max_steps,
                         spec_path=args.spec, out=args.out, log=not args.no_log)
    explanation = result.explanation
    if args.json:  # the human report lists the warnings itself
        for warning in explanation.warnings:
            print(f"workbench: warning: {warning}", file=sys.stderr)
        import json

        payload = json.loads(explanation.dumps())
        payload["artifacts"] = result.files
        print(json.dumps(payload, allow_nan=False))
    else:
        print(explanation.report())
        if result.files:
            where = f" (logged to run {result.run_id})" if result.run_id and not args.no_log else ""
            print(f"artifacts: {', '.join(result.files)}{where}")
    sys.stdout.flush()
    return 0
