"""Issue 11: a sweep never reports success it did not have, never corrupts its store, and every bad
input or unusable path is one line (exit 2) before any compute.

Real sweeps (Ctrl-C; two drivers, with quotes in the name and the data path) use the smoke grid
with `--set method=full`: two cells, or one, and no teacher. Everything else runs in-process and
stops before compute (or runs one tiny trial).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from raydistill import artifacts, protocols, teacher, tracking
from raydistill.cli import main
from raydistill.tune.options import SweepOptions

from conftest import make_folder_set, make_mnist_like
from sweeps_util import run, runs, sweep_command

FULL = ("--set", "method=full")  # the smoke grid without its teacher: cells e1 and e3
LOCK_LINE = "is already in use by pid "


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_mnist_like(tmp_path_factory.mktemp("data"), folder="FashionMNIST")


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if any training starts."""
    def boom(*args, **kwargs):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(teacher, "fit", boom)
    monkeypatch.setattr(protocols, "fit", boom)


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A folder nobody can create files in: read-only by mode, or /proc where mode bits do not
    stop the user (root)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        chosen = next((c for c in (folder, Path("/proc")) if not writable(c)), None)
        if chosen is None:
            pytest.skip("no unwritable folder on this machine")
        yield chosen
    finally:
        folder.chmod(0o700)


def writable(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], seconds: float, what: str) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {seconds:.0f} s")


def statuses(results: Path, role: str = "cell") -> dict[str, str]:
    """Run name -> status of the active runs of one role ({} before the store exists)."""
    if not (results / "mlflow.db").is_file():
        return {}
    return {r.info.run_name: r.info.status for r in runs(results, role)}


def one_line(text: str) -> str:
    """The only line of `text`: `raydistill: error: ...` (or `raydistill tables: error: ...`)."""
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and re.match(r"raydistill( tables)?: error: ", lines[0]), text
    return lines[0]


def cli(args: list[str], capsys, code: int = 2) -> str:
    """`raydistill ARGS` in-process: the exit code and the one line it writes to stderr."""
    assert main(args) == code
    captured = capsys.readouterr()
    return one_line(captured.err)


def trial(data: Path, *args: str) -> list[str]:
    return ["run", "--dataset", "fashion-mnist", "--data-root", str(data), "--device", "cpu", "--ipc", "1",
            "--teacher-epochs", "1", "--student-epochs", "1", "--modifier", "none", *args]


def sweep(data: Path, results: Path, *args: str) -> list[str]:
    return ["sweep", "paper-grid", "--smoke", "--data-root", str(data), "--results", str(results), *args]


# --- 1. Ctrl-C -------------------------------------------------------------------------------------

def test_ctrl_c_ends_the_sweep_interrupted_and_the_same_command_resumes(data, tmp_path):
    """SIGINT to the driver's process group (Ray's processes included) once one cell has finished
    and the other has failed at least once (it fails on every attempt and is retried)."""
    results = tmp_path / "res"
    cmd = sweep_command(data, results, *FULL, "--max-concurrent", "1", "--max-failures", "100")
    err = tmp_path / "driver.err"
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err.open("w"), start_new_session=True,
                              env={**os.environ, "RAYDISTILL_INJECT_FAULT": "e3"})
    try:
        wait_for(lambda: driver.poll() is not None or (statuses(results).get("e1") == "FINISHED"
                                                        and (results / "faults" / "e3").is_file()), 300, "cells")
        assert driver.poll() is None, err.read_text()[-3000:]
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=120) == 130, err.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    stderr = err.read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "stopping: the running trials end" in stderr  # said at once
    assert "interrupted: run the same command again to continue" in stderr
    assert "1/2 cells finished" in stderr and any(line.startswith(("not run: e3", "failed: e3"))
                                                  for line in stderr.splitlines()), stderr[-3000:]
    assert "RUNNING" not in [*statuses(results).values(), *statuses(results, "teacher").values()]
    assert statuses(results)["e1"] == "FINISHED"
    assert list(statuses(results, "sweep").values()) == ["KILLED"]
    assert not (results / "tables").exists()  # nothing written as if the sweep were complete
    first = {r.info.run_name: r.info.run_id for r in runs(results, "cell")}["e1"]

    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2/2 cells finished (1 in this run, 1 earlier)" in resumed.stderr
    cells = runs(results, "cell")
    assert sorted(r.info.run_name for r in cells) == ["e1", "e3"]  # one active run per cell
    assert {r.info.status for r in cells} == {"FINISHED"}
    assert first in {r.info.run_id for r in cells}
    assert list(statuses(results, "sweep").values()) == ["FINISHED"]
    assert (results / "tables" / "smoke" / "table3.md").is_file()


def test_a_cell_that_fails_mid_student_continues_from_its_checkpoint_on_the_retry(data, tmp_path):
    """Cell e3 (3 student epochs) fails once after its second epoch; the retry continues from the
    epoch-1 checkpoint: one FINISHED run, tagged, with the whole history and no checkpoint left."""
    results = tmp_path / "res"
    done = run(sweep_command(data, results, *FULL), RAYDISTILL_INJECT_FAULT="e3:1@2", RAYDISTILL_CHECKPOINT_SECONDS="0")
    assert done.returncode == 0 and "FAILED" not in done.stderr, done.stderr[-3000:]
    assert "retry   e3: RuntimeError: injected fault" in done.stderr
    assert (results / "faults" / "e3").read_text() == "2"  # failed once, then ran through
    cells = {r.info.run_name: r for r in runs(results, "cell")}
    assert sorted(cells) == ["e1", "e3"] and {r.info.status for r in cells.values()} == {"FINISHED"}
    e3 = cells["e3"]
    assert e3.data.tags[tracking.RESUMED] == "1" and tracking.RESUMED not in cells["e1"].data.tags
    assert tracking.CHECKPOINT_EPOCH not in e3.data.tags
    history = tracking.MlflowClient(f"sqlite:///{results / 'mlflow.db'}").get_metric_history(e3.info.run_id,
                                                                                            "student_train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert not [p for p in results.rglob("checkpoint.pt") if p.parent.name == "student"]
    dropped = [r for r in runs(results, "cell", deleted=True) if r.info.run_name == "e3" and r.info.status == "FAILED"]
    assert len(dropped) == 1  # the failed attempt, soft-deleted


def test_ctrl_c_during_a_trial_exits_130_without_output(data, tmp_path, capsys, monkeypatch):
    from raydistill import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_trial", interrupted)
    assert main(trial(data, "--out", str(tmp_path / "out"))) == 130
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "raydistill: interrupted\n"  # a trial restarts: no "continue"
    assert not (tmp_path / "out").exists()


# --- 2. Two drivers, one results folder; 7. quotes in user text ---------------------------------------

def test_two_drivers_on_a_fresh_folder_one_fails_at_once_and_the_store_stays_healthy(tmp_path):
    """Two drivers of one sweep started together: one runs, the other stops at its lock. The sweep's
    name and its dataset's path hold quotes: user text never enters an MLflow filter string."""
    root = make_folder_set(tmp_path / "it's data", train=4, test=2, size=8)
    results = tmp_path / "res"
    cmd = sweep_command(tmp_path, results, "--name", "o'brien", "--set", f"dataset=folder:{root}", *FULL,
                        "--set", "student_epochs=1")  # one cell
    drivers = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        loser = wait_for(lambda: next((d for d in drivers if d.poll() is not None), None), 300, "driver to end")
        (winner,) = [d for d in drivers if d is not loser]
        assert winner.poll() is None, "both drivers ended"
        assert loser.returncode == 2, loser.stderr.read()[-3000:]
        line = one_line(loser.stderr.read())
        assert f"sweep \"o'brien\" in {results} {LOCK_LINE}{winner.pid} on host {socket.gethostname()}" in line
        assert winner.wait(timeout=300) == 0, winner.stderr.read()[-3000:]
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
    (cell,) = runs(results, "cell", experiment="o'brien")
    assert cell.info.status == "FINISHED" and cell.data.params["dataset"] == f"folder:{root}"
    assert (results / "tables" / "o'brien" / "all_tables.md").is_file()
    with sqlite3.connect(results / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    # a stale lock (its holder is gone, no flock held) is taken over; the third run re-runs nothing
    lock = results / ".locks" / "o'brien.lock"
    lock.write_text("pid 999999999 on host elsewhere\n")
    again = run(cmd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1/1 cells finished (0 in this run, 1 earlier)" in again.stderr
    assert [r.info.run_id for r in runs(results, "cell", experiment="o'brien")] == [cell.info.run_id]
    assert [r.info.status for r in runs(results, "sweep", experiment="o'brien")] == ["FINISHED"]
    assert lock.read_text().startswith("pid ") and "999999999" not in lock.read_text()


# --- 3. No cluster at --address ---------------------------------------------------------------------

def test_address_of_no_cluster_fails_in_seconds_and_creates_nothing(data, tmp_path, capsys, no_compute):
    results = tmp_path / "res"
    port = closed_port()
    started = time.monotonic()
    line = cli(sweep(data, results, "--address", f"127.0.0.1:{port}"), capsys)
    assert time.monotonic() - started < 10
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in line
    assert not results.exists()


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """Nothing on stderr (the test reads it)."""


def test_address_where_something_else_listens_is_one_line(data, tmp_path, capsys, no_compute):
    """An HTTP server (the dashboard's port, MLflow) is no Ray cluster: ray.init would retry for minutes."""
    with ThreadingHTTPServer(("127.0.0.1", 0), Quiet) as site:
        threading.Thread(target=site.serve_forever, daemon=True).start()
        started = time.monotonic()
        line = cli(sweep(data, tmp_path / "res", "--address", f"127.0.0.1:{site.server_port}"), capsys)
        site.shutdown()
    assert time.monotonic() - started < 10
    assert f"no Ray cluster answers at 127.0.0.1:{site.server_port}: something else listens there" in line
    assert not (tmp_path / "res").exists()


def test_ray_address_in_the_environment_is_checked_like_address(data, tmp_path, capsys, monkeypatch, no_compute):
    port = closed_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # ray.init would join it whatever --address says
    line = cli(sweep(data, tmp_path / "res"), capsys)
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in line and "check RAY_ADDRESS" in line
    assert not (tmp_path / "res").exists()


def test_address_auto_without_a_cluster_is_one_line(data, tmp_path, capsys, monkeypatch, no_compute):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where `ray start` would have left its address
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    line = cli(sweep(data, tmp_path / "res", "--address", "auto"), capsys)
    assert "--address auto: no running Ray cluster was found" in line
    assert not (tmp_path / "res").exists()


# --- 4. Out-of-range numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("args,expected", [
    (["--alpha", "inf"], "alpha must be a finite number >= 0, got inf"),
    (["--alpha", "nan"], "alpha must be a finite number >= 0, got nan"),
    (["--alpha", "-1"], "alpha must be a finite number >= 0, got -1.0"),
    (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
    (["--lr", "0"], "lr must be a finite number > 0, got 0.0"),
    (["--seed", "4294967296"], "seed must be an integer >= 0, got 4294967296; allowed: 0..4294967295"),
    (["--resize", "100000"], "resize must be an integer >= 8, got 100000; allowed: 8..2048"),
])
def test_trial_numbers_out_of_range(args, expected, data, tmp_path, capsys, no_compute):
    assert expected in cli(trial(data, "--out", str(tmp_path / "out"), *args), capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,expected", [
    (["--max-failures", "-1"], "max-failures must be an integer from 0 to 100, got -1"),
    (["--max-concurrent", "0"], "max-concurrent must be an integer from 1 to 10000"),
    (["--max-concurrent", "-3"], "max-concurrent must be an integer from 1 to 10000"),
    (["--seeds", "-1"], "seed must be an integer from 0 to 4294967295, got -1"),
    (["--seeds", "0", "4294967296"], "seed must be an integer from 0 to 4294967295, got 4294967296"),
    (["--set", "alpha=inf"], "alpha must be a finite number >= 0, got inf"),
    (["--set", "alpha=NaN"], "alpha must be a finite number >= 0, got nan"),
    (["--set", "lr=Infinity"], "lr must be a finite number > 0, got inf"),
    (["--name", "../../x"], "sweep name '../../x' is not allowed"),
    (["--name", ""], "sweep name '' is not allowed"),
    (["--name", ".."], "sweep name '..' is not allowed"),
])
def test_sweep_numbers_and_names_out_of_range(args, expected, data, tmp_path, capsys, no_compute):
    results = tmp_path / "res"
    assert expected in cli(sweep(data, results, *args), capsys)
    assert not results.exists() and not (tmp_path / "x").exists()


# --- 6. Output paths --------------------------------------------------------------------------------

def test_run_refuses_a_file_or_unwritable_out_before_compute(data, tmp_path, unwritable, capsys, no_compute):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert f"--out {afile} is a file; give a folder" in cli(trial(data, "--out", str(afile)), capsys)
    assert f"--out {afile / 'sub'} cannot be written" in cli(trial(data, "--out", str(afile / "sub")), capsys)
    out = unwritable / "out"
    assert f"--out {out} cannot be written" in cli(trial(data, "--out", str(out)), capsys)
    assert afile.read_text() == "keep me"


def test_sweep_refuses_a_file_as_results_before_anything(data, tmp_path, capsys, no_compute):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert f"results folder {afile} is not usable" in cli(sweep(data, afile), capsys)
    assert afile.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["afile"]


def test_a_failed_write_after_compute_keeps_the_printed_result(data, tmp_path, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts, "write_all", full_disk)
    assert main(trial(data, "--out", str(tmp_path / "out"))) == 1
    captured = capsys.readouterr()
    assert 0 <= json.loads(captured.out)["metrics"]["accuracy"] <= 1
    line = one_line(captured.err)
    assert "No space left on device" in line and "the result is printed above" in line


def test_a_reused_out_keeps_no_stale_files(data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(trial(data, "--out", str(out))) == 0
    assert {"distilled.pt", "distilled.png", "result.json"} <= set(os.listdir(out))
    assert main(trial(data, "--out", str(out), "--method", "full")) == 0
    capsys.readouterr()
    assert sorted(os.listdir(out)) == ["confusion.png", "notes.txt", "result.json", "roc.png"]
    assert json.loads((out / "result.json").read_text())["config"]["method"] == "full"


def test_a_relative_sqlite_store_is_the_same_file_for_the_trials(data, tmp_path, monkeypatch):
    """Trials run in folders of their own: they get the store's absolute path (a relative one
    crashed the driver, and would have named another store in each trial's folder)."""
    from raydistill.tune import runner
    from sweeps.paper_grid import SMOKE

    given = []
    monkeypatch.setattr(runner, "_tune", lambda name, todo, twin_keys, datasets, uri, *rest: given.append(uri))
    monkeypatch.chdir(tmp_path)
    options = SweepOptions(data_root=str(data), results=Path("res"), tracking_uri="sqlite:///rel.db",
                           fixed={"method": "full", "student_epochs": 1})
    outcome = runner.run_sweep(SMOKE, options)
    assert given == [outcome.uri] == [f"sqlite:///{tmp_path.resolve() / 'rel.db'}"]
    assert (tmp_path / "rel.db").is_file() and not (tmp_path / "res" / "mlflow.db").exists()


# --- 8. One line instead of a traceback -------------------------------------------------------------

def test_a_malformed_tracking_uri_is_one_line(data, tmp_path, capsys, no_compute):
    line = cli(sweep(data, tmp_path / "res", "--tracking-uri", "localhost:5000"), capsys)
    assert "malformed tracking URI 'localhost:5000'" in line
    assert not (tmp_path / "res").exists()


def test_an_unwritable_results_folder_is_one_line(data, unwritable, capsys, no_compute):
    results = unwritable / "res"
    assert f"results folder {results} is not usable" in cli(sweep(data, results), capsys)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("store")
    tracking.init_store(tracking.local_store(results))
    return results


def test_tables_with_a_missing_experiment_is_one_line(empty_store, capsys):
    line = cli(["tables", "--results", str(empty_store), "--experiment", "nope"], capsys)
    assert line == "raydistill tables: error: MLflow experiment 'nope' not found"
    assert not (empty_store / "tables").exists()


def test_tables_with_a_file_as_out_is_one_line(empty_store, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    line = cli(["tables", "--results", str(empty_store), "--out", str(afile)], capsys)
    assert f"{afile} is a file" in line and afile.read_text() == "keep me"


def test_tables_with_an_unreachable_server_fails_in_seconds(tmp_path, capsys):
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    line = cli(["tables", "--tracking-uri", uri, "--out", str(tmp_path / "out")], capsys)
    assert time.monotonic() - started < 10
    assert f"MLflow tracking server {uri} is not reachable" in line
    assert not (tmp_path / "out").exists()


def test_tables_with_a_typo_in_the_sqlite_path_creates_no_store(empty_store, tmp_path, capsys):
    typo = empty_store / "mlfow.db"
    line = cli(["tables", "--tracking-uri", f"sqlite:///{typo}", "--out", str(tmp_path / "out")], capsys)
    assert f"no MLflow store at {typo}" in line
    assert not typo.exists() and not (tmp_path / "out").exists()


def test_an_interrupted_sweep_names_ten_unrun_cells_and_counts_the_rest(data, tmp_path, capsys, monkeypatch):
    """A large grid's summary stays one short line per kind: the first ten unrun cells, then a count."""
    from raydistill.tune import runner

    names = [f"cell{i:02d}" for i in range(23)]
    outcome = runner.SweepOutcome("big", "sqlite:////x.db", cells=[None] * 25, finished=["a", "b"], reused=["a"],
                                  unfinished=names, interrupted=True)
    monkeypatch.setattr(runner, "run_sweep", lambda *args, **kwargs: outcome)
    assert main(sweep(data, tmp_path / "res")) == 130
    lines = capsys.readouterr().err.splitlines()
    (not_run,) = [line for line in lines if line.startswith("not run: ")]
    assert not_run == f"not run: {', '.join(names[:10])} and 13 more (--dry-run lists every cell)"
    assert "2/25 cells finished (1 in this run, 1 earlier)" in lines[0]


def test_ctrl_c_mid_training_leaves_the_cell_killed_not_failed(data, tmp_path):
    """A trial the sweep stops mid-student (Ray ends its actor with SystemExit) is an interrupted
    attempt: its run ends KILLED without an error, and the sweep names no failure."""
    results = tmp_path / "res"
    cmd = sweep_command(data, results, *FULL, "--set", "student_epochs=100000", "--max-concurrent", "1")
    err = tmp_path / "driver.err"
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err.open("w"), start_new_session=True)
    try:
        def training() -> bool:  # a cell's run exists and its student has logged epochs
            cells = runs(results, "cell") if (results / "mlflow.db").is_file() else []
            return driver.poll() is not None or any("student_train_loss" in r.data.metrics
                                                    for r in cells)
        wait_for(training, 300, "a student training")
        assert driver.poll() is None, err.read_text()[-3000:]
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=120) == 130, err.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    stderr = err.read_text()
    assert "failed:" not in stderr and "SystemExit" not in stderr, stderr[-3000:]
    cells = runs(results, "cell")
    assert cells and {r.info.status for r in cells} == {"KILLED"}
    assert not any(tracking.ERROR in r.data.tags for r in cells)
