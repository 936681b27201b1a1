"""analysis/: tables and plots regenerated from a small MLflow store with known values."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest
import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from analysis.paper import load_paper
from analysis.runs import load_cells, paper_method
from analysis.tables import DASH, ablation, main

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "analysis-test"
PAPER_METHOD = {"method": "kmeans", "modifier": "grad-l1", "protocol": "paper"}


def _log_run(
    client: MlflowClient,
    experiment_id: str,
    parent: str,
    accuracy: float,
    *,
    role: str = "cell",
    status: str = "FINISHED",
    metrics: dict | None = None,
    tags: dict | None = None,
    artifact: Path | None = None,
    **params: str,
) -> str:
    """One run with the sweep layer's params/metrics/tags; params override the mnist/baseline defaults."""
    values = {
        "dataset": "mnist",
        "dataset_label": "mnist",
        "model": "baseline",
        **PAPER_METHOD,
        "ipc": "10",
        "student_epochs": "200",
        "seed": "0",
        "backend": "torch",
        "train_limit": "None",
        "positive_class": "1",
        **params,
    }
    values.setdefault("teacher_epochs", values["student_epochs"])
    run = client.create_run(
        experiment_id,
        tags={
            "raydistill.role": role,
            "mlflow.parentRunId": parent,
            "device": "cpu",
            "git_commit": "abc123",
            **(tags or {}),
        },
    )
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        params=[Param(k, str(v)) for k, v in values.items()],
        metrics=[Metric(k, v, 0, 0) for k, v in {"accuracy": accuracy, **(metrics or {})}.items()],
        tags=[RunTag("raydistill.cell", f"cell-{run_id[:6]}")],
    )
    if artifact is not None:
        client.log_artifact(run_id, str(artifact))
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    eid = client.create_experiment(EXPERIMENT, artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(eid, tags={"raydistill.role": "sweep"}).info.run_id
    distilled = tmp / "distilled.pt"
    torch.save(
        {
            "images": torch.rand(6, 1, 8, 8) * 1.2 - 0.1,
            "labels": torch.tensor([0, 0, 0, 1, 1, 1]),
            "meta": {"dataset": "mnist", "classes": ["zero", "one"], "mean": [0.1], "std": [0.3], "config": {}},
        },
        distilled,
    )
    log = lambda acc, **kw: _log_run(client, eid, parent, acc, **kw)  # noqa: E731
    log(0.90, seed="0")
    log(0.92, seed="1", tags={"device": "NVIDIA H100 80GB HBM3"})
    log(0.10, seed="2", status="FAILED")
    log(0.11, seed="0", role="teacher")
    log(0.50, seed="3", method="random", modifier="none")
    log(0.995, model="lenet", student_epochs="300")
    log(0.95, student_epochs="250")
    log(0.97, method="full", modifier="none", student_epochs="10")
    log(0.99, student_epochs="1000", artifact=distilled)
    log(0.98, model="lenet", student_epochs="1000")
    log(0.60, ipc="50", protocol="dc")
    ocid = {"dataset": "folder:data/OCID", "dataset_label": "ocid", "model": "resnet34"}
    log(0.80, metrics={"sensitivity": 0.70, "specificity": 0.90}, **ocid)
    log(0.90, metrics={"sensitivity": 0.85, "specificity": 0.95}, method="full", modifier="none", **ocid)
    client.set_terminated(parent)
    client.create_experiment("empty", artifact_location=(tmp / "empty").as_uri())
    return uri


@pytest.fixture(scope="module")
def report(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["--experiment", EXPERIMENT, "--out", str(out), "--tracking-uri", store]) == 0
    return out


def _table(report: Path, name: str, keys: list[str]) -> pd.DataFrame:
    return pd.read_csv(report / f"{name}.csv", dtype=str, keep_default_na=False).set_index(keys)


def test_paper_numbers() -> None:
    paper = load_paper()
    assert paper.frame.groupby("table").size().to_dict() == {1: 45, 2: 45, 3: 18, 4: 18, 5: 30}
    assert paper.value(table=1, dataset="cifar10", model="lenet", method="kmeans", ipc=10, epochs=600) == 98.62
    assert paper.value(table=3, dataset="mnist", model="baseline", method="full", ipc=None, epochs=200) == 99.36
    assert paper.value(table=4, dataset="cifar10", method="rtp", ipc=50, epochs=None) == 73.6
    assert (
        paper.value(
            table=5, dataset="ocid", model="resnet34", method="full", ipc=None, epochs=300, metric="sensitivity"
        )
        == 76.68
    )
    assert paper.value(table=1, dataset="mnist", model="baseline", method="kmeans", ipc=10, epochs=250) is None
    assert all(
        src.startswith(f"Table {t},") for t, src in zip(paper.frame["table"], paper.frame["source"], strict=True)
    )


def test_load_cells(store: str) -> None:
    cells = load_cells(EXPERIMENT, store)
    assert len(cells) == 11  # FAILED, teacher and sweep runs are dropped
    assert set(cells["status"]) == {"FINISHED"} and 0.10 not in set(cells["accuracy"])
    assert str(cells["ipc"].dtype) == "Int64" and str(cells["seed"].dtype) == "Int64"
    assert cells.loc[cells["method"] == "full", "ipc"].isna().all()
    assert cells["train_limit"].isna().all()
    assert set(cells.loc[cells["dataset_label"] == "ocid", "dataset"]) == {"folder:data/OCID"}
    assert len(paper_method(cells)) == 7
    assert ablation(paper_method(cells)) is None
    with pytest.raises(ValueError):
        load_cells("no-such-experiment", store)


def test_tables_1_and_2(report: Path) -> None:
    t1 = _table(report, "table1", ["dataset", "model"])
    row = t1.loc[("mnist", "baseline")]
    assert (row["200: ours"], row["200: n"], row["200: paper"], row["200: diff"]) == (
        "91.00 ± 1.41",
        "2",
        "97.51",
        "-6.51",
    )
    assert (row["250: ours"], row["250: paper"], row["250: diff"]) == ("95.00", DASH, DASH)
    assert (row["1000: ours"], row["1000: n"]) == ("99.00", "1")
    lenet = t1.loc[("mnist", "lenet")]
    assert (lenet["300: ours"], lenet["300: n"], lenet["300: diff"]) == ("99.50", "1", "-0.01")
    missing = t1.loc[("cifar10", "lenet")]
    assert (missing["600: ours"], missing["600: n"], missing["600: paper"], missing["600: diff"]) == (
        DASH,
        "0",
        "98.62",
        DASH,
    )
    assert "ocid" not in t1.index.get_level_values("dataset")
    t2 = _table(report, "table2", ["dataset", "model"])
    assert (t2.loc[("mnist", "baseline"), "200: ours"], t2.loc[("mnist", "baseline"), "200: paper"]) == (DASH, "98.41")


def test_tables_3_4_5(report: Path) -> None:
    t3 = _table(report, "table3", ["dataset", "epochs"])
    full = t3.loc[("mnist", "10")]
    assert (full["full training set: ours"], full["full training set: paper"], full["full training set: diff"]) == (
        "97.00",
        "96.96",
        "+0.04",
    )
    assert (full["distilled (ipc 10): ours"], full["distilled (ipc 10): paper"]) == (DASH, "58.51")
    assert t3.loc[("mnist", "200"), "distilled (ipc 10): ours"] == "91.00 ± 1.41"
    assert t3.loc[("cifar10", "200"), "full training set: paper"] == "93.30"

    t4 = _table(report, "table4", ["dataset", "ipc"])
    mnist = t4.loc[("mnist", "10")]
    assert (mnist["Ours N1/N2 (paper)"], mnist["RTP N1/N2 (paper)"]) == ("99.86/1000", "99.30/NA")
    assert (mnist["ours @ paper N2"], mnist["diff vs Ours @ paper N2"]) == ("99.00 (n=1, baseline)", "-0.86")
    assert (mnist["largest epochs run"], mnist["ours @ largest epochs"]) == ("1000", "99.00 (n=1, baseline)")
    assert (t4.loc[("cifar10", "50"), "ours @ paper N2"], t4.loc[("cifar10", "50"), "largest epochs run"]) == (
        DASH,
        DASH,
    )

    t5 = _table(report, "table5", ["epochs", "metric"])
    acc, sens = t5.loc[("200", "accuracy")], t5.loc[("200", "sensitivity")]
    assert (acc["distilled (ipc 10): ours"], acc["distilled (ipc 10): paper"], acc["distilled (ipc 10): diff"]) == (
        "80.00",
        "72.50",
        "+7.50",
    )
    assert (sens["entire dataset: ours"], sens["entire dataset: paper"], sens["entire dataset: diff"]) == (
        "85.00",
        "84.21",
        "+0.79",
    )
    assert t5.loc[("300", "specificity"), "entire dataset: ours"] == DASH


def test_ablation_and_files(report: Path) -> None:
    ab = _table(report, "ablation", ["dataset", "model", "ipc", "epochs", "protocol"])
    assert ab.loc[("mnist", "baseline", "10", "200", "paper"), "kmeans+grad-l1"] == "91.00 ± 1.41 (n=2)"
    assert ab.loc[("mnist", "baseline", "10", "200", "paper"), "random+none"] == "50.00 (n=1)"
    assert ab.loc[("mnist", "baseline", "50", "200", "dc"), "random+none"] == DASH
    for name in ("table1", "table2", "table3", "table4", "table5", "ablation"):
        md = (report / f"{name}.md").read_text(encoding="utf-8")
        csv = pd.read_csv(report / f"{name}.csv", dtype=str, keep_default_na=False)
        lines = [line for line in md.splitlines() if line.startswith("|")]
        assert len(lines) == len(csv) + 2 and lines[0].count(" | ") == csv.shape[1] - 1  # header, rule, rows
        tex = (report / f"{name}.tex").read_text(encoding="utf-8")
        assert "\\begin{tabular}" in tex and "±" not in tex and DASH not in tex
    assert "$\\pm$" in (report / "table1.tex").read_text(encoding="utf-8")
    summary = (report / "all_tables.md").read_text(encoding="utf-8")
    assert "11 FINISHED runs" in summary and "NVIDIA H100 80GB HBM3 (n=1)" in summary and "cpu (n=10)" in summary
    assert "abc123 (n=11)" in summary and "## Table 5" in summary and "![gallery_mnist_baseline]" in summary


def test_plots(report: Path) -> None:
    for name in ("accuracy_ipc10", "gallery_mnist_baseline"):
        image = mpimg.imread(report / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert not (report / "accuracy_ipc50.png").exists()  # its only run is protocol dc, not the paper's method
    assert not (report / "gallery_mnist_lenet.png").exists()  # its run logged no distilled.pt


def test_cli_as_script(store: str, report: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "analysis" / "tables.py"),
            "--experiment",
            EXPERIMENT,
            "--out",
            str(out),
            "--tracking-uri",
            store,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert str(out / "all_tables.md") in done.stdout.splitlines()
    assert (out / "table1.csv").read_text() == (report / "table1.csv").read_text()


def test_experiment_without_runs(store: str, tmp_path: Path) -> None:
    assert main(["--experiment", "empty", "--out", str(tmp_path), "--tracking-uri", store]) == 0
    assert (tmp_path / "all_tables.md").is_file() and (tmp_path / "report.html").is_file()
    assert not (tmp_path / "ablation.csv").exists() and not list(tmp_path.glob("accuracy_ipc*.png"))
    t1 = _table(tmp_path, "table1", ["dataset", "model"])
    ours = t1[[c for c in t1.columns if c.endswith(": ours")]]
    assert list(ours.columns) == [f"{e}: ours" for e in (200, 300, 400, 500, 600)]
    assert (ours == DASH).all().all() and (t1["600: paper"] != DASH).all()


BAD_INPUTS = {
    "missing experiment": ["--experiment", "no-such-sweep", "--tracking-uri", "STORE"],
    "file-shaped --out": ["--experiment", EXPERIMENT, "--tracking-uri", "STORE", "--out", "a-file"],
    "unreachable server": ["--tracking-uri", "http://127.0.0.1:PORT"],
    "typo'd sqlite path": ["--tracking-uri", "sqlite:///resuls/mlflow.db"],
    "not a database": ["--tracking-uri", "sqlite:///a-file"],
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_cli_bad_input_is_one_line(
    case: str, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Exit code 2, one line on stderr, no exception, nothing created, within seconds."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder, not a database")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [a.replace("STORE", store).replace("PORT", str(port)) for a in BAD_INPUTS[case]]
    started = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - started < 30
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and ": error: " in captured.err, captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no mlflow.db, results/ or resuls/


def test_cli_default_store_absent(tmp_path: Path) -> None:
    """As a script in a folder without results/: one line, exit 2, and no empty store created."""
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "tables.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"tables.py: error: no MLflow store at {tmp_path / 'results' / 'mlflow.db'}: the file does " \
        "not exist (run a sweep first, or pass the sweep's --results or --tracking-uri)\n"
    assert list(tmp_path.iterdir()) == []
