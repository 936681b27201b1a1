"""An export of an experiment's runs restores into an empty store as the same finished cells
(what the tables read and what a resumed sweep skips), once, and without the machine's paths."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from analysis.runs import load_cells
from raydistill import protocols, tracking
from raydistill.archive import export_runs, import_runs, read_records
from raydistill.config import TrialConfig
from raydistill.errors import ConfigError
from raydistill.pipeline import run_trial
from raydistill.protocols import StudentCheckpoint
from raydistill.teacher import TeacherCheckpoint

CELL = {"dataset": "mnist", "model": "lenet", "method": "random", "modifier": "none", "ipc": "10",
        "student_epochs": "1000", "seed": "0", "protocol": "dc", "eval_sets": "5", "eval_runs": "2",
        "data_root": "/some/machine/datasets"}


def _cell(client: MlflowClient, eid: str, key: str, status: str, accuracies: list[float]) -> str:
    run = client.create_run(eid, run_name=f"cell-{key}", tags={tracking.ROLE: "cell", tracking.CELL_KEY: key,
                                                               "mlflow.source.name": "/some/machine/worker.py"})
    for name, value in CELL.items():
        client.log_param(run.info.run_id, name, value)
    for step, value in enumerate(accuracies):
        client.log_metric(run.info.run_id, "accuracy_model", value, step=step)
    if accuracies:
        client.log_metric(run.info.run_id, "accuracy", sum(accuracies) / len(accuracies))
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture()
def source(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path}/source.db"
    tracking.init_store(uri)
    client = MlflowClient(uri)
    eid = tracking.ensure_experiment(uri, "controls", tmp_path / "artifacts")
    sweep = client.create_run(eid, run_name="controls", tags={tracking.ROLE: "sweep", tracking.SWEEP: "controls",
                                                              tracking.MACHINE: "cpu X, cores 2"})  # still RUNNING
    client.log_param(sweep.info.run_id, "cells", "16")
    _cell(client, eid, "a" * 16, "FINISHED", [0.91, 0.93, 0.95])
    _cell(client, eid, "b" * 16, "FAILED", [])
    _cell(client, eid, "c" * 16, "KILLED", [0.5])  # an interrupted attempt: its work is not a result
    teacher = client.create_run(eid, tags={tracking.ROLE: "teacher"})
    client.set_terminated(teacher.info.run_id, "FINISHED")
    return uri


def test_an_export_restores_as_the_same_finished_cells_once(source: str, tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    assert export_runs(source, "controls", path) == 2  # the sweep and the one finished cell
    text = path.read_text()
    assert "/some/machine" not in text  # no machine's path is committed with the results
    target = f"sqlite:///{tmp_path}/target.db"
    tracking.init_store(target)
    assert import_runs(target, "controls", read_records(path), tmp_path / "art") == (2, 0)
    assert import_runs(target, "controls", read_records(path), tmp_path / "art") == (0, 2)

    eid = MlflowClient(target).get_experiment_by_name("controls").experiment_id
    assert set(tracking.finished_cells(target, eid)) == {"a" * 16}  # what a resumed sweep skips
    old, new = load_cells("controls", source), load_cells("controls", target)
    columns = ["dataset", "model", "method", "ipc", "seed", "accuracy", "tags.raydistill.cell_key", "start_time"]
    assert new[columns].equals(old[columns])
    run = MlflowClient(target).get_run(new["run_id"][0])
    history = MlflowClient(target).get_metric_history(run.info.run_id, "accuracy_model")
    assert [(m.step, m.value) for m in history] == [(0, 0.91), (1, 0.93), (2, 0.95)]
    assert "data_root" not in run.data.params and run.data.params["ipc"] == "10"
    sweeps = tracking.search(target, eid, "sweep")
    assert len(sweeps) == 1 and sweeps[0].info.status == "KILLED"  # it runs nowhere once restored
    assert sweeps[0].data.tags[tracking.MACHINE] == "cpu X, cores 2"


def test_a_store_that_finished_the_cell_itself_keeps_its_own_run(source: str, tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    export_runs(source, "controls", path)
    target = f"sqlite:///{tmp_path}/target.db"
    tracking.init_store(target)
    eid = tracking.ensure_experiment(target, "controls", tmp_path / "art")
    mine = _cell(MlflowClient(target), eid, "a" * 16, "FINISHED", [0.5])
    assert import_runs(target, "controls", read_records(path)) == (1, 1)  # only the sweep run is new
    assert tracking.finished_cells(target, eid)["a" * 16].info.run_id == mine


def test_an_unfinished_dc_cell_travels_with_its_finished_models_and_continues_on_a_new_store(
        mnist_root: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = TrialConfig(dataset="mnist", method="random", modifier="none", protocol="dc", ipc=2, student_epochs=1,
                      eval_runs=2, eval_sets=2, data_root=str(mnist_root), device="cpu")
    whole = run_trial(cfg)
    source = f"sqlite:///{tmp_path}/source.db"
    tracking.init_store(source)
    client = MlflowClient(source)
    eid = tracking.ensure_experiment(source, "controls", tmp_path / "artifacts")
    stopped = _cell(client, eid, "d" * 16, "RUNNING", [])
    monkeypatch.setattr(protocols, "CHECKPOINT_SECONDS", 0.0)  # a model's state after each pass but its last

    def keep(checkpoint: StudentCheckpoint) -> None:
        tracking.log_checkpoint(source, stopped, checkpoint)
        if checkpoint.epoch == 3 and "partial" in checkpoint.scorer_state:
            raise KeyboardInterrupt  # stopped inside the fourth of four models

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, on_student_checkpoint=keep)
    client.set_terminated(stopped, "KILLED")
    weights = _cell(client, eid, "e" * 16, "KILLED", [])  # a paper-protocol student: weights stay behind
    tracking.log_checkpoint(source, weights, StudentCheckpoint(5, {"w": torch.ones(2)}, {}, {}, 1.0, "set"))
    kept_for_twins = _cell(client, eid, "f" * 16, "FINISHED", [0.7])  # its trained student stays behind too
    tracking.log_checkpoint(source, kept_for_twins, StudentCheckpoint(9, {"w": torch.ones(2)}, {}, {}, 1.0, "set", True))

    path = tmp_path / "runs.jsonl"
    assert export_runs(source, "controls", path) == 2  # the finished cell and the interrupted dc cell
    target = f"sqlite:///{tmp_path}/target.db"
    tracking.init_store(target)
    assert import_runs(target, "controls", read_records(path), tmp_path / "art") == (2, 0)
    target_eid = MlflowClient(target).get_experiment_by_name("controls").experiment_id
    assert set(tracking.finished_cells(target, target_eid)) == {"f" * 16}  # three models are not a result
    assert tracking.latest_student_checkpoint(target, target_eid, ["f" * 16]) is None  # no claim without the file
    run, held = tracking.latest_student_checkpoint(target, target_eid, ["d" * 16])
    assert run.info.status == "KILLED" and held.epoch == 3
    _, at_source = tracking.latest_student_checkpoint(source, eid, ["d" * 16])
    partial = at_source.scorer_state["partial"]
    assert "partial" not in held.scorer_state  # the fourth model's weights and momentum stay behind
    assert held.seconds == partial["done_seconds"] < at_source.seconds  # timed to the third model's end

    trained = []
    real = protocols.train_convnet
    monkeypatch.setattr(protocols, "train_convnet", lambda *a, **k: trained.append(k["resume"]) or real(*a, **k))
    resumed = run_trial(cfg, student_resume=held)
    assert trained == [None]  # only the fourth model trains on the new store, from its first pass
    assert resumed.metrics["accuracy_runs"] == whole.metrics["accuracy_runs"]
    np.testing.assert_array_equal(resumed.proba, whole.proba)


def test_a_teacher_travels_as_its_training_checkpoint_and_trains_on_on_a_new_store(
        mnist_root: Path, tmp_path: Path, monkeypatch) -> None:
    from raydistill import archive
    from raydistill.data import load
    from raydistill.teacher import train_teacher

    data = load("mnist", mnist_root)
    tensors = data.to(torch.device("cpu"))
    settings = dict(seed=3, lr=1e-3, batch_size=16, with_grad_l1=True)
    (straight,) = train_teacher("lenet", data, tensors, [3], **settings)
    source = f"sqlite:///{tmp_path}/source.db"
    tracking.init_store(source)
    eid = tracking.ensure_experiment(source, "paper", tmp_path / "artifacts")
    stopped = tracking.teacher_run(source, eid, "k" * 16, {"model": "lenet"})
    (snap,) = train_teacher("lenet", data, tensors, [2], **settings,
                            on_checkpoint=lambda ckpt: tracking.log_checkpoint(source, stopped, ckpt))
    tracking.log_snapshot(source, stopped, snap)
    tracking.end_run(source, stopped, "KILLED")
    big = tracking.teacher_run(source, eid, "b" * 16, {"model": "resnet34"})
    tracking.log_checkpoint(source, big, TeacherCheckpoint(1, {"w": torch.ones(64)}, {}, 1.0))

    path = tmp_path / "runs.jsonl"
    monkeypatch.setattr(archive, "TEACHER_BYTES", 10_000)  # LeNet-5's is larger: it stays behind
    assert export_runs(source, "paper", path) == 1
    files = {f.name: f.read_bytes() for f in (tmp_path / "runs.checkpoints").glob("*.pt")}
    monkeypatch.undo()
    assert export_runs(source, "paper", path) == 2  # both teachers' checkpoints, no other run
    again = {f.name: f.read_bytes() for f in (tmp_path / "runs.checkpoints").glob("*.pt")}
    assert len(files) == 1 and len(again) == 2 and files.items() <= again.items()  # unchanged: the same file
    assert path.stat().st_size < 10_000  # the record of runs names the files, it does not carry them
    target = f"sqlite:///{tmp_path}/target.db"
    tracking.init_store(target)
    assert import_runs(target, "paper", read_records(path), tmp_path / "art") == (2, 0)
    assert import_runs(target, "paper", read_records(path), tmp_path / "art") == (0, 2)

    target_eid = MlflowClient(target).get_experiment_by_name("paper").experiment_id
    assert tracking.teachers(target, target_eid)["k" * 16][1] == set()  # its snapshot stayed behind
    run_id = tracking.teacher_run(target, target_eid, "k" * 16, {"model": "lenet"})
    held = tracking.load_checkpoint(target, run_id)
    assert held.epoch == 2
    (resumed,) = train_teacher("lenet", data, tensors, [3], **settings, resume=held)
    assert all(torch.equal(resumed.state_dict[k], straight.state_dict[k]) for k in straight.state_dict)
    assert torch.equal(resumed.grad_l1, straight.grad_l1)

    MlflowClient(source).delete_tag(big, tracking.CHECKPOINT_EPOCH)  # it holds no checkpoint any more
    assert export_runs(source, "paper", path) == 1
    assert {f.name for f in (tmp_path / "runs.checkpoints").glob("*.pt")} == set(again) - set(files)  # its file is gone


def test_a_store_with_its_own_run_of_a_teacher_keeps_it(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path}/source.db"
    tracking.init_store(source)
    eid = tracking.ensure_experiment(source, "paper", tmp_path / "artifacts")
    tracking.log_checkpoint(source, tracking.teacher_run(source, eid, "k" * 16, {}),
                            TeacherCheckpoint(5, {"w": torch.ones(2)}, {}, 1.0))
    path = tmp_path / "runs.jsonl"
    export_runs(source, "paper", path)
    target = f"sqlite:///{tmp_path}/target.db"
    tracking.init_store(target)
    target_eid = tracking.ensure_experiment(target, "paper", tmp_path / "art")
    mine = tracking.teacher_run(target, target_eid, "k" * 16, {})
    assert import_runs(target, "paper", read_records(path)) == (0, 1)
    assert tracking.teacher_run(target, target_eid, "k" * 16, {}) == mine


def test_an_export_of_format_1_with_its_checkpoint_inline_still_restores(tmp_path: Path) -> None:
    ckpt = TeacherCheckpoint(5, {"w": torch.arange(3.0)}, {}, 1.0)
    buffer = io.BytesIO()
    torch.save(vars(ckpt), buffer)  # as format 1 wrote it: the checkpoint in base64 in its line
    line = {"format": 1, "tags": {"raydistill.role": "teacher", tracking.TEACHER: "k" * 16},
            "checkpoint": base64.b64encode(buffer.getvalue()).decode()}
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(line) + "\n" + json.dumps(line | {"checkpoint": "bm90IGEgY2hlY2twb2ludA=="}) + "\n")
    with pytest.raises(ConfigError, match="runs.jsonl:2: its checkpoint does not load"):
        read_records(path)
    path.write_text(json.dumps(line) + "\n")
    (held,) = [r["checkpoint"] for r in read_records(path)]
    assert held.epoch == 5 and torch.equal(held.model_state["w"], torch.arange(3.0))


@pytest.mark.parametrize("name, says", [("runs.checkpoints/bad.pt", "its checkpoint runs.checkpoints/bad.pt does not load"),
                                        ("runs.checkpoints/gone.pt", "its checkpoint file runs.checkpoints/gone.pt is missing"),
                                        ("runs.checkpoints/../bad.pt", "its checkpoint must name a file in runs.checkpoints/")])
def test_a_checkpoint_that_does_not_load_is_refused_in_one_line(tmp_path: Path, name: str, says: str) -> None:
    path = tmp_path / "runs.jsonl"
    (tmp_path / "runs.checkpoints").mkdir()
    (tmp_path / "runs.checkpoints" / "bad.pt").write_text("not a checkpoint")
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    path.write_text(f'{{"format": 2, "tags": {{"raydistill.role": "cell"}}, "checkpoint": "{name}"}}\n')
    with pytest.raises(ConfigError, match=f"runs.jsonl:1: {re.escape(says)}"):
        read_records(path)


@pytest.mark.parametrize("line, says", [("{not json", "not a JSON line"),
                                        ('{"format": 1, "tags": {"raydistill.role": "teacher"}}', "not a raydistill"),
                                        ('{"format": 9, "tags": {"raydistill.role": "cell"}}', "not a raydistill")])
def test_a_bad_export_is_refused_before_the_store_is_touched(tmp_path: Path, line: str, says: str) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text(line + "\n")
    target = f"sqlite:///{tmp_path}/target.db"
    tracking.init_store(target)
    with pytest.raises(ConfigError, match=f"runs.jsonl:1: {says}"):
        import_runs(target, "controls", read_records(path))
    assert MlflowClient(target).get_experiment_by_name("controls") is None


def test_a_sweep_with_a_bad_export_says_so_in_one_line_before_any_work(tmp_path: Path, capsys) -> None:
    from conftest import make_mnist_like
    from raydistill.cli import main

    data = make_mnist_like(tmp_path / "data", folder="FashionMNIST")
    results = tmp_path / "results"
    (results / "smoke").mkdir(parents=True)
    (results / "smoke" / "mlflow-runs.jsonl").write_text('{"format": 1, "tags": {}}\n')
    code = main(["sweep", "paper-grid", "--smoke", "--data-root", str(data), "--results", str(results)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "mlflow-runs.jsonl:1: not a raydistill run record" in lines[0]
    assert not (results / "mlflow.db").exists()  # nothing was created, nothing trained
