"""`workbench sync`: upload what runs kept offline while their MLflow server did not answer."""

from __future__ import annotations

import argparse
import sys

from workbench.errors import UserError

EXIT_OK, EXIT_STILL_DOWN = 0, 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="upload the metrics, tags and artifacts that runs kept offline during an outage")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="only these runs (default: every run kept offline)")
    p.add_argument("--dir", default=None,
                   help="the offline folder (default: $WORKBENCH_OFFLINE_DIR or ./.workbench/offline)")
    p.add_argument("--tracking-uri", default=None,
                   help="upload to this store instead of the one each run was logging to")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from workbench.tracking.offline import first_line, offline_root, spooled_runs, upload

    root = offline_root(args.dir)
    if args.dir is not None and not root.is_dir():
        raise UserError(f"--dir {args.dir}: no such folder: give the offline folder the run named in its warning")
    spools = spooled_runs(root)
    if args.run_ids:
        by_id = {path.name: path for path in spools}
        missing = [run_id for run_id in args.run_ids if run_id not in by_id]
        if missing:
            raise UserError(f"run {missing[0]} has nothing kept offline in {root}: "
                            f"runs there: {', '.join(sorted(by_id)) or 'none'}")
        spools = [by_id[run_id] for run_id in args.run_ids]
    if not spools:
        print(f"nothing to upload: no run kept offline in {root}")
        return EXIT_OK
    failed = 0
    for path in spools:
        try:
            report = upload(path, args.tracking_uri)
        except Exception as exc:  # noqa: BLE001 - the store is still down (or refuses): the spool stays
            failed += 1
            print(f"workbench: error: run {path.name}: could not upload ({first_line(exc)}): kept in {path}; "
                  "run `workbench sync` again once the server answers", file=sys.stderr)
            continue
        status = f", status {report.status}" if report.status else ""
        print(f"run {report.run_id}: uploaded {report.metric_values} metric values in {report.operations} "
              f"operations to {report.tracking_uri}{status}")
    return EXIT_STILL_DOWN if failed else EXIT_OK
