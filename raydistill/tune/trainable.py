"""One grid cell as a Ray Tune function trainable: the core pipeline plus MLflow tracking."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ray import tune
from ray.air.integrations.mlflow import setup_mlflow

from raydistill import artifacts, tracking
from raydistill.config import TrialConfig
from raydistill.data import Dataset, dataset_label
from raydistill.pipeline import TrialResult, positive_index, run_trial
from raydistill.tune.teachers import get_teacher

SCALARS = ("accuracy", "sensitivity", "specificity", "auc", "teacher_accuracy", "accuracy_std")
FAULT_ENV = "RAYDISTILL_INJECT_FAULT"


def run_cell(config: dict, datasets: dict[str, Dataset]) -> None:
    """Run config["cell"] unless an earlier attempt already finished it; report its metrics."""
    cell, ctx = config["cell"], config["ctx"]
    cfg = TrialConfig(**cell["trial"])
    uri, experiment_id = ctx["tracking_uri"], ctx["experiment_id"]
    done = tracking.finished_cell(uri, experiment_id, cell["name"])
    if done is not None:  # finished just before the driver died, before Tune saved its state
        tune.report({k: v for k, v in done.data.metrics.items() if k in SCALARS} | {"reused_run": 1})
        return
    tracking.drop_unfinished_cell_runs(uri, experiment_id, cell["name"])
    params = {**cfg.to_dict(), "dataset_label": dataset_label(cfg.dataset), "cell": cell["name"]}
    mlf = setup_mlflow(params, tracking_uri=uri, experiment_id=experiment_id, run_name=cell["name"], tags={
        tracking.ROLE: "cell", tracking.CELL: cell["name"], "mlflow.parentRunId": ctx["sweep_run_id"],
        "git_commit": ctx["git_commit"], "ray_trial_id": tune.get_context().get_trial_id()})
    try:
        _maybe_fail(cell["name"], Path(ctx["results_dir"]))
        teacher = lambda data, tensors: get_teacher(  # noqa: E731
            cfg, data, tensors, milestones=cell["teacher_milestones"], with_grad_l1=cell["teacher_grad_l1"], uri=uri,
            experiment_id=experiment_id, coordinator=ctx["coordinator"], owner=tune.get_context().get_trial_id())
        result = run_trial(cfg, datasets[cell["data_key"]], teacher=teacher)
        _log(mlf, result, positive_index(cfg, result.classes))
    except BaseException:
        mlf.end_run("FAILED")
        raise
    mlf.end_run("FINISHED")
    tune.report({k: result.metrics[k] for k in SCALARS if k in result.metrics} | {"time_total_s": result.timings["total"]})


def _log(mlf, result: TrialResult, positive: int) -> None:
    metrics = {k: float(result.metrics[k]) for k in SCALARS if k in result.metrics}
    metrics |= {f"time_{phase}_s": seconds for phase, seconds in result.timings.items()}
    mlf.log_metrics(metrics)
    mlf.set_tags({"device": result.device, "kmeans_backend": str(result.kmeans_backend)})
    with tempfile.TemporaryDirectory() as tmp:
        artifacts.write_all(result, Path(tmp), positive)
        mlf.log_artifacts(tmp)


def _maybe_fail(cell: str, results_dir: Path) -> None:
    """Fault injection for tests: FAULT_ENV is a comma-separated list of CELL_SUBSTRING (fail every
    attempt) or CELL_SUBSTRING:N (fail the first N attempts); attempts are counted on disk."""
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        pattern, _, times = spec.partition(":")
        if pattern not in cell:
            continue
        counter = results_dir / "faults" / cell
        counter.parent.mkdir(parents=True, exist_ok=True)
        attempts = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(attempts))
        if not times or attempts <= int(times):
            raise RuntimeError(f"injected fault in cell {cell} (attempt {attempts}, {FAULT_ENV}={spec})")
