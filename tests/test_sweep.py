"""The smoke sweep under a local Ray on CPU: MLflow runs, teacher reuse, resume, kill -9, faults, bad input.

The smoke grid (sweeps/paper_grid.py --smoke) runs on tiny Fashion-MNIST-format IDX files written
here, so each sweep takes seconds of compute plus Ray's start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import mlflow
import pytest
import ray
from mlflow.tracking import MlflowClient

from raydistill.tune.grid import Grid, run_sweep

from conftest import make_mnist_like

REPO = Path(__file__).resolve().parents[1]
SMOKE_CELLS = {
    "fashion-mnist-baseline-kmeans-grad-l1-ipc1-e1-s0", "fashion-mnist-baseline-kmeans-grad-l1-ipc10-e1-s0",
    "fashion-mnist-baseline-kmeans-grad-l1-ipc1-e3-s0", "fashion-mnist-baseline-kmeans-grad-l1-ipc10-e3-s0",
    "fashion-mnist-baseline-full-e3-s0",
}
METRICS = {"accuracy", "sensitivity", "specificity", "auc", "teacher_accuracy", "time_load_s", "time_teacher_s",
           "time_gradients_s", "time_modification_s", "time_selection_s", "time_student_s", "time_evaluation_s",
           "time_total_s"}


@pytest.fixture(scope="module")
def fashion_tiny(tmp_path_factory) -> Path:
    return make_mnist_like(tmp_path_factory.mktemp("data"), folder="FashionMNIST")


def sweep_command(data: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "sweeps" / "paper_grid.py"), "--smoke", "--data-root", str(data),
            "--results", str(results), "--max-concurrent", "2", *extra]


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)


def all_runs(results: Path, role: str, experiment: str = "smoke"):
    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    frame = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.`raydistill.role` = '{role}'")
    return frame


@pytest.fixture(scope="module")
def smoke(fashion_tiny, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    results = tmp_path_factory.mktemp("smoke")
    return results, run(sweep_command(fashion_tiny, results))


def test_smoke_sweep_logs_one_finished_child_run_per_cell(smoke):
    results, proc = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = all_runs(results, "cell")
    assert sorted(cells["tags.mlflow.runName"]) == sorted(SMOKE_CELLS)
    assert set(cells["status"]) == {"FINISHED"}
    (sweep_id,) = all_runs(results, "sweep")["run_id"]
    assert set(cells["tags.mlflow.parentRunId"]) == {sweep_id}
    client = MlflowClient()
    for row in cells.itertuples():
        run = client.get_run(row.run_id)
        assert METRICS <= set(run.data.metrics), row._asdict()
        assert 0 <= run.data.metrics["accuracy"] <= 1
        assert {"git_commit", "device", "kmeans_backend"} <= set(run.data.tags)
        assert run.data.params["dataset"] == "fashion-mnist" and run.data.params["dataset_label"] == "fashion-mnist"
        files = {a.path for a in client.list_artifacts(row.run_id)}
        expected = {"result.json", "confusion.png", "roc.png"} | ({"distilled.pt", "distilled.png"}
                                                                  if "full" not in run.info.run_name else set())
        assert expected <= files, (run.info.run_name, files)
    assert (results / "tables" / "smoke" / "table1.md").is_file()


def test_cells_sharing_a_teacher_train_it_once(smoke):
    results, _ = smoke
    teachers = all_runs(results, "teacher")
    assert len(teachers) == 1  # four distilled cells, epochs 1 and 3, one teacher to epoch 3
    assert teachers["status"].tolist() == ["FINISHED"]
    tags = MlflowClient().get_run(teachers["run_id"][0]).data.tags
    assert tags["raydistill.milestone.1"] == tags["raydistill.milestone.3"] == "done"


def test_running_the_same_command_again_reruns_nothing(smoke, fashion_tiny):
    results, _ = smoke
    before = all_runs(results, "cell").set_index("run_id")["end_time"]
    again = run(sweep_command(fashion_tiny, results, "--no-tables"))
    assert again.returncode == 0, again.stderr[-3000:]
    after = all_runs(results, "cell").set_index("run_id")["end_time"]
    assert after.sort_index().equals(before.sort_index())
    assert len(all_runs(results, "teacher")) == 1 and len(all_runs(results, "sweep")) == 1
    assert "5/5 cells finished" in again.stdout


def test_kill_9_of_the_driver_then_resume_finishes_the_rest_without_duplicates(fashion_tiny, tmp_path):
    results = tmp_path / "killed"
    cmd = sweep_command(fashion_tiny, results, "--no-tables", "--max-concurrent", "1")
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    finished_before: set[str] = set()
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
        if (results / "mlflow.db").exists():
            try:
                cells = all_runs(results, "cell")
            except Exception:  # experiment not created yet, or the database busy
                continue
            finished_before = set(cells.loc[cells["status"] == "FINISHED", "run_id"]) if len(cells) else set()
            if finished_before:
                break
    assert driver.poll() is None, "the sweep ended before it could be killed:\n" + log.read_text()[-3000:]
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert 0 < len(finished_before) < len(SMOKE_CELLS)

    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    cells = all_runs(results, "cell")
    assert sorted(cells["tags.mlflow.runName"]) == sorted(SMOKE_CELLS)  # exactly one active run per cell
    assert set(cells["status"]) == {"FINISHED"}
    assert finished_before <= set(cells["run_id"])  # cells finished before the kill were not run again
    teachers = all_runs(results, "teacher")
    assert (teachers["status"] == "FINISHED").sum() == 1


def test_injected_faults_are_retried_and_a_persistent_one_fails_alone(fashion_tiny, tmp_path):
    results = tmp_path / "faults"
    proc = run(sweep_command(fashion_tiny, results, "--no-tables", "--max-failures", "1"),
               RAYDISTILL_INJECT_FAULT="ipc1-e1:1,ipc10-e3")
    assert proc.returncode == 1
    assert "failed cells: fashion-mnist-baseline-kmeans-grad-l1-ipc10-e3-s0" in proc.stderr
    cells = all_runs(results, "cell").set_index("tags.mlflow.runName")
    assert sorted(cells.index) == sorted(SMOKE_CELLS)
    assert cells.loc["fashion-mnist-baseline-kmeans-grad-l1-ipc10-e3-s0", "status"] == "FAILED"
    assert (cells.drop("fashion-mnist-baseline-kmeans-grad-l1-ipc10-e3-s0")["status"] == "FINISHED").all()
    assert (results / "faults" / "fashion-mnist-baseline-kmeans-grad-l1-ipc1-e1-s0").read_text() == "2"
    assert (results / "faults" / "fashion-mnist-baseline-kmeans-grad-l1-ipc10-e3-s0").read_text() == "2"
    assert all_runs(results, "sweep")["status"].tolist() == ["FAILED"]


# ---- bad input: each fails before Ray starts or any trial runs -----------------------------------

def args_for(data: Path, results: Path, **extra) -> Namespace:
    base = dict(data_root=str(data), download=False, results=results, tracking_uri=None, address=None,
                max_concurrent=None, seeds=[0], name=None, max_failures=0, dry_run=False)
    return Namespace(**{**base, **extra})


@pytest.mark.parametrize("part,message", [
    ({"dataset": ["fashion-mnist"], "model": ["vgg16"]}, "unknown model 'vgg16'"),
    ({"dataset": ["svhn"]}, "unknown dataset 'svhn'"),
    ({"dataset": ["fashion-mnist"], "method": ["kmeans"], "modifier": ["grad-l3"]}, "unknown modifier 'grad-l3'"),
    ({"dataset": ["fashion-mnist"], "epochs": [0]}, "teacher-epochs must be a positive integer"),
    ({"dataset": ["fashion-mnist"], "ipc": [13]}, "ipc 13 is larger than the smallest class"),
    ({"dataset": ["fashion-mnist"], "colour": ["red"]}, "unexpected keyword argument 'colour'"),
])
def test_bad_grid_fails_before_any_trial(part, message, fashion_tiny, tmp_path, capsys):
    code = run_sweep(Grid("bad", [part]), args_for(fashion_tiny, tmp_path / "r"))
    assert code == 2 and message in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "r").exists()


def test_missing_data_root_fails_before_any_trial(tmp_path, capsys):
    code = run_sweep(Grid("bad", [{"dataset": ["fashion-mnist"]}]), args_for(tmp_path / "nowhere", tmp_path / "r"))
    assert code == 2 and "missing train-images-idx3-ubyte" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_unreachable_tracking_server_fails_before_any_trial(fashion_tiny, tmp_path, capsys):
    code = run_sweep(Grid("bad", [{"dataset": ["fashion-mnist"]}]),
                     args_for(fashion_tiny, tmp_path / "r", tracking_uri="http://127.0.0.1:9"))
    assert code == 2 and "MLflow tracking server http://127.0.0.1:9 is not reachable" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_dry_run_prints_cells_and_resources(fashion_tiny, tmp_path):
    proc = run(sweep_command(fashion_tiny, tmp_path / "r", "--dry-run"))
    assert proc.returncode == 0
    assert all(cell in proc.stdout for cell in SMOKE_CELLS)
    assert "5 cells, 4 with a teacher; teacher epochs: 3 with reuse, 8 without" in proc.stdout
    assert not (tmp_path / "r").exists()
