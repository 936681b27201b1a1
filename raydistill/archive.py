"""An experiment's finished runs as JSON lines, and back into a store: results that outlive the
MLflow database they were logged to (a store is not committed; this text is). A record keeps a
run's name, status, times, params, tags and latest metrics (with the per-model history of multi-
model cells); artifacts stay behind, and so does what names the machine (the data root's path,
MLflow's source file and user). A restored cell counts as finished, so a sweep resumed on the
restored store skips it; a record already in the store (same original run id, or a finished cell
with the same key) is not restored twice.

An unfinished cell of a protocol that evaluates several models one by one (dc) travels too, with
its finished models' records (results, not weights): restored, it is a KILLED attempt holding that
model-by-model checkpoint, which the sweep continues from. The state of a model stopped
mid-training (ConvNet-3's weights and SGD's momentum, ~2.5 MB) stays in its store: on a new store
that model trains again from its first pass. A teacher travels as its training checkpoint
(weights and Adam's state, up to TEACHER_BYTES) without its milestone snapshots: restored, it is a
KILLED teacher run holding no milestone, which the sweep trains on from that epoch. Students'
weights stay behind, so a restored run never claims a checkpoint it does not hold.

A checkpoint is a file of its own in a folder beside the export (`checkpoint_folder`), named by
its content, and the record names it: an unchanged checkpoint is the same file at every export, so
a repository that commits the export keeps one copy of it, and the record of runs stays small."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from raydistill.errors import ConfigError
from raydistill.locks import waiting_lock
from raydistill.protocols import StudentCheckpoint
from raydistill.teacher import TeacherCheckpoint
from raydistill.tracking import (CELL_KEY, CHECKPOINT_EPOCH, ROLE, TEACHER, ensure_experiment, finished_cells,
                                 latest_student_checkpoint, load_checkpoint, log_checkpoint, milestone_tag, retrying,
                                 search)

ROLES = ("sweep", "cell")  # a sweep's provenance (machine, params) and its cells
TEACHER_BYTES = 4 * 2**20  # the export is committed: LeNet-5's (0.7 MB) travels, the Baseline's (14 MB) stays behind
HISTORIES = ("accuracy_model",)  # metrics whose every step is a result (one per evaluation model)
RESTORED = "raydistill.restored_from"  # tag of a restored run: its original run id
FORMAT = 2  # 2: a checkpoint is a file beside the export; 1 (still read) carried it inline, in base64
FILE = "mlflow-runs.jsonl"  # a sweep's export: RESULTS/<sweep name>/FILE, restored when the sweep starts
LEFT_OUT_PARAMS = ("data_root",)
LEFT_OUT_TAGS = ("mlflow.source.", "mlflow.user", "mlflow.log-model", CHECKPOINT_EPOCH,  # prefixes
                 milestone_tag(0)[:-1])  # a teacher's snapshots stay behind


def record(client: MlflowClient, run: mlflow.entities.Run) -> dict:
    """One run as a JSON-ready dict."""
    histories = {name: [[m.step, m.value, m.timestamp] for m in client.get_metric_history(run.info.run_id, name)]
                 for name in HISTORIES if name in run.data.metrics}
    return {"format": FORMAT, "run_id": run.data.tags.get(RESTORED, run.info.run_id), "run_name": run.info.run_name,
            "status": run.info.status, "start_time": run.info.start_time, "end_time": run.info.end_time,
            "params": {k: v for k, v in run.data.params.items() if k not in LEFT_OUT_PARAMS},
            "metrics": run.data.metrics, "histories": histories,
            "tags": {k: v for k, v in run.data.tags.items() if k != RESTORED and not k.startswith(LEFT_OUT_TAGS)}}


def model_checkpoints(uri: str, experiment_id: str) -> dict[str, tuple[mlflow.entities.Run, StudentCheckpoint]]:
    """Cell key -> (run, checkpoint) of each unfinished cell that holds a model-by-model
    checkpoint (raydistill.pipeline.ModelLog: finished models' records, and the state of a model
    stopped mid-training, which `finished_models` leaves out)."""
    done = finished_cells(uri, experiment_id)
    keys = {r.data.tags[CELL_KEY] for r in search(uri, experiment_id, "cell")
            if CHECKPOINT_EPOCH in r.data.tags and CELL_KEY in r.data.tags} - set(done)
    held = {key: latest_student_checkpoint(uri, experiment_id, [key]) for key in sorted(keys)}
    return {key: (run, ckpt) for key, (run, ckpt) in held.items()
            if not ckpt.model_state and not ckpt.optimizer_state and "models" in ckpt.scorer_state}


def finished_models(ckpt: StudentCheckpoint) -> StudentCheckpoint:
    """A model-by-model checkpoint without the state of a model stopped mid-training, timed up to
    the last finished model."""
    partial = ckpt.scorer_state.get("partial")
    return replace(ckpt, scorer_state={"models": ckpt.scorer_state["models"]},
                   seconds=partial["done_seconds"] if partial else ckpt.seconds)


def teacher_checkpoints(uri: str, experiment_id: str) -> dict[str, tuple[mlflow.entities.Run, TeacherCheckpoint]]:
    """Teacher key -> (run, checkpoint) of each teacher's newest run holding a training checkpoint
    file of at most TEACHER_BYTES."""
    client = MlflowClient(uri)
    newest = {r.data.tags[TEACHER]: r for r in search(uri, experiment_id, "teacher")
              if CHECKPOINT_EPOCH in r.data.tags and TEACHER in r.data.tags}
    small = {key: run for key, run in sorted(newest.items())
             if any(f.path.endswith("/checkpoint.pt") and f.file_size <= TEACHER_BYTES
                    for f in client.list_artifacts(run.info.run_id, "teacher"))}
    return {key: (run, load_checkpoint(uri, run.info.run_id)) for key, run in small.items()}


def export_runs(uri: str, experiment: str, path: Path) -> int:
    """Write the experiment's sweep runs, FINISHED cell runs, unfinished cells' model-by-model
    checkpoints (model_checkpoints) and teachers' training checkpoints (teacher_checkpoints) to
    `path` (JSON lines, oldest first); returns how many."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"no MLflow experiment {experiment!r} in {uri}")
    runs = [(r, None) for role in ROLES for r in search(uri, found.experiment_id, role)
            if role == "sweep" or r.info.status == "FINISHED"]
    runs += [(run, finished_models(ckpt)) for run, ckpt in model_checkpoints(uri, found.experiment_id).values()]
    runs += teacher_checkpoints(uri, found.experiment_id).values()
    runs.sort(key=lambda pair: (pair[0].info.start_time or 0, pair[0].info.run_id))
    folder = checkpoint_folder(path)
    with waiting_lock(folder / ".lock"):  # another export's new files are not stale
        names = {run.info.run_id: _write_checkpoint(ckpt, folder) for run, ckpt in runs if ckpt}
        lines = [json.dumps(record(client, run) | ({"checkpoint": f"{folder.name}/{names[run.info.run_id]}"}
                                                   if ckpt else {}), sort_keys=True) for run, ckpt in runs]
        _replace(path, "".join(line + "\n" for line in lines).encode())
        for stale in {f.name for f in folder.glob("*.pt")} - set(names.values()):
            (folder / stale).unlink()
    return len(lines)


def checkpoint_folder(path: Path) -> Path:
    """The folder of an export's checkpoint files: mlflow-runs.jsonl -> mlflow-runs.checkpoints."""
    return path.with_name(f"{path.stem}.checkpoints")


def _write_checkpoint(ckpt: StudentCheckpoint | TeacherCheckpoint, folder: Path) -> str:
    """The checkpoint as a file in `folder` named by its content (torch.save writes the same bytes
    for the same tensors); returns the name."""
    buffer = io.BytesIO()
    torch.save(vars(ckpt), buffer)
    content = buffer.getvalue()
    name = f"{hashlib.sha256(content).hexdigest()[:16]}.pt"
    if not (folder / name).is_file():
        _replace(folder / name, content)
    return name


def _replace(path: Path, content: bytes) -> None:
    """Write through a temporary file: a stop mid-write leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(content)
    os.replace(partial, path)


def read_records(path: Path) -> list[dict]:
    """The records of an export, checked before anything is written to a store."""
    if not path.is_file():
        raise ConfigError(f"no run export at {path}")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{number}: not a JSON line ({err.msg})") from None
        role = rec.get("tags", {}).get(ROLE) if isinstance(rec, dict) else None
        if role is None or rec.get("format") not in (1, FORMAT) or not (
                role in ROLES or role == "teacher" and "checkpoint" in rec and TEACHER in rec["tags"]):
            raise ConfigError(f"{path}:{number}: not a raydistill run record "
                              f"(format 1 or {FORMAT}, role sweep or cell, or teacher with its checkpoint)")
        if "checkpoint" in rec:
            rec["checkpoint"] = _read_checkpoint(path, number, rec["checkpoint"], rec["format"] == 1,
                                                 TeacherCheckpoint if role == "teacher" else StudentCheckpoint)
        records.append(rec)
    return records


def _read_checkpoint(path: Path, number: int, name: object, inline: bool,
                     kind: type) -> StudentCheckpoint | TeacherCheckpoint:
    """The checkpoint file a record names, in the export's checkpoint folder (`inline`: the
    checkpoint itself in base64, as format 1 wrote it): tensors and plain types only (torch.load's
    safe mode)."""
    if not inline:
        folder = checkpoint_folder(path)
        file = path.parent / str(name)
        if not isinstance(name, str) or file.parent != folder:
            raise ConfigError(f"{path}:{number}: its checkpoint must name a file in {folder.name}/, not {name!r}")
        if not file.is_file():
            raise ConfigError(f"{path}:{number}: its checkpoint file {name} is missing")
    try:
        source = io.BytesIO(base64.b64decode(name, validate=True)) if inline else file
        return kind(**torch.load(source, weights_only=True))
    except Exception as err:
        what = "checkpoint" if inline else f"checkpoint {name}"
        raise ConfigError(f"{path}:{number}: its {what} does not load ({type(err).__name__})") from None


def sweep_file(results: Path, name: str) -> Path:
    return results / name / FILE


def import_runs(uri: str, experiment: str, records: list[dict], artifact_root: Path | None = None) -> tuple[int, int]:
    """Restore the records (read_records) into `experiment` (created when missing); returns
    (restored, already there). A teacher the store already has a run of stays the store's own."""
    experiment_id = ensure_experiment(uri, experiment, artifact_root)
    client = MlflowClient(uri)
    present = {r.data.tags.get(RESTORED, r.info.run_id) for role in ROLES for r in search(uri, experiment_id, role)}
    done = set(finished_cells(uri, experiment_id))
    teachers = {r.data.tags.get(TEACHER) for r in search(uri, experiment_id, "teacher")}
    restored = 0
    for rec in records:
        if (rec["run_id"] in present or rec["tags"].get(CELL_KEY, "") in done
                or rec["tags"][ROLE] == "teacher" and rec["tags"].get(TEACHER) in teachers):
            continue
        _restore(client, experiment_id, rec)
        restored += 1
    return restored, len(records) - restored


def _restore(client: MlflowClient, experiment_id: str, rec: dict) -> None:
    tags = {**rec["tags"], RESTORED: rec["run_id"]}
    created = retrying(client.tracking_uri,
                       lambda: client.create_run(experiment_id, start_time=rec["start_time"], run_name=rec["run_name"]))
    run_id = created.info.run_id
    stamp = rec["end_time"] or rec["start_time"] or 0
    metrics = [Metric(k, v, stamp, 0) for k, v in rec["metrics"].items() if k not in rec["histories"]]
    metrics += [Metric(k, value, timestamp, step) for k, steps in rec["histories"].items()
                for step, value, timestamp in steps]
    for chunk in _chunks(metrics, 1000):
        client.log_batch(run_id, metrics=chunk)
    for chunk in _chunks([Param(k, v) for k, v in rec["params"].items()], 100):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks([RunTag(k, v) for k, v in tags.items()], 100):
        client.log_batch(run_id, tags=chunk)
    if "checkpoint" in rec:  # uploaded, then tagged: the tag marks a complete upload
        log_checkpoint(client.tracking_uri, run_id, rec["checkpoint"])
    # a sweep still running when exported runs nowhere once restored; a teacher holds no snapshot
    killed = rec["status"] == "RUNNING" or rec["tags"][ROLE] == "teacher"
    client.set_terminated(run_id, "KILLED" if killed else rec["status"], end_time=rec["end_time"])


def _chunks(items: list, size: int) -> Iterable[list]:
    return (items[i:i + size] for i in range(0, len(items), size))
