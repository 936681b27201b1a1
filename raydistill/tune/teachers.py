"""A teacher trial: train one teacher once, to its largest milestone, for every cell that needs it.

Each snapshot (weights, per-image gradient norms when grad-l1 cells need them, the last step's
norm) goes to the teacher's MLflow run, then the trial reports `milestone` to Tune, which
releases the cells waiting for it (raydistill.tune.scheduler). A checkpoint (weights, Adam's
state) is kept in the same run, so an interrupted teacher continues where it stopped instead of
starting again. Snapshots travel as MLflow artifacts: a cell on another node needs no shared disk.
"""

from __future__ import annotations

import logging

import ray

from raydistill import tracking
from raydistill.data import Dataset
from raydistill.pipeline import device_tensors, prepare_data
from raydistill.protocols import speed_options
from raydistill.device import resolve
from raydistill.tune.grid import TeacherJob, teacher_params
from raydistill.teacher import train_teacher

log = logging.getLogger(__name__)
STOPPED = (SystemExit, KeyboardInterrupt)  # how a trial's work ends when the sweep stops it (Ray exits the actor)


def train_and_log(job: TeacherJob, data: Dataset, *, uri: str, experiment_id: str, report) -> None:
    """Train `job` from its checkpoint (if any) to its largest milestone; `report(values)` sends
    Tune one result per epoch and one with `milestone` per snapshot (after its upload)."""
    cfg = job.config
    run_id = tracking.teacher_run(uri, experiment_id, job.key, {**teacher_params(cfg), "milestones": list(job.milestones),
                                                               "per_image_norms": job.per_image_norms})
    client = tracking.MlflowClient(uri)
    client.set_tag(run_id, tracking.NODE, ray.get_runtime_context().get_node_id())  # the node training it now
    done = tracking.milestones_done(client.get_run(run_id))
    for epoch in sorted(done & set(job.milestones)):
        report({"milestone": epoch})
    todo = [m for m in job.milestones if m not in done]
    if not todo:
        tracking.end_run(uri, run_id, "FINISHED")
        return
    metrics = tracking.MetricLog(uri, run_id)
    try:
        data = prepare_data(cfg.replace(ipc=1), data)  # the teacher's split: the cells' own checks ran on the driver
        _, pool = device_tensors(cfg, data, resolve(cfg.device))
        resume = tracking.load_checkpoint(uri, run_id)
        if resume is not None and not tracking.continues_from(resume.epoch, todo):
            resume = None
        log.info("teacher %s: epochs %s, from %s", job.key, todo, resume.epoch if resume else "scratch")

        def on_epoch(epoch: int, stats) -> None:
            values = {"train_loss": stats.loss, "train_accuracy": stats.accuracy}
            metrics.log(values, epoch)
            report({"phase": "teacher", "epoch": epoch, "epochs": max(todo), **values})

        def on_snapshot(snap) -> None:
            metrics.flush()
            tracking.log_snapshot(uri, run_id, snap)
            report({"milestone": snap.epoch, "teacher_accuracy": snap.test_accuracy})

        train_teacher(cfg.model, data, pool, todo, seed=cfg.seed, lr=cfg.lr, batch_size=cfg.batch_size,
                      normalize=cfg.pixel_scale == "unit", with_grad_l1=job.per_image_norms, resume=resume,
                      on_snapshot=on_snapshot, on_checkpoint=lambda ckpt: tracking.log_checkpoint(uri, run_id, ckpt),
                      on_epoch=on_epoch, speed=speed_options(cfg))
    except STOPPED:  # stopped with the sweep: interrupted, not failed
        metrics.flush()
        tracking.end_run(uri, run_id, "KILLED")
        raise
    except BaseException:
        metrics.flush()
        tracking.end_run(uri, run_id, "FAILED")
        raise
    metrics.flush()
    tracking.end_run(uri, run_id, "FINISHED")
