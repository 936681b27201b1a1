"""The command line: `raydistill run | sweep | tables | audit | ui | server`.

The only layer that prints and picks exit codes: 0 done, 1 some cells failed, 2 bad input (one
line, before any compute), 130 interrupted (the same command resumes).
"""

from __future__ import annotations

import argparse
import logging
import sys

from raydistill.cli import run, sweep, tools
from raydistill.errors import ConfigError

PROG = "raydistill"
BAD_INPUT, INTERRUPTED = 2, 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Reproduce and stress-test image dataset distillation: one "
                                "trial, sweeps of them on Ray Tune logged to MLflow, and the tables that compare them.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parser(sub)
    sweep.add_parser(sub)
    tools.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, rest = p.parse_known_args(argv)  # a REMAINDER positional would not take leading options
    if rest and not getattr(args, "forward", False):
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    args.forwarded = rest
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        resume = "; run the same command again to continue" if args.command == "sweep" else ""  # a trial restarts
        print(f"{PROG}: interrupted{resume}", file=sys.stderr)
        return INTERRUPTED
