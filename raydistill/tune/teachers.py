"""Teachers trained once per (data, model, seed, optimiser) and shared by every cell that needs them.

The first cell that needs a teacher claims it from a coordinator actor (owned by the sweep driver,
so it is cluster-wide), trains it to the largest epoch milestone of the grid and uploads a snapshot
at every milestone to an MLflow teacher run. Other cells wait for their milestone's snapshot and
download it, so this works on one machine and on a cluster without shared disk. A resumed sweep
finds the snapshots in MLflow and trains nothing again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence

import ray

from raydistill import tracking
from raydistill.config import TrialConfig
from raydistill.data import Dataset, DeviceData
from raydistill.teacher import TeacherSnapshot, train_teacher

log = logging.getLogger(__name__)
NAMESPACE = "raydistill"


@ray.remote(num_cpus=0)
class TeacherCoordinator:
    """Who trains which teacher right now: one claim per key at a time."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}

    def claim(self, key: str, owner: str) -> bool:
        return self.owners.setdefault(key, owner) == owner

    def release(self, key: str, owner: str) -> None:
        if self.owners.get(key) == owner:
            del self.owners[key]

    def ready(self) -> bool:
        return True


def start_coordinator(name: str) -> ray.actor.ActorHandle:
    """Created by the driver, which must keep the handle alive for the sweep's duration. Returns
    once the actor is up, so that no trial looks its name up before it is registered."""
    handle = TeacherCoordinator.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote()
    ray.get(handle.ready.remote())
    return handle


def teacher_params(cfg: TrialConfig) -> dict:
    """What makes two teachers the same: data, model, seed and the optimiser settings."""
    return {"dataset": cfg.dataset, "resize": cfg.resize, "train_limit": cfg.train_limit, "model": cfg.model,
            "seed": cfg.seed, "lr": cfg.lr, "batch_size": cfg.batch_size}


def teacher_key(cfg: TrialConfig) -> str:
    return hashlib.sha1(json.dumps(teacher_params(cfg), sort_keys=True).encode()).hexdigest()[:16]


def get_teacher(
    cfg: TrialConfig,
    data: Dataset,
    tensors: DeviceData,
    *,
    milestones: Sequence[int],
    with_grad_l1: bool,
    uri: str,
    experiment_id: str,
    coordinator: str,
    owner: str,
    poll_seconds: float = 1.0,
) -> TeacherSnapshot:
    """The teacher snapshot at cfg.teacher_epochs: downloaded if it exists, else trained here (to
    max(milestones)) if no other trial is training it, else waited for."""
    key, epoch = teacher_key(cfg), cfg.teacher_epochs
    actor = ray.get_actor(coordinator, namespace=NAMESPACE)
    while True:
        run_id = tracking.teacher_with_milestone(uri, experiment_id, key, epoch)
        if run_id is not None:
            return tracking.load_snapshot(uri, run_id, epoch)
        if ray.get(actor.claim.remote(key, owner)):
            try:
                if tracking.teacher_with_milestone(uri, experiment_id, key, epoch) is None:
                    return _train_and_log(cfg, data, tensors, key, sorted(set(milestones) | {epoch}), with_grad_l1,
                                          uri, experiment_id)
            finally:
                actor.release.remote(key, owner)
        time.sleep(poll_seconds)


def _train_and_log(cfg: TrialConfig, data: Dataset, tensors: DeviceData, key: str, milestones: list[int],
                   with_grad_l1: bool, uri: str, experiment_id: str) -> TeacherSnapshot:
    log.info("training teacher %s to epochs %s", key, milestones)
    run_id = tracking.start_teacher_run(uri, experiment_id, key, {**teacher_params(cfg), "milestones": milestones,
                                                                  "with_grad_l1": with_grad_l1})
    try:
        snapshots = train_teacher(cfg.model, data, tensors, milestones, seed=cfg.seed, lr=cfg.lr,
                                  batch_size=cfg.batch_size, with_grad_l1=with_grad_l1,
                                  on_snapshot=lambda snap: tracking.log_snapshot(uri, run_id, snap))
    except BaseException:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    tracking.end_run(uri, run_id, "FINISHED")
    return next(s for s in snapshots if s.epoch == cfg.teacher_epochs)
