"""`raydistill sweep GRID`: a registered grid (a module in sweeps/) as a Ray Tune sweep logged to
MLflow; `python sweeps/GRID.py` runs the same command."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

from raydistill.config import ConfigError, TrialConfig
from raydistill.tune.options import SweepOptions

INTERRUPTED, FAILED = 130, 1
NAMES_SHOWN = 10  # unfinished cells named on the console; the rest are counted


def grids() -> dict[str, ModuleType]:
    """Every sweep module (sweeps/*.py defining NAME, add_arguments and grid), by NAME."""
    import sweeps

    found = {}
    for info in pkgutil.iter_modules(sweeps.__path__):
        module = importlib.import_module(f"sweeps.{info.name}")
        if hasattr(module, "grid") and hasattr(module, "NAME"):
            found[module.NAME] = module
    return found


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--data-root", default="data", help="folder with the torchvision dataset files (e.g. ROOT/FashionMNIST/raw)")
    a("--download", action="store_true", help="let torchvision download missing datasets (needs internet)")
    a("--results", type=Path, default=Path("results"), help="folder for the default MLflow store, Tune's logs and the "
      "tables")
    a("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under --results); on a cluster: "
      "http://<head-private-ip>:5000")
    a("--address", default=None, help="Ray cluster address host:port or auto (default: start a local Ray)")
    a("--max-concurrent", type=int, default=None, help="trials at once (default: as many as resources allow)")
    a("--seeds", type=int, nargs="+", default=[0], help="seeds; every cell runs once per seed")
    a("--name", default=None, help="sweep and MLflow experiment name (default: the grid's); the same name continues it")
    a("--max-failures", type=int, default=1, help="retries of a failed trial")
    a("--cpus", type=int, default=None, help="logical CPUs of the local Ray, i.e. concurrent 1-CPU trials (default: "
      "the machine's cores; more lets cells run beside long teachers, each trial still uses one thread)")
    a("--set", dest="fixed", action="append", default=[], metavar="FIELD=VALUE",
      help="a trial setting for every cell, e.g. --set precision=bf16 --set compile=true (any `raydistill run` "
      "option, with _ for -)")
    a("--only", nargs="+", default=[], metavar="PATTERN", help="run only the cells whose name matches one of these "
      "shell patterns, e.g. 'mnist-lenet-*-e200-*' (the rest of the grid is untouched and runs later)")
    a("--dry-run", action="store_true", help="print the cells, their keys, resources and teachers, then exit")
    a("--no-tables", action="store_true", help="do not write the comparison tables at the end")


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a registered grid as a Ray Tune sweep logged to MLflow",
                       description="Run a grid of trials on Ray Tune, one MLflow run per cell. Running the same "
                       "command again continues an interrupted sweep; finished cells are never run again.")
    kinds = p.add_subparsers(dest="grid", required=True, metavar="GRID")
    for name, module in grids().items():
        doc = (module.__doc__ or "").strip()
        g = kinds.add_parser(name, help=doc.splitlines()[0] if doc else name, description=doc,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        add_sweep_arguments(g)
        module.add_arguments(g)
        g.set_defaults(handler=handle, module=module)


def parse_fixed(items: list[str]) -> dict[str, object]:
    fields = TrialConfig.__dataclass_fields__
    fixed: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None if text.lower() == "none" else text
        fixed[key] = value
    return fixed


def options_from_args(args: argparse.Namespace) -> SweepOptions:
    return SweepOptions(data_root=args.data_root, download=args.download, results=args.results,
                        tracking_uri=args.tracking_uri, address=args.address, max_concurrent=args.max_concurrent,
                        seeds=tuple(args.seeds), name=args.name, max_failures=args.max_failures,
                        cpus=args.cpus, fixed=parse_fixed(args.fixed), only=tuple(args.only)).validate()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def handle(args: argparse.Namespace) -> int:
    from raydistill.tune.runner import dry_run, run_sweep

    grid = args.module.grid(args)
    options = options_from_args(args)
    if args.dry_run:
        print("\n".join(dry_run(grid, options)))
        return 0
    outcome = run_sweep(grid, options, console=say)
    earlier = len(outcome.reused)
    if outcome.restored:
        say(f"{outcome.restored} runs restored from {outcome.exported} (finished on another store)")
    say(f"{len(outcome.finished)}/{len(outcome.cells)} cells finished ({len(outcome.finished) - earlier} in this run, "
        f"{earlier} earlier); MLflow experiment {outcome.name!r} at {outcome.uri}; finished runs exported to "
        f"{outcome.exported} (commit it to keep them beyond this store)")
    for name, error in outcome.failed.items():
        say(f"failed: {name}: {error}")
    if outcome.unfinished:
        names = outcome.unfinished
        more = f" and {len(names) - NAMES_SHOWN} more (--dry-run lists every cell)" if len(names) > NAMES_SHOWN else ""
        say(f"not run: {', '.join(names[:NAMES_SHOWN])}{more}")
    if outcome.interrupted:
        say("interrupted: run the same command again to continue")
        return INTERRUPTED
    if not args.no_tables and outcome.finished:
        write_tables(outcome, options, complete=outcome.complete)
    return 0 if outcome.complete else FAILED


def write_tables(outcome, options: SweepOptions, complete: bool) -> None:
    from analysis.tables import write_for_sweep

    from raydistill import tracking

    results = options.results.expanduser().resolve()
    folder = write_for_sweep(outcome.name, results, outcome.uri)
    if outcome.sweep_run_id is not None:
        tracking.log_folder(outcome.uri, outcome.sweep_run_id, folder, "comparison")
    say(f"tables and plots{'' if complete else ' (partial: not every cell finished)'}: {folder}")
