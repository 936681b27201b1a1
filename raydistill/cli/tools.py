"""`raydistill tables | audit | ui | server`: what a researcher does around the sweeps."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from raydistill.errors import ConfigError


def add_parsers(sub) -> None:
    p = sub.add_parser("tables", help="write the comparison tables, plots and HTML report of a sweep", add_help=False)
    p.set_defaults(handler=handle_tables, forward=True)  # every argument goes to analysis/tables.py

    p = sub.add_parser("audit", help="audit the paper's printed numbers for internal consistency (no training)",
                       description="Check every number the paper prints against its own other numbers, rounding, "
                       "full-data results and published ceilings; writes audit.md and audit.csv.")
    p.add_argument("--out", type=Path, default=Path("results/audit"), help="output folder")
    p.set_defaults(handler=handle_audit)

    p = sub.add_parser("ui", help="open the MLflow UI on a sweep store, bound to this machine only",
                       description="Start `mlflow ui` on the sweeps' default store (results/mlflow.db), listening "
                       "on 127.0.0.1; stop it with Ctrl-C.")
    p.add_argument("--results", type=Path, default=Path("results"), help="the sweeps' --results folder")
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1")
    p.set_defaults(handler=handle_ui)

    p = sub.add_parser("server", help="start an MLflow tracking server for a cluster (SQL store, proxied artifacts)",
                       description="Start `mlflow server` with a sqlite store and proxied artifacts under --root, "
                       "bound to --host (the head's private address), and wait until it answers.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (the head's private IP on a cluster)")
    p.add_argument("--port", type=int, default=5000, help="port")
    p.add_argument("--root", type=Path, default=Path("mlflow-server"), help="folder for the database and artifacts")
    p.set_defaults(handler=handle_server)


def handle_tables(args: argparse.Namespace) -> int:
    """analysis/tables.py's own command line (its --help says every option)."""
    from analysis import tables

    return tables.main(args.forwarded, prog="raydistill tables")


def handle_audit(args: argparse.Namespace) -> int:
    from analysis.audit import write_audit

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file; give a folder")
    for path in write_audit(args.out):
        print(path)
    return 0


def handle_ui(args: argparse.Namespace) -> int:
    store = args.results.expanduser().resolve() / "mlflow.db"
    if not store.is_file():
        raise ConfigError(f"no MLflow store at {store}; run a sweep first (or pass its --results)")
    print(f"MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{store}",
               "--host", "127.0.0.1", "--port", str(args.port)]
    return subprocess.call(command)


def handle_server(args: argparse.Namespace) -> int:
    from raydistill.tracking_server import main

    return main(["--host", args.host, "--port", str(args.port), "--root", str(args.root)])
