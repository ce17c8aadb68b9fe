"""The `workbench` command: run, diagnose, ui, sync. User errors exit 2 with one line, never a traceback."""

from __future__ import annotations

import argparse
import signal
import sys

from workbench.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def build_parser() -> argparse.ArgumentParser:
    from workbench.cli import run as run_cmd

    parser = argparse.ArgumentParser(prog="workbench", description="A research workbench for backpropagation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_cmd.add_parser(sub)
    for module in _optional_commands():
        module.add_parser(sub)
    return parser


def _optional_commands() -> list:
    """Subcommands that live on top of the core (tracking, diagnosis); absent ones are skipped."""
    import importlib

    modules = []
    for name in ("workbench.cli.diagnose", "workbench.cli.ui", "workbench.cli.sync", "workbench.cli.explain"):
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _raise_interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError as exc:  # a run already started was closed as FAILED by execute()
        detail = " ".join(str(exc).split()) or "MemoryError"
        print(f"workbench: error: out of memory ({detail}): use a smaller data set, model or batch", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
