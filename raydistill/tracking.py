"""MLflow: where runs go, the sweep's parent run, one child run per cell, teacher snapshots.

Layout of an experiment (one per sweep name), told apart by the tag `raydistill.role`:
- `sweep`: one parent run per sweep; reused when the same sweep is resumed;
- `cell`: one run per grid cell (`raydistill.cell` = the cell name), child of the sweep run;
- `teacher`: one run per trained teacher (`raydistill.teacher` = its key), holding one artifact
  per epoch milestone so that every cell needing that teacher reuses it.
"""

from __future__ import annotations

import logging
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from raydistill.config import ConfigError
from raydistill.teacher import TeacherSnapshot

log = logging.getLogger(__name__)

ROLE, CELL, TEACHER, SWEEP = "raydistill.role", "raydistill.cell", "raydistill.teacher", "raydistill.sweep"


def local_store(results_dir: Path) -> str:
    """The default store: a sqlite database under the results folder (absolute path)."""
    return f"sqlite:///{results_dir.resolve() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail early (before any trial) when a tracking server does not answer its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status == 200:
                return
    except (urllib.error.URLError, OSError) as err:
        raise ConfigError(f"MLflow tracking server {uri} is not reachable ({err}); start it or fix --tracking-uri") from None
    raise ConfigError(f"MLflow tracking server {uri} answered its health check with an error")


def ensure_experiment(uri: str, name: str, artifact_root: Path | None) -> str:
    """Create the experiment once, on the driver (trials must not race to create it)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if uri.startswith("http") or artifact_root is None else (artifact_root.resolve() / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def runs(uri: str, experiment_id: str, tags: dict[str, str]) -> list[Run]:
    """Active (not deleted) runs whose tags equal the given values, oldest first."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    found = MlflowClient(uri).search_runs([experiment_id], query, run_view_type=ViewType.ACTIVE_ONLY, max_results=10_000)
    return sorted(found, key=lambda r: r.info.start_time)


def sweep_run(uri: str, experiment_id: str, sweep: str, params: dict) -> str:
    """The sweep's parent run: the existing one when resuming, else a new one."""
    client = MlflowClient(uri)
    existing = runs(uri, experiment_id, {ROLE: "sweep", SWEEP: sweep})
    if existing:
        client.update_run(existing[-1].info.run_id, status="RUNNING")
        return existing[-1].info.run_id
    run = client.create_run(experiment_id, run_name=sweep, tags={ROLE: "sweep", SWEEP: sweep})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value)[:6000])
    return run.info.run_id


def end_run(uri: str, run_id: str, status: str) -> None:
    MlflowClient(uri).set_terminated(run_id, status)


def finished_cell(uri: str, experiment_id: str, cell: str) -> Run | None:
    """A FINISHED run of this cell, if an earlier attempt completed (e.g. just before a kill)."""
    done = [r for r in runs(uri, experiment_id, {CELL: cell}) if r.info.status == "FINISHED"]
    return done[-1] if done else None


def drop_unfinished_cell_runs(uri: str, experiment_id: str, cell: str) -> int:
    """Soft-delete runs left by interrupted or failed attempts of a cell, so that each cell has
    exactly one run (restorable with `mlflow runs restore`). Returns how many were dropped."""
    client = MlflowClient(uri)
    stale = [r for r in runs(uri, experiment_id, {CELL: cell}) if r.info.status != "FINISHED"]
    for run in stale:
        client.delete_run(run.info.run_id)
    return len(stale)


# ---- teachers ---------------------------------------------------------------------------------

def milestone_tag(epoch: int) -> str:
    return f"raydistill.milestone.{epoch}"


def teacher_with_milestone(uri: str, experiment_id: str, key: str, epoch: int) -> str | None:
    """The run id of a teacher run that holds the snapshot at `epoch`, if any."""
    for run in runs(uri, experiment_id, {TEACHER: key}):
        if run.data.tags.get(milestone_tag(epoch)) == "done":
            return run.info.run_id
    return None


def start_teacher_run(uri: str, experiment_id: str, key: str, params: dict) -> str:
    """A new teacher run; unfinished ones of the same key (interrupted training) are marked KILLED."""
    client = MlflowClient(uri)
    for run in runs(uri, experiment_id, {TEACHER: key}):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
    run = client.create_run(experiment_id, run_name=f"teacher-{params.get('model')}-{key[:8]}",
                            tags={ROLE: "teacher", TEACHER: key})
    for name, value in params.items():
        client.log_param(run.info.run_id, name, str(value))
    return run.info.run_id


def log_snapshot(uri: str, run_id: str, snap: TeacherSnapshot) -> None:
    """Upload one milestone, then tag it done (the tag marks a complete upload)."""
    client = MlflowClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"epoch_{snap.epoch:05d}.pt"
        torch.save({"epoch": snap.epoch, "state_dict": snap.state_dict, "last_step_l1": snap.last_step_l1,
                    "test_accuracy": snap.test_accuracy, "train_seconds": snap.train_seconds,
                    "grad_l1": snap.grad_l1, "grad_seconds": snap.grad_seconds}, path)
        client.log_artifact(run_id, str(path), artifact_path="teacher")
    client.log_metric(run_id, "test_accuracy", snap.test_accuracy, step=snap.epoch)
    client.set_tag(run_id, milestone_tag(snap.epoch), "done")


def load_snapshot(uri: str, run_id: str, epoch: int) -> TeacherSnapshot:
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"teacher/epoch_{epoch:05d}.pt",
                                                   dst_path=tmp, tracking_uri=uri)
        saved = torch.load(path, weights_only=True)
    return TeacherSnapshot(**saved)
