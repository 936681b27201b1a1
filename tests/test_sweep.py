"""Sweeps under a local Ray on CPU: one MLflow run per cell keyed by its whole config, teachers
trained once and released by milestone, resume after kill -9, retries, failures that name their cause.

The smoke grid (sweeps/paper_grid.py --smoke) runs on tiny Fashion-MNIST-format IDX files written
here, so each sweep takes seconds of compute plus Ray's start-up.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_mnist_like
from sweeps_util import SMOKE_CELLS, client, run, runs, sweep_command

METRICS = {"accuracy", "sensitivity", "specificity", "auc", "teacher_accuracy", "time_load_s", "time_teacher_s",
           "time_gradients_s", "time_modification_s", "time_selection_s", "time_student_s", "time_total_s"}


@pytest.fixture(scope="module")
def fashion_tiny(tmp_path_factory) -> Path:
    return make_mnist_like(tmp_path_factory.mktemp("data"), folder="FashionMNIST")


@pytest.fixture(scope="module")
def smoke(fashion_tiny, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    results = tmp_path_factory.mktemp("smoke")
    return results, run(sweep_command(fashion_tiny, results))


def test_smoke_sweep_logs_one_finished_visible_run_per_cell(smoke):
    results, proc = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = runs(results, "cell")
    assert sorted(r.info.run_name for r in cells) == sorted(SMOKE_CELLS)
    assert {r.info.status for r in cells} == {"FINISHED"}
    (sweep,) = runs(results, "sweep")
    c = client(results)
    for r in cells:
        tags, metrics = r.data.tags, r.data.metrics
        assert METRICS <= set(metrics), r.info.run_name
        assert 0 <= metrics["accuracy"] <= 1
        assert "mlflow.parentRunId" not in tags and tags["raydistill.sweep_run"] == sweep.info.run_id
        assert len(tags["raydistill.cell_key"]) == 16 and tags["ray_node_id"]
        assert tags["raydistill.forensics"] == "false" and tags["raydistill.hypothesis"] == "honest"
        assert {"git_commit", "device", "kmeans_backend"} <= set(tags)
        epochs = int(r.data.params["student_epochs"])
        history = c.get_metric_history(r.info.run_id, "student_train_loss")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))  # every epoch, live
        assert c.get_metric_history(r.info.run_id, "student_test_accuracy")[-1].step == epochs
        files = {a.path for a in c.list_artifacts(r.info.run_id)}
        expected = {"result.json", "confusion.png", "roc.png"} | ({"distilled.pt", "distilled.png"}
                                                                  if "full" not in r.info.run_name else set())
        assert expected <= files, (r.info.run_name, files)
    assert c.get_run(sweep.info.run_id).info.status == "FINISHED"
    comparison = {a.path for a in c.list_artifacts(sweep.info.run_id, "comparison")}
    assert {"comparison/report.html", "comparison/table1.md"} <= comparison
    assert (results / "tables" / "smoke" / "table1.md").is_file()
    assert len(proc.stderr.splitlines()) < 40  # concise: a line per trial start and end, and a summary


def test_cells_sharing_a_teacher_train_it_once_and_start_after_its_milestone(smoke):
    results, _ = smoke
    (teacher,) = runs(results, "teacher")  # four distilled cells, epochs 1 and 3, one teacher to epoch 3
    assert teacher.info.status == "FINISHED"
    assert teacher.data.tags["raydistill.milestone.1"] == teacher.data.tags["raydistill.milestone.3"] == "done"
    uploaded = {m.step: m.timestamp for m in client(results).get_metric_history(teacher.info.run_id, "test_accuracy")}
    for cell in runs(results, "cell"):
        if "grad-l1" in cell.info.run_name:  # no cell trial started before its milestone existed
            assert cell.info.start_time >= uploaded[int(cell.data.params["teacher_epochs"])]


def test_running_the_same_command_again_reruns_nothing(smoke, fashion_tiny):
    results, _ = smoke
    before = {r.info.run_id: r.info.end_time for r in runs(results, "cell")}
    again = run(sweep_command(fashion_tiny, results, "--no-tables"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {r.info.run_id: r.info.end_time for r in runs(results, "cell")} == before
    assert len(runs(results, "teacher")) == 1 and len(runs(results, "sweep")) == 1
    assert "5/5 cells finished (0 in this run, 5 earlier)" in again.stderr


def test_the_committed_export_alone_continues_the_sweep_on_a_new_store(smoke, fashion_tiny, tmp_path):
    results, _ = smoke
    export = results / "smoke" / "mlflow-runs.jsonl"  # written by the sweep as it ended
    fresh = tmp_path / "elsewhere"
    (fresh / "smoke").mkdir(parents=True)
    shutil.copy(export, fresh / "smoke" / export.name)  # what a clone of the repository carries: no store
    proc = run(sweep_command(fashion_tiny, fresh, "--no-tables"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5/5 cells finished (0 in this run, 5 earlier)" in proc.stderr and "6 runs restored" in proc.stderr
    accuracy = {r.data.tags["raydistill.cell_key"]: r.data.metrics["accuracy"] for r in runs(results, "cell")}
    assert {r.data.tags["raydistill.cell_key"]: r.data.metrics["accuracy"] for r in runs(fresh, "cell")} == accuracy
    assert not runs(fresh, "teacher")  # nothing was trained again


def test_a_teacher_in_the_export_trains_on_from_its_checkpoint_on_a_new_store(fashion_tiny, tmp_path):
    first, fresh = tmp_path / "first", tmp_path / "fresh"
    lenet = ("--no-tables", "--set", "model=lenet")  # LeNet-5's checkpoint is small enough to travel
    proc = run(sweep_command(fashion_tiny, first, *lenet, "--only", "*-e1"))  # the teacher stops at epoch 1
    assert proc.returncode == 0, proc.stderr[-3000:]
    (fresh / "smoke").mkdir(parents=True)
    for name in ("mlflow-runs.jsonl", "mlflow-runs.checkpoints"):  # no store travels, only the export
        copy = shutil.copytree if name.endswith("checkpoints") else shutil.copy
        copy(first / "smoke" / name, fresh / "smoke" / name)
    proc = run(sweep_command(fashion_tiny, fresh, *lenet))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5/5 cells finished (3 in this run, 2 earlier)" in proc.stderr
    (teacher,) = runs(fresh, "teacher")
    assert teacher.info.status == "FINISHED" and "raydistill.restored_from" in teacher.data.tags
    trained = [m.step for m in client(fresh).get_metric_history(teacher.info.run_id, "train_loss")]
    assert 1 not in trained and {2, 3} <= set(trained)  # epoch 1 came with the checkpoint: only 2-3 trained here


def test_changing_a_fixed_setting_under_the_same_name_runs_new_cells(smoke, fashion_tiny, tmp_path):
    results = tmp_path / "copy"
    shutil.copytree(smoke[0], results)
    before = {r.info.run_id for r in runs(results, "cell")}
    proc = run(sweep_command(fashion_tiny, results, "--no-tables", "--set", "alpha=0.01"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = runs(results, "cell")
    assert before <= {r.info.run_id for r in cells} and len(cells) == 10  # five old cells kept, five new
    new = [r for r in cells if r.info.run_id not in before]
    assert {r.data.params["alpha"] for r in new} == {"0.01"}
    assert len(runs(results, "teacher")) == 1  # alpha is not a teacher setting: the teacher is reused


def test_kill_9_of_the_driver_then_resume_finishes_the_rest_without_duplicates(fashion_tiny, tmp_path):
    results = tmp_path / "killed"
    cmd = sweep_command(fashion_tiny, results, "--no-tables", "--max-concurrent", "1")
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    finished_before: set[str] = set()
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None and not finished_before:
        time.sleep(0.5)
        if (results / "mlflow.db").exists():
            finished_before = {r.info.run_id for r in runs(results, "cell") if r.info.status == "FINISHED"}
    assert driver.poll() is None, "the sweep ended before it could be killed:\n" + log.read_text()[-3000:]
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert 0 < len(finished_before) < len(SMOKE_CELLS)

    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    cells = runs(results, "cell")
    assert sorted(r.info.run_name for r in cells) == sorted(SMOKE_CELLS)  # exactly one active run per cell
    assert {r.info.status for r in cells} == {"FINISHED"}
    assert finished_before <= {r.info.run_id for r in cells}  # cells finished before the kill were not run again
    assert [t.info.status for t in runs(results, "teacher")] == ["FINISHED"]


def test_injected_faults_are_retried_and_a_persistent_one_fails_alone(fashion_tiny, tmp_path):
    results = tmp_path / "faults"
    proc = run(sweep_command(fashion_tiny, results, "--no-tables", "--max-failures", "1"),
               RAYDISTILL_INJECT_FAULT="ipc1-e1:1,ipc10-e3")
    assert proc.returncode == 1
    assert "failed: kmeans-grad-l1-ipc10-e3: RuntimeError: injected fault" in proc.stderr
    cells = {r.info.run_name: r for r in runs(results, "cell")}
    assert sorted(cells) == sorted(SMOKE_CELLS)
    assert cells.pop("kmeans-grad-l1-ipc10-e3").info.status == "FAILED"
    assert {r.info.status for r in cells.values()} == {"FINISHED"}
    assert (results / "faults" / "kmeans-grad-l1-ipc1-e1").read_text() == "2"
    assert (results / "faults" / "kmeans-grad-l1-ipc10-e3").read_text() == "2"
    assert [r.info.status for r in runs(results, "sweep")] == ["FAILED"]


def test_a_failed_teacher_fails_its_cells_with_its_error_and_the_same_command_retries_it(fashion_tiny, tmp_path):
    results = tmp_path / "teacher"
    cmd = sweep_command(fashion_tiny, results, "--no-tables", "--max-failures", "0")
    proc = run(cmd, RAYDISTILL_INJECT_FAULT="teacher-")
    assert proc.returncode == 1, proc.stderr[-3000:]
    cells = {r.info.run_name: r for r in runs(results, "cell")}
    assert cells.pop("full-e3").info.status == "FINISHED"  # needs no teacher
    for cell in cells.values():
        assert cell.info.status == "FAILED"
        error = cell.data.tags["raydistill.error"]
        assert error.startswith("teacher teacher-baseline-") and "RuntimeError: injected fault" in error
    retried = run(cmd)
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert {r.info.status for r in runs(results, "cell")} == {"FINISHED"} and len(runs(results, "cell")) == 5
    assert len([r for r in runs(results, "cell", deleted=True) if r.info.lifecycle_stage == "deleted"]) == 4


def test_ready_trials_go_teachers_honest_cells_then_hypotheses_taking_turns_cheapest_first():
    import numpy as np

    from raydistill.config import TrialConfig
    from raydistill.data import Dataset, Split
    from raydistill.tune.grid import Cell
    from raydistill.tune.runner import _cell_config, priorities
    from raydistill.tune.scheduler import CellReleaser

    labels = np.arange(60) % 3  # 3 classes, 60 training images
    split = Split(np.zeros((60, 1, 4, 4), np.uint8), labels)
    data = Dataset("tiny", "tiny", ["a", "b", "c"], split, split, (0.0,), (1.0,))
    grid = [("fit-30", {"score_on": "fit", "student_epochs": 30}), ("fit-10", {"score_on": "fit", "student_epochs": 10}),
            ("train-10", {"score_on": "train", "student_epochs": 10}), ("honest-10", {"student_epochs": 10}),
            ("fit-full-6", {"score_on": "fit", "student_epochs": 6, "method": "full", "train_limit": 30}),
            ("train-ipc2-20", {"score_on": "train", "student_epochs": 20, "ipc": 2}), ("honest-20", {"student_epochs": 20}),
            ("fit-ipc1-20", {"score_on": "fit", "student_epochs": 20, "ipc": 1})]
    cells = [Cell(name, name, TrialConfig(**{"method": "random", "modifier": "none", **knobs})) for name, knobs in grid]
    datasets = {cells[0].data_key: data}
    # images the student sees, per hypothesis: fit 20x1x3=60 < 6x30=180 (limited full split) < 10x10x3=300 < 900;
    # train 20x2x3=120 < 300
    # 18 x tier + 2 x grid index + 1; hypotheses: tier 2 + rank
    assert priorities(cells, datasets) == [91, 75, 59, 7, 63, 47, 13, 51]
    teacher = {"job": {"kind": "teacher", "priority": 0, "key": "t", "name": "teacher"}}
    configs = [(c, _cell_config(c, False, p)) for c, p in zip(cells, priorities(cells, datasets))]
    searcher = CellReleaser([(None, teacher)], configs, done={})
    assert searcher.total == len(cells) + 1
    order = [searcher.suggest(str(i))["job"]["name"] for i in range(len(cells) - 1)]
    # train-10 and fit-10 only score honest-10's student (twins): they wait for its trial, then go first
    assert order == ["teacher", "honest-10", "honest-20", "train-ipc2-20", "fit-ipc1-20", "fit-full-6", "fit-30"]
    assert searcher.suggest("7") is None  # waiting, not finished
    searcher.on_trial_complete("2")  # honest-20 has no twin: nothing is released
    assert searcher.suggest("7") is None
    searcher.on_trial_complete("1")  # honest-10 kept its student
    assert [searcher.suggest(str(i))["job"]["name"] for i in (7, 8)] == ["train-10", "fit-10"]
    assert searcher.suggest("9") == CellReleaser.FINISHED


def test_the_first_seed_goes_first_then_the_other_seeds_then_hypotheses_and_teachers_just_before_their_first_cell():
    import numpy as np

    from raydistill.config import TrialConfig
    from raydistill.data import Dataset, Split
    from raydistill.tune.grid import Cell
    from raydistill.tune.runner import _cell_config, _teacher_config, priorities, teacher_priorities
    from raydistill.tune.grid import teacher_jobs
    from raydistill.tune.scheduler import CellReleaser

    split = Split(np.zeros((30, 1, 4, 4), np.uint8), np.arange(30) % 3)
    data = Dataset("tiny", "tiny", ["a", "b", "c"], split, split, (0.0,), (1.0,))
    specs = [("s1-shift", {"seed": 1}), ("s0-random", {"method": "random", "modifier": "none"}),
             ("s1-random", {"seed": 1, "method": "random", "modifier": "none"}), ("s0-shift", {}),
             ("s0-teacher-init", {"student_init": "teacher"}), ("s2-shift", {"seed": 2})]
    cells = [Cell(name, name, TrialConfig(dataset="tiny", **knobs)) for name, knobs in specs]
    cell_priorities = priorities(cells, {cells[0].data_key: data})
    assert cell_priorities == [15, 3, 19, 7, 37, 25]  # 14 x tier + 2 x grid index + 1
    first = teacher_priorities(cells, cell_priorities)
    # seed 0's teacher serves an honest seed-0 cell (and a hypothesis): just before s0-shift
    assert first == {cells[3].teacher_key: 6, cells[0].teacher_key: 14, cells[5].teacher_key: 24}
    jobs = teacher_jobs(cells)
    teachers = [(job, _teacher_config(job, False, set(), first[key])) for key, job in jobs.items()]
    configs = [(c, _cell_config(c, False, p)) for c, p in zip(cells, cell_priorities)]
    searcher = CellReleaser(teachers, configs, done={})
    order = [searcher.suggest(str(i))["job"]["name"] for i in range(5)]
    seed0, seed1, seed2 = (jobs[cells[i].teacher_key].name for i in (3, 0, 5))
    assert order == ["s0-random", seed0, seed1, "s1-random", seed2]  # grid order within a tier
    for trial in ("4", "2", "1"):  # every teacher reaches the cells' milestone, seed 2's first
        searcher.on_trial_result(trial, {"milestone": 5})
    order = [searcher.suggest(str(i))["job"]["name"] for i in range(5, 9)]
    assert order == ["s0-shift", "s1-shift", "s2-shift", "s0-teacher-init"]  # not in the order released


def test_twins_wait_for_the_trial_training_their_student_and_the_next_one_trains_it_if_that_failed():
    from raydistill.config import TrialConfig
    from raydistill.tune.grid import Cell
    from raydistill.tune.runner import _cell_config, twins
    from raydistill.tune.scheduler import CellReleaser

    knobs = [("a", {}), ("b", {"score_on": "train"}), ("c", {"epoch_pick": "best-test"}), ("d", {"score_on": "fit"}),
             ("other-seed", {"seed": 1, "score_on": "fit"}), ("other-ipc", {"ipc": 3})]
    cells = [Cell(f"k{name}", name, TrialConfig(method="random", modifier="none", **changes)) for name, changes in knobs]
    groups = twins(cells)
    assert groups["ka"] == ["kb", "kc", "kd"] and groups["kd"] == ["ka", "kb", "kc"]
    assert groups["kother-seed"] == [] and groups["kother-ipc"] == []
    configs = [(c, _cell_config(c, False, 2 + i, groups[c.key])) for i, c in enumerate(cells)]
    searcher = CellReleaser([], configs, done={})
    assert [searcher.suggest(n)["job"]["name"] for n in ("1", "2", "3")] == ["a", "other-seed", "other-ipc"]
    assert searcher.suggest("4") is None
    searcher.on_trial_complete("1", error=True)  # a failed for good: its student was not kept
    assert searcher.suggest("4")["job"]["name"] == "b" and searcher.suggest("5") is None
    searcher.on_trial_complete("4")
    assert [searcher.suggest(n)["job"]["name"] for n in ("5", "6")] == ["c", "d"]
    assert searcher.suggest("7") == CellReleaser.FINISHED


def test_cells_that_only_score_a_student_another_way_share_one_training_and_get_its_result(fashion_tiny, tmp_path):
    """Four twins (honest, score_on train and fit, epoch_pick best-test): the honest cell trains the
    student and keeps it, the others only score it; each result equals the cell run on its own,
    and no checkpoint is left once all four have finished."""
    from raydistill import tracking
    from raydistill.pipeline import run_trial
    from raydistill.tune.grid import Grid
    from raydistill.tune.options import SweepOptions
    from raydistill.tune.runner import plan, run_sweep

    base = {"dataset": ["fashion-mnist"], "model": ["lenet"], "epochs": [3], "ipc": [2], "method": ["random"],
            "modifier": ["none"]}
    grid = Grid("twins", [{**base, "score_on": ["test", "train", "fit"]}, {**base, "epoch_pick": ["best-test"]}])
    results = tmp_path / "res"
    options = SweepOptions(data_root=str(fashion_tiny), results=results, cpus=2, max_concurrent=2)
    outcome = run_sweep(grid, options)
    assert outcome.complete and not outcome.failed
    cells = {r.data.tags[tracking.CELL_KEY]: r for r in runs(results, "cell", experiment="twins")}
    honest = next(c for c in plan(grid, options) if not c.config.is_forensics)
    assert honest.name == "honest"  # the only axis that varies is the hypothesis
    assert tracking.STUDENT_FROM not in cells[honest.key].data.tags
    for cell in plan(grid, options):
        run = cells[cell.key]
        assert run.info.status == "FINISHED" and tracking.CHECKPOINT_EPOCH not in run.data.tags
        alone = run_trial(cell.config)
        assert run.data.metrics["accuracy"] == alone.metrics["accuracy"], cell.name
        assert run.data.metrics["specificity"] == pytest.approx(alone.metrics["specificity"], abs=1e-12)
        if cell.key != honest.key:
            assert run.data.tags[tracking.STUDENT_FROM] == honest.name and run.data.tags[tracking.RESUMED] == "3"
    assert not [p for p in results.rglob("checkpoint.pt") if p.parent.name == "student"]


def test_only_runs_the_cells_whose_names_match_with_the_names_and_keys_of_the_whole_grid():
    from raydistill.errors import ConfigError
    from raydistill.tune.options import SweepOptions
    from raydistill.tune.runner import plan
    from sweeps import forensics

    grid = forensics.paper_settings(own_teachers=False)
    whole = {c.name: c.key for c in plan(grid, SweepOptions())}
    picked = plan(grid, SweepOptions(only=("mnist-lenet-*-e200-s0", "*-baseline-full-e10-s0")))
    expected = {name for name in whole if (name.startswith("mnist-lenet-") and name.endswith("-e200-s0"))
                or name.endswith("-baseline-full-e10-s0")}
    assert {c.name for c in picked} == expected and len(expected) == 8  # 3 LeNet sets x 2 ipc; both datasets' full-e10
    assert all(whole[c.name] == c.key for c in picked)  # the same cells as in the whole grid: results are shared
    with pytest.raises(ConfigError, match="--only cifar-\\* matches no cell of grid 'paper-settings'"):
        plan(grid, SweepOptions(only=("cifar-*",)))
