"""MLflow: the store, the sweep's ledger of runs, one run per cell, teacher snapshots.

An experiment (one per sweep name) holds three kinds of runs, told apart by `raydistill.role`:
- `sweep`: one per sweep (`raydistill.sweep` = its name), reused when the sweep resumes; it carries
  the comparison (tables, plots, the HTML report) as artifacts;
- `cell`: one per grid cell, identified by `raydistill.cell_key` (a hash of the cell's whole
  config) and shown by its display name; a sweep re-runs nothing that has a FINISHED cell run;
  while the cell trains, its run holds the student's latest checkpoint, which the next attempt
  continues from (it is removed once the cell has FINISHED, unless cells that only score the same
  student another way still need it: they continue from it, and the last of them removes them all);
- `teacher`: one per trained teacher (`raydistill.teacher` = its key), holding one artifact per epoch
  milestone and a checkpoint to continue from, so every cell needing that teacher reuses it.
Cells and teachers are not nested under the sweep run, so the runs list shows them at once.
Searches filter on constant tag values only; everything user-given is compared in Python.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

import mlflow
import torch
from mlflow.entities import Metric, Run, ViewType
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from raydistill.errors import ConfigError
from raydistill.locks import waiting_lock
from raydistill.protocols import StudentCheckpoint
from raydistill.teacher import TeacherCheckpoint, TeacherSnapshot

log = logging.getLogger(__name__)

ROLE, SWEEP, SWEEP_RUN = "raydistill.role", "raydistill.sweep", "raydistill.sweep_run"
CELL, CELL_KEY, TEACHER = "raydistill.cell", "raydistill.cell_key", "raydistill.teacher"
FORENSICS, HYPOTHESIS, ERROR = "raydistill.forensics", "raydistill.hypothesis", "raydistill.error"
TEACHER_RUN, NODE = "raydistill.teacher_run", "ray_node_id"  # the teacher run a cell used; the Ray node of a run
CHECKPOINT_EPOCH, RESUMED = "raydistill.checkpoint_epoch", "raydistill.resumed_from_epoch"
STUDENT_FROM = "raydistill.student_from"  # the cell whose trained student a cell continued (and scored another way)
SCORED_ON = "raydistill.scored_on"  # the context of the input a cell's metrics were computed on (raydistill.inputs)
SQLITE = "sqlite:///"
HTTP = ("http://", "https://")  # a tracking server's URI; anything else is a local store
T = TypeVar("T")


def local_store(results_dir: Path) -> str:
    """The default store: a sqlite database under the results folder (absolute path)."""
    return f"{SQLITE}{results_dir.resolve() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """A tracking server answers its health check within `timeout` (for readers; a sweep uses the
    fuller raydistill.tracking_server.verify_tracking)."""
    if not uri.startswith(HTTP):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status == 200:
                return
    except (urllib.error.URLError, OSError) as err:
        raise ConfigError(f"MLflow tracking server {uri} is not reachable ({err}); start it or fix the tracking URI") from None
    raise ConfigError(f"MLflow tracking server {uri} answered its health check with an error")


def init_store(uri: str) -> None:
    """Create a local sqlite store exactly once, before any concurrent use: its schema is built in a
    private file under a lock, then renamed into place, so nobody ever opens a half-made store
    (several processes migrating one new file corrupt it)."""
    if not uri.startswith(SQLITE):
        return
    path = Path(uri[len(SQLITE):])
    if path.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with waiting_lock(path.with_name(f".{path.name}.lock")):
        if path.exists():
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        schema_log = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables..."
        level = schema_log.level
        schema_log.setLevel(logging.WARNING)
        try:
            store = SqlAlchemyStore(f"{SQLITE}{tmp}", (path.parent / "mlartifacts").as_uri())
        finally:
            schema_log.setLevel(level)
        store.engine.dispose()
        os.replace(tmp, path)


def ensure_experiment(uri: str, name: str, artifact_root: Path | None) -> str:
    """Create the experiment once, on the driver (trials must not race to create it)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if not uri.startswith(SQLITE) or artifact_root is None else (artifact_root.resolve() / name).as_uri()
    # a model-training experiment (MLflow 3.17's UI also needs workflowType in the URL, as `raydistill ui`'s links
    # carry), opening on a saved view that shows the key metrics
    tags = {"mlflow.experimentKind": "custom_model_development",
            f"mlflow.sharedViewState.{VIEW}": comparison_view(int(time.time() * 1000))}
    try:
        return retrying(uri, lambda: client.create_experiment(name, artifact_location=location, tags=tags))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # a retry whose first try had created it
        if experiment is None:
            raise
        return experiment.experiment_id


VIEW = "comparison"  # the saved runs-list view of every sweep experiment
VIEW_METRICS = ("accuracy", "time_total_s", "sensitivity", "specificity")
VIEW_INPUTS = ("attributes.`Dataset`", f"tags.`{SCORED_ON}`")  # the runs' inputs, the one scored on first


def comparison_view(now_ms: int) -> str:
    """A saved view as MLflow 3.17's "Save view" writes it (experiment tag mlflow.sharedViewState.ID):
    its runs list otherwise hides every metric behind "Show more columns"."""
    columns = [f"metrics.`{m}`" for m in VIEW_METRICS] + list(VIEW_INPUTS)
    state = {"selectedColumns": columns, "columnOrder": columns, "orderByKey": columns[0], "orderByAsc": False}
    return json.dumps({"name": "Comparison", "createdAt": now_ms, "updatedAt": now_ms, "state": json.dumps(state)})


def search(uri: str, experiment_id: str, role: str, view: int = ViewType.ACTIVE_ONLY) -> list[Run]:
    """Every active (or `view`) run of one role, oldest first (all pages)."""
    client, found, token = MlflowClient(uri), [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.`{ROLE}` = '{role}'", run_view_type=view,
                                  max_results=10_000, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda r: r.info.start_time)


def transient(err: BaseException) -> bool:
    """An MLflow call that may succeed if sent again: no answer (connection lost, timed out), a
    server error (5xx, e.g. a proxy's 502 while the server restarts) or 429."""
    if not isinstance(err, MlflowException):
        return False
    status = err.get_http_status_code()
    return status >= 500 or status == 429


def retrying(uri: str, call: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
    """`call` to the tracking server at `uri`, sent again after a transient failure with MLflow's
    own retry budget and backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR:
    again at once, then after 2, 4, 8, ... times the factor, at most 120 s). From 3.18 MLflow no
    longer retries a write that is not idempotent (creating a run or experiment, logging inputs)
    once the server may have received it; raydistill does, and removes the twins such a retry can
    leave. A local store (no HTTP) has no answer to lose: its errors are raised at once."""
    retries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() if uri.startswith(HTTP) else 0
    factor = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
    for attempt in range(retries):
        try:
            return call()
        except MlflowException as err:
            if not transient(err):
                raise
            log.warning("MLflow call failed (%s); trying again (%d of %d)", err, attempt + 1, retries)
            sleep(0 if attempt == 0 else min(120.0, factor * 2 ** attempt))
    return call()


def _create_once(uri: str, experiment_id: str, run_name: str, tags: dict[str, str], identity: str) -> str:
    """Create a run that must exist once (none does yet), and soft-delete any twin with the same
    role and `identity` tag: a create whose answer was lost (e.g. the server restarted) is sent
    again, and the server may have created the run the first time already."""
    client = MlflowClient(uri)
    run_id = retrying(uri, lambda: client.create_run(experiment_id, run_name=run_name, tags=tags)).info.run_id
    for twin in search(uri, experiment_id, tags[ROLE]):
        if twin.data.tags.get(identity) == tags[identity] and twin.info.run_id != run_id:
            client.delete_run(twin.info.run_id)
    return run_id


def sweep_run(uri: str, experiment_id: str, sweep: str, params: dict) -> str:
    """The sweep's run: the existing one when resuming (set RUNNING again), else a new one."""
    client = MlflowClient(uri)
    existing = [r for r in search(uri, experiment_id, "sweep") if r.data.tags.get(SWEEP) == sweep]
    if existing:
        client.update_run(existing[-1].info.run_id, status="RUNNING")
        return existing[-1].info.run_id
    run_id = _create_once(uri, experiment_id, sweep, {ROLE: "sweep", SWEEP: sweep}, SWEEP)
    for key, value in params.items():
        client.log_param(run_id, key, str(value)[:6000])
    return run_id


MACHINE = "raydistill.machine"  # sweep run tag: the driver's machine at the sweep's latest start


def tag_machine(uri: str, run_id: str, facts: dict[str, str]) -> None:
    """Say which machine (re)started the sweep: CPU model, cores, torch, Python, GPU (no host name)."""
    MlflowClient(uri).set_tag(run_id, MACHINE, ", ".join(f"{k} {v}" for k, v in facts.items()))


def end_run(uri: str, run_id: str, status: str) -> None:
    MlflowClient(uri).set_terminated(run_id, status)


def cell_runs(uri: str, experiment_id: str, key: str | None = None) -> list[Run]:
    runs = search(uri, experiment_id, "cell")
    return runs if key is None else [r for r in runs if r.data.tags.get(CELL_KEY) == key]


def finished_cells(uri: str, experiment_id: str) -> dict[str, Run]:
    """Cell key -> its FINISHED run."""
    return {r.data.tags[CELL_KEY]: r for r in cell_runs(uri, experiment_id)
            if r.info.status == "FINISHED" and CELL_KEY in r.data.tags}


def drop_unfinished_cell_runs(uri: str, experiment_id: str, key: str) -> int:
    """Soft-delete runs left by interrupted or failed attempts of a cell, so that each cell has
    exactly one run (restorable with `mlflow runs restore`). Returns how many were dropped."""
    client = MlflowClient(uri)
    stale = [r for r in cell_runs(uri, experiment_id, key) if r.info.status != "FINISHED"]
    for run in stale:
        client.delete_run(run.info.run_id)
    return len(stale)


def close_running(uri: str, experiment_id: str, status: str = "KILLED") -> list[str]:
    """End every cell or teacher run still RUNNING (their trials were stopped); returns their names."""
    client, closed = MlflowClient(uri), []
    for role in ("cell", "teacher"):
        for run in search(uri, experiment_id, role):
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status)
                closed.append(run.info.run_name)
    return closed


def record_failed_cell(uri: str, experiment_id: str, name: str, tags: dict[str, str], params: dict, error: str) -> None:
    """A FAILED run for a cell that could not start (its teacher failed), carrying the error."""
    client = MlflowClient(uri)
    run = retrying(uri, lambda: client.create_run(experiment_id, run_name=name, tags={**tags, ERROR: error[:5000]}))
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FAILED")


class MetricLog:
    """Metric history for one run, sent in batches at most every `seconds` (live charts without a
    round trip per epoch)."""

    def __init__(self, uri: str, run_id: str, seconds: float = 5.0):
        self.client, self.run_id, self.seconds = MlflowClient(uri), run_id, seconds
        self.pending: list[Metric] = []
        self.sent = time.monotonic()

    def log(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()]
        if time.monotonic() - self.sent > self.seconds:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self.pending), 1000):
            self.client.log_batch(self.run_id, metrics=self.pending[start : start + 1000])
        self.pending, self.sent = [], time.monotonic()


# ---- teachers ---------------------------------------------------------------------------------

def milestone_tag(epoch: int) -> str:
    return f"raydistill.milestone.{epoch}"


def milestones_done(run: Run) -> set[int]:
    prefix = milestone_tag(0)[:-1]
    return {int(k[len(prefix):]) for k, v in run.data.tags.items() if k.startswith(prefix) and v == "done"}


def teachers(uri: str, experiment_id: str) -> dict[str, tuple[str, set[int]]]:
    """Teacher key -> (its newest run's id, the epoch milestones any of its runs holds)."""
    runs = search(uri, experiment_id, "teacher")
    return {key: (run.info.run_id, done) for key, (run, done) in by_teacher(runs).items()}


def by_teacher(runs: list[Run]) -> dict[str, tuple[Run, set[int]]]:
    """Teacher key -> (its newest run, the epoch milestones any of its runs holds), from teacher
    runs oldest first (as `search` gives them)."""
    out: dict[str, tuple[Run, set[int]]] = {}
    for run in runs:
        key = run.data.tags.get(TEACHER)
        out[key] = (run, out.get(key, (run, set()))[1] | milestones_done(run))
    return out


def continues_from(checkpoint_epoch: int, todo: Collection[int]) -> bool:
    """Whether a teacher's checkpoint can be trained on to the milestones `todo`: not when it is
    past one of them (that snapshot can only come from training again from scratch)."""
    return checkpoint_epoch < min(todo)


def teacher_run(uri: str, experiment_id: str, key: str, params: dict) -> str:
    """The teacher's run, to continue in (set RUNNING again), or a new one."""
    client = MlflowClient(uri)
    existing = [r for r in search(uri, experiment_id, "teacher") if r.data.tags.get(TEACHER) == key]
    if existing:
        client.update_run(existing[-1].info.run_id, status="RUNNING")
        return existing[-1].info.run_id
    name = f"teacher-{params.get('model')}-{key[:6]}"
    run_id = _create_once(uri, experiment_id, name, {ROLE: "teacher", TEACHER: key}, TEACHER)
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
    return run_id


def teacher_holding(uri: str, experiment_id: str, key: str, epoch: int) -> str | None:
    """The id of a run of teacher `key` that holds the snapshot at `epoch`, if any."""
    for run in reversed(search(uri, experiment_id, "teacher")):
        if run.data.tags.get(TEACHER) == key and epoch in milestones_done(run):
            return run.info.run_id
    return None


def _upload(uri: str, run_id: str, payload: dict, name: str, folder: str = "teacher") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        torch.save(payload, path)
        MlflowClient(uri).log_artifact(run_id, str(path), artifact_path=folder)


def _download(uri: str, run_id: str, name: str, folder: str = "teacher") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{folder}/{name}", dst_path=tmp,
                                                   tracking_uri=uri)
        return torch.load(path, weights_only=True)


def log_snapshot(uri: str, run_id: str, snap: TeacherSnapshot) -> None:
    """Upload one milestone, then tag it done (the tag marks a complete upload)."""
    _upload(uri, run_id, vars(snap), f"epoch_{snap.epoch:05d}.pt")
    client = MlflowClient(uri)
    client.log_metric(run_id, "test_accuracy", snap.test_accuracy, step=snap.epoch)
    client.set_tag(run_id, milestone_tag(snap.epoch), "done")


def load_snapshot(uri: str, run_id: str, epoch: int) -> TeacherSnapshot:
    return TeacherSnapshot(**_download(uri, run_id, f"epoch_{epoch:05d}.pt"))


def log_checkpoint(uri: str, run_id: str, ckpt: TeacherCheckpoint | StudentCheckpoint) -> None:
    """Replace the run's checkpoint (the state to continue training from: a teacher's in a teacher
    run, a student's in a cell run), then record its epoch (the tag marks a complete upload)."""
    _upload(uri, run_id, vars(ckpt), "checkpoint.pt", _checkpoint_folder(type(ckpt)))
    MlflowClient(uri).set_tag(run_id, CHECKPOINT_EPOCH, str(ckpt.epoch))


def _checkpoint_folder(kind: type) -> str:
    return "student" if kind is StudentCheckpoint else "teacher"


def load_checkpoint(uri: str, run_id: str, kind: type = TeacherCheckpoint):
    """The run's checkpoint as a `kind` (TeacherCheckpoint or StudentCheckpoint), or None."""
    if CHECKPOINT_EPOCH not in MlflowClient(uri).get_run(run_id).data.tags:
        return None
    return kind(**_download(uri, run_id, "checkpoint.pt", _checkpoint_folder(kind)))


def latest_student_checkpoint(uri: str, experiment_id: str, keys: Collection[str]) -> tuple[Run, StudentCheckpoint] | None:
    """The furthest student checkpoint held by a run of the cells `keys` (a cell and the cells
    that train the same student), with its run: an unfinished attempt's, or the final one a
    finished cell kept for the others."""
    runs = [r for r in search(uri, experiment_id, "cell")
            if r.data.tags.get(CELL_KEY) in keys and CHECKPOINT_EPOCH in r.data.tags]
    if not runs:
        return None
    furthest = max(runs, key=lambda r: (int(r.data.tags[CHECKPOINT_EPOCH]), r.info.start_time))
    return furthest, load_checkpoint(uri, furthest.info.run_id, StudentCheckpoint)


def drop_student_checkpoints(uri: str, experiment_id: str, keys: Collection[str], keep: str | None = None) -> None:
    """Remove the student checkpoints of every run of the FINISHED cells `keys` but the run `keep`:
    nothing continues from them. Active runs lose artifact and tag; dropped attempts (deleted runs, whose
    tags MLflow keeps as they were) lose the artifact."""
    client = MlflowClient(uri)
    for run in search(uri, experiment_id, "cell", ViewType.ALL):
        if run.data.tags.get(CELL_KEY) in keys and CHECKPOINT_EPOCH in run.data.tags and run.info.run_id != keep:
            get_artifact_repository(run.info.artifact_uri, tracking_uri=uri).delete_artifacts("student")
            if run.info.lifecycle_stage == "active":
                client.delete_tag(run.info.run_id, CHECKPOINT_EPOCH)


def log_folder(uri: str, run_id: str, folder: Path, artifact_path: str) -> None:
    """Attach a folder's files (e.g. the sweep's tables and report) to a run."""
    MlflowClient(uri).log_artifacts(run_id, str(folder), artifact_path)
