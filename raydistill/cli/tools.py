"""`raydistill tables | report | audit | ui | server | export | restore`: what a researcher does around the sweeps."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from raydistill.errors import ConfigError


def add_parsers(sub) -> None:
    p = sub.add_parser("tables", help="write the comparison tables, plots and HTML report of a sweep", add_help=False)
    p.set_defaults(handler=handle_tables, forward=True)  # every argument goes to analysis/tables.py

    p = sub.add_parser("report", help="write the replication report (claims vs ours with intervals, controls, audit, "
                       "forensics, provenance) as REPORT.md and report.html", add_help=False)
    p.set_defaults(handler=handle_report, forward=True)  # every argument goes to analysis/replication.py

    p = sub.add_parser("audit", help="audit the paper's printed numbers for internal consistency (no training)",
                       description="Check every number the paper prints against its own other numbers, rounding, "
                       "full-data results and published ceilings; writes audit.md and audit.csv.")
    p.add_argument("--out", type=Path, default=Path("results/audit"), help="output folder")
    p.set_defaults(handler=handle_audit)

    p = sub.add_parser("ui", help="open the MLflow UI on a sweep store, bound to this machine only",
                       description="Start the MLflow UI on the sweeps' default store (results/mlflow.db), listening "
                       "on 127.0.0.1, and print a link per sweep to its runs side by side (a saved view "
                       "'Comparison': accuracy, wall time, sensitivity, specificity; best first); Ctrl-C stops it.")
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

    p = sub.add_parser("export", help="write an experiment's finished runs to a JSON-lines file (to commit results "
                       "that must outlive their MLflow store)",
                       description="Write the sweep runs and FINISHED cell runs of --experiment (params, tags, "
                       "latest metrics, per-model accuracies; no artifacts) to OUT, one JSON line per run.")
    p.add_argument("out", type=Path, help="the file to write, e.g. results/paper-settings/mlflow-runs.jsonl")
    p.add_argument("--experiment", required=True, help="the MLflow experiment (the sweep's grid name)")
    p.add_argument("--results", type=Path, default=Path("results"), help="the sweeps' --results folder")
    p.set_defaults(handler=handle_export)

    p = sub.add_parser("restore", help="put an export's runs back into a store (before resuming the sweep)",
                       description="Restore the runs of an export into --experiment of the store under --results "
                       "(created when missing); runs already there are skipped, so restoring twice is harmless. "
                       "A sweep resumed afterwards skips the restored cells.")
    p.add_argument("file", type=Path, help="a file written by `raydistill export`")
    p.add_argument("--experiment", required=True, help="the MLflow experiment to restore into")
    p.add_argument("--results", type=Path, default=Path("results"), help="the sweeps' --results folder")
    p.set_defaults(handler=handle_restore)


def existing_store(results: Path) -> str:
    """The sweeps' local store under `results`, which must exist already."""
    from raydistill.tracking import local_store

    if not (results / "mlflow.db").is_file():
        raise ConfigError(f"no MLflow store at {results / 'mlflow.db'}; run a sweep first (or pass its --results)")
    return local_store(results)


def handle_export(args: argparse.Namespace) -> int:
    from raydistill.archive import export_runs

    count = export_runs(existing_store(args.results), args.experiment, args.out)
    print(f"{count} runs of {args.experiment!r} written to {args.out}")
    return 0


def handle_restore(args: argparse.Namespace) -> int:
    from raydistill.archive import import_runs, read_records
    from raydistill.tracking import init_store, local_store
    from raydistill.tune.runner import check_results_dir

    records = read_records(args.file)  # a bad file says so before a store is created
    check_results_dir(args.results)
    uri = local_store(args.results)
    init_store(uri)
    restored, present = import_runs(uri, args.experiment, records, args.results / "mlartifacts")
    print(f"{restored} runs restored into {args.experiment!r} ({present} already there)")
    return 0


def handle_tables(args: argparse.Namespace) -> int:
    """analysis/tables.py's own command line (its --help says every option)."""
    from analysis import tables

    return tables.main(args.forwarded, prog="raydistill tables")


def handle_report(args: argparse.Namespace) -> int:
    """analysis/replication.py's own command line (its --help says every option)."""
    from analysis import replication

    return replication.main(args.forwarded, prog="raydistill report")


def handle_audit(args: argparse.Namespace) -> int:
    from analysis.audit import write_audit

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file; give a folder")
    for path in write_audit(args.out):
        print(path)
    return 0


def add_comparison_views(uri: str) -> dict[str, str]:
    """Give every sweep's experiment the Comparison view (kept if already there, e.g. edited by a
    user); returns name -> experiment id."""
    from mlflow.tracking import MlflowClient

    from raydistill.tracking import ROLE, VIEW, comparison_view

    client, found = MlflowClient(uri), {}
    for experiment in client.search_experiments():
        if client.search_runs([experiment.experiment_id], f"tags.`{ROLE}` = 'sweep'", max_results=1):
            if f"mlflow.sharedViewState.{VIEW}" not in experiment.tags:
                client.set_experiment_tag(experiment.experiment_id, f"mlflow.sharedViewState.{VIEW}",
                                          comparison_view(int(time.time() * 1000)))
            found[experiment.name] = experiment.experiment_id
    return found


def handle_ui(args: argparse.Namespace) -> int:
    from raydistill import tracking
    from raydistill.tracking_server import start_server, stop_on_signals

    results = args.results.expanduser().resolve()
    experiments = add_comparison_views(existing_store(results))
    stop_on_signals()
    server = start_server(results, port=args.port, workers=1, timeout=180)
    try:
        # workflowType: MLflow 3.17 opens its GenAI view unless told (it ignores mlflow.experimentKind)
        print(f"MLflow UI on {server.uri} (Ctrl-C stops it); each sweep's runs side by side:", flush=True)
        for name, experiment_id in experiments.items():
            print(f"  {name}: {server.uri}/#/experiments/{experiment_id}/runs?viewStateShareKey={tracking.VIEW}"
                  "&workflowType=machine_learning", flush=True)
        code = server.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
    print(f"raydistill: error: the MLflow server exited with code {code}; {server.log_tail()}", file=sys.stderr)
    return 1


def handle_server(args: argparse.Namespace) -> int:
    from raydistill.tracking_server import main

    return main(["--host", args.host, "--port", str(args.port), "--root", str(args.root)])
