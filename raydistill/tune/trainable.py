"""One sweep trial as a Ray Tune function trainable: a teacher job, or one grid cell (the core
pipeline plus its MLflow run)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import ray
from ray import tune
from ray.air.integrations.mlflow import setup_mlflow

from raydistill import artifacts, inputs, tracking
from raydistill.config import TrialConfig
from raydistill.data import Dataset, dataset_label
from raydistill.pipeline import TrialResult, positive_index, run_trial
from raydistill.tune.grid import TeacherJob
from raydistill.tune.teachers import STOPPED, train_and_log

SCALARS = ("accuracy", "sensitivity", "specificity", "auc", "teacher_accuracy", "accuracy_std")
MODEL_ACCURACY = "accuracy_model"  # history: one step per evaluation model (protocols with several)
FAULT_ENV = "RAYDISTILL_INJECT_FAULT"
REPORT_SECONDS_ENV = "RAYDISTILL_REPORT_SECONDS"  # the least time between two per-epoch Tune reports


def run_job(config: dict, datasets: dict[str, Dataset]) -> None:
    job, ctx = config["job"], config["ctx"]
    if job["kind"] == "teacher":
        _maybe_fail(job["name"], Path(ctx["results_dir"]))
        teacher = TeacherJob(job["key"], TrialConfig(**job["trial"]), tuple(job["milestones"]), job["per_image_norms"])
        train_and_log(teacher, datasets[job["data_key"]], uri=ctx["tracking_uri"], experiment_id=ctx["experiment_id"],
                      report=Reporter())
    else:
        run_cell(job, ctx, datasets[job["data_key"]])


class Reporter:
    """tune.report for per-epoch figures, at most every REPORT_SECONDS_ENV seconds (default 1);
    results that carry a milestone or a final metric always go out."""

    def __init__(self) -> None:
        self.every = float(os.environ.get(REPORT_SECONDS_ENV, "1"))
        self.last = 0.0

    def __call__(self, values: dict, always: bool = False) -> None:
        now = time.monotonic()
        if always or "milestone" in values or now - self.last >= self.every:
            tune.report(values)
            self.last = now


def cell_tags(cell: dict, ctx: dict, cfg: TrialConfig) -> dict[str, str]:
    return {tracking.ROLE: "cell", tracking.CELL: cell["name"], tracking.CELL_KEY: cell["key"],
            tracking.SWEEP: ctx["sweep"], tracking.SWEEP_RUN: ctx["sweep_run_id"], "git_commit": ctx["git_commit"],
            tracking.HYPOTHESIS: cfg.hypothesis, tracking.FORENSICS: str(cfg.is_forensics).lower()}


def cell_params(cell: dict, cfg: TrialConfig) -> dict:
    return {**cfg.to_dict(), "dataset_label": dataset_label(cfg.dataset), "cell": cell["name"]}


def run_cell(cell: dict, ctx: dict, data: Dataset) -> None:
    """Run one cell in a fresh MLflow run; earlier unfinished attempts are dropped before, and
    twins of this run after (a create that MLflow's client retried over HTTP can leave one). The
    student continues from the furthest checkpoint an earlier attempt left (paper protocol), or
    from the trained student a twin kept (a cell that differs only in how it scores the student,
    `cell["twins"]`): then it only scores it. While a twin is unfinished the cell keeps its own
    trained student for it; the last twin to finish removes them all.

    A retry of a cell whose run is already FINISHED (its trial died after ending the run, before
    Tune heard of it, e.g. with its node) reports that run instead of running the cell again."""
    cfg = TrialConfig(**cell["trial"])
    uri, experiment_id = ctx["tracking_uri"], ctx["experiment_id"]
    report = Reporter()
    finished = tracking.finished_cells(uri, experiment_id)
    done = finished.get(cell["key"])
    if done is not None:
        report({k: v for k, v in done.data.metrics.items() if k in (*SCALARS, "time_total_s")} | {"done_cell": 1},
               always=True)
        return
    twins = cell["twins"]
    held = tracking.latest_student_checkpoint(uri, experiment_id, [cell["key"], *twins])
    resume = held[1] if held else None
    keep_final = any(twin not in finished for twin in twins)
    tracking.drop_unfinished_cell_runs(uri, experiment_id, cell["key"])
    tags = cell_tags(cell, ctx, cfg) | {"ray_trial_id": tune.get_context().get_trial_id(),
                                       tracking.NODE: ray.get_runtime_context().get_node_id()}
    # a twin left by a create whose answer was lost is removed with the unfinished runs once this one ends
    mlf = tracking.retrying(uri, lambda: setup_mlflow(cell_params(cell, cfg), tracking_uri=uri,
                                                      experiment_id=experiment_id, run_name=cell["name"], tags=tags))
    run_id = mlf.active_run().info.run_id
    history = tracking.MetricLog(uri, run_id)

    def progress(phase: str, epoch: int, epochs: int, values: dict[str, float]) -> None:
        history.log({f"{phase}_{k}": v for k, v in values.items()}, epoch)
        report({"phase": phase, "epoch": epoch, "epochs": epochs, **values})
        if phase == "student":
            _maybe_fail(cell["name"], Path(ctx["results_dir"]), epoch)

    teacher = None
    if cell["teacher"] is not None:
        def teacher(data, pool):
            run_id = tracking.teacher_holding(uri, experiment_id, cell["teacher"], cfg.teacher_epochs)
            mlf.set_tag(tracking.TEACHER_RUN, run_id)
            return tracking.load_snapshot(uri, run_id, cfg.teacher_epochs)
    try:
        _maybe_fail(cell["name"], Path(ctx["results_dir"]))
        result = run_trial(cfg, data, teacher=teacher, progress=progress, student_resume=resume,
                           on_student_checkpoint=lambda ckpt: tracking.log_checkpoint(uri, run_id, ckpt),
                           keep_final_student=keep_final)
        history.flush()
        _log(mlf, result, positive_index(cfg, result.classes))
        inputs.log(cfg, data, result)
        if result.resumed_epoch:
            mlf.set_tag(tracking.RESUMED, str(result.resumed_epoch))
            source = held[0].data.tags
            if source.get(tracking.CELL_KEY) != cell["key"]:
                mlf.set_tag(tracking.STUDENT_FROM, source.get(tracking.CELL, ""))
    except STOPPED:  # the sweep stopped the trial: an interrupted attempt, not a failure
        history.flush()
        mlf.end_run("KILLED")
        raise
    except BaseException as err:
        history.flush()
        mlf.set_tag(tracking.ERROR, f"{type(err).__name__}: {err}"[:5000])
        mlf.end_run("FAILED")
        raise
    mlf.end_run("FINISHED")
    tracking.drop_unfinished_cell_runs(uri, experiment_id, cell["key"])
    finished = tracking.finished_cells(uri, experiment_id)
    if all(twin in finished for twin in twins):
        tracking.drop_student_checkpoints(uri, experiment_id, [cell["key"], *twins])
    else:
        tracking.drop_student_checkpoints(uri, experiment_id, [cell["key"]], keep=run_id)
    report({k: result.metrics[k] for k in SCALARS if k in result.metrics} | {"time_total_s": result.timings["total"],
                                                                            "done_cell": 1}, always=True)


def _log(mlf, result: TrialResult, positive: int) -> None:
    metrics = {k: float(result.metrics[k]) for k in SCALARS if k in result.metrics}
    metrics |= {f"time_{phase}_s": seconds for phase, seconds in result.timings.items()}
    mlf.log_metrics(metrics)
    for model, accuracy in enumerate(result.metrics.get("accuracy_runs", [])):  # every evaluation model's
        mlf.log_metric(MODEL_ACCURACY, float(accuracy), step=model)
    mlf.set_tags({"device": result.device, "kmeans_backend": result.kmeans_backend or "none"})  # none: no K-means
    with tempfile.TemporaryDirectory() as tmp:
        artifacts.write_all(result, Path(tmp), positive)
        mlf.log_artifacts(tmp)


def _maybe_fail(name: str, results_dir: Path, student_epoch: int | None = None) -> None:
    """Fault injection for tests: FAULT_ENV is a comma-separated list of NAME_SUBSTRING (fail every
    attempt) or NAME_SUBSTRING:N (fail the first N attempts), at the start of the job, or with
    @EPOCH appended (NAME_SUBSTRING:N@EPOCH) once the student has trained EPOCH epochs; attempts are
    counted on disk."""
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        pattern, _, times = spec.partition(":")
        times, _, at = times.partition("@")
        if pattern not in name or student_epoch != (int(at) if at else None):
            continue
        counter = results_dir / "faults" / name
        counter.parent.mkdir(parents=True, exist_ok=True)
        attempts = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(attempts))
        if not times or attempts <= int(times):
            raise RuntimeError(f"injected fault in {name} (attempt {attempts}, {FAULT_ENV}={spec})")
