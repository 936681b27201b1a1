"""Run validated cells as a Ray Tune experiment, or resume it where it stopped."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import ray
from ray import tune

from raydistill import tracking
from raydistill.data import Dataset
from raydistill.tune.grid import Cell, environment, git_commit, resources, teacher_plan
from raydistill.tune.teachers import start_coordinator
from raydistill.tune.trainable import run_cell

log = logging.getLogger(__name__)


def run_cells(name: str, cells: Sequence[Cell], datasets: dict[str, Dataset], *, uri: str, results: Path,
              args: argparse.Namespace) -> int:
    """Fit (or restore and finish) the Tune experiment `name`; one MLflow child run per cell."""
    experiment_dir = results / "ray_results" / name
    signature = [cell.name for cell in cells]
    resuming = tune.Tuner.can_restore(str(experiment_dir))
    if resuming:
        saved = json.loads((experiment_dir / "cells.json").read_text())
        if saved != signature:
            print(f"{Path(sys.argv[0]).name}: error: sweep {name!r} in {experiment_dir} was started with other cells; "
                  "resume it with the same options, or pick a new --name", file=sys.stderr)
            return 2
    experiment_id = tracking.ensure_experiment(uri, name, results / "mlartifacts")
    sweep_run = tracking.sweep_run(uri, experiment_id, name, {"cells": len(cells), "seeds": args.seeds,
                                                             "grid": json.dumps(signature)})
    ray.init(address=args.address, include_dashboard=False, runtime_env={"env_vars": environment()},
             **({} if args.address else {"num_cpus": os.cpu_count()}))
    try:
        coordinator = f"teachers-{name}"
        keeper = start_coordinator(coordinator)  # noqa: F841 (owned by the driver: alive while it runs)
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        plan = teacher_plan(cells)
        ctx = {"tracking_uri": uri, "experiment_id": experiment_id, "sweep_run_id": sweep_run,
               "results_dir": str(results), "coordinator": coordinator, "git_commit": git_commit()}
        trainable = tune.with_resources(
            tune.with_parameters(run_cell, datasets=datasets),
            lambda config: tune.PlacementGroupFactory([config["cell"]["resources"]]))
        if resuming:
            log.info("resuming sweep %s from %s", name, experiment_dir)
            tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, restart_errored=True)
        else:
            space = [{"name": c.name, "trial": c.config.to_dict(), "data_key": c.data_key,
                      "resources": resources(c.config, gpus),
                      **plan.get(c.name, {"teacher_milestones": [], "teacher_grad_l1": False})} for c in cells]
            tuner = tune.Tuner(
                trainable,
                param_space={"cell": tune.grid_search(space), "ctx": ctx},
                tune_config=tune.TuneConfig(max_concurrent_trials=args.max_concurrent,
                                            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
                run_config=tune.RunConfig(name=name, storage_path=str(results / "ray_results"),
                                          failure_config=tune.FailureConfig(max_failures=args.max_failures)),
            )
            experiment_dir.mkdir(parents=True, exist_ok=True)
            (experiment_dir / "cells.json").write_text(json.dumps(signature))
        grid = tuner.fit()
    finally:
        ray.shutdown()
    failed = [r.config["cell"]["name"] for r in grid if r.error is not None]
    tracking.end_run(uri, sweep_run, "FAILED" if failed else "FINISHED")
    print(f"\n{len(cells) - len(failed)}/{len(cells)} cells finished; MLflow experiment {name!r} at {uri}")
    if failed:
        print(f"failed cells: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _trial_name(trial) -> str:
    return trial.config["cell"]["name"]
