"""`raydistill report` (analysis/replication.py) on a small hand-made MLflow store."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from analysis import replication
from raydistill import tracking
from raydistill.protocols import StudentCheckpoint
from raydistill.tune.grid import expand, teacher_jobs
from sweeps import controls as controls_grid
from sweeps import forensics

PAPER = {"dataset": "mnist", "dataset_label": "mnist", "protocol": "paper", "method": "kmeans", "modifier": "grad-l1",
         "model": "lenet", "ipc": "10", "train_limit": "None"}
DC = {"protocol": "dc", "model": "lenet", "train_limit": "None", "eval_sets": "5", "eval_runs": "2"}


def _run(client: MlflowClient, eid: str, metrics: dict, tags: dict | None = None, **params: str) -> None:
    run = client.create_run(eid, tags={"raydistill.role": "cell", "git_commit": "abc1234", "device": "cpu (1 threads)",
                                       "raydistill.cell_key": f"key{len(params)}{sorted(params.items())}"[:16],
                                       **(tags or {})})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    for key, value in {"time_total_s": 10.0, **metrics}.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    paper = client.create_experiment("paper-settings", artifact_location=(tmp / "a").as_uri())
    sweep = client.create_run(paper, tags={"raydistill.role": "sweep", "raydistill.machine": "cpu AMD EPYC, cores 2"})
    client.set_terminated(sweep.info.run_id, "FINISHED")
    for seed, accuracy in ((0, 0.70), (1, 0.72), (2, 0.74)):  # Table 1, MNIST LeNet ipc 10 at 200 epochs: 99.36
        _run(client, paper, {"accuracy": accuracy}, **PAPER, student_epochs="200", seed=str(seed))
    _run(client, paper, {"accuracy": 0.975}, **{**PAPER, "model": "baseline", "train_limit": "10000"},
         student_epochs="200", seed="0")  # Table 1, MNIST Baseline ipc 10 at 200: 97.51, inside its binomial interval
    _run(client, paper, {"accuracy": 0.99}, {"raydistill.forensics": "true", "raydistill.hypothesis": "score_on=fit"},
         **PAPER, student_epochs="200", seed="0", score_on="fit")
    controls = client.create_experiment("controls", artifact_location=(tmp / "c").as_uri())
    for method, modifier, accuracy, std in (("random", "none", 0.948, 0.009), ("kmeans", "none", 0.96, 0.004)):
        restored = {"raydistill.restored_from": "0" * 32} if method == "random" else {}  # as `raydistill restore` tags
        _run(client, controls, {"accuracy": accuracy, "accuracy_std": std}, restored, **DC, dataset="mnist",
             dataset_label="mnist", ipc="10", method=method, modifier=modifier, student_epochs="1000", seed="0")
    # an interrupted control that kept 4 of its evaluation models (the dc protocol's model-by-model checkpoint)
    (cell,) = [c for c in expand(controls_grid.grid(argparse.Namespace(smoke=False, mnist_50=False)), {"seed": 0})
               if c.name == "mnist-random-none-ipc50-e1000"]
    stopped = client.create_run(controls, tags={"raydistill.role": "cell", "raydistill.cell_key": cell.key})
    partial = {"passes": 420, "model": {"w": torch.ones(2)}, "done_seconds": 8.0}  # the 5th model mid-training
    seconds = 8.0 + 420 * 12.0  # its 420 passes took 12 s each
    tracking.log_checkpoint(uri, stopped.info.run_id,
                            StudentCheckpoint(4, {}, {}, {"models": [{}] * 4, "partial": partial}, seconds, "set"))
    client.set_terminated(stopped.info.run_id, "KILLED")
    return uri


def test_the_report_sets_each_claim_beside_ours_with_its_interval_and_verdict(store: str, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{replication.SUMMARY_START}\nold\n{replication.SUMMARY_END}\n\nafter\n", encoding="utf-8")
    paths = replication.write(store, tmp_path / "report", readme)
    md = (tmp_path / "report" / "REPORT.md").read_text(encoding="utf-8")
    assert paths[0].name == "REPORT.md" and paths[1].name == "report.html"
    # LeNet: 72.00 ± 2.00 over 3 seeds; one run: 72 ± 4.303 x 2 x sqrt(4/3) = 62.06 - 81.94; 99.36 lies outside
    assert ("| mnist | lenet | distilled, ipc 10 | 200 | 99.36 | 72.00 ± 2.00 | 3 | 62.06 – 81.94 (prediction, t over "
            "seeds) | outside (ours lower by 27.36 pp) |") in md
    assert "97.51 | 97.50 | 1 |" in md and "(binomial, n = 1) | inside (n = 1: test-set sampling only) |" in md
    assert "not measured: ResNet-34 is GPU-sized" in md and "not measured: no byte-exact copy of CIFAR-10" in md
    assert "99.93% on mnist" in md and "1000 epochs were not run" in md
    # controls: random 94.80 ± 0.90 (n = 10) vs 95.1 ± 0.9: reproduced; IOR of plain K-means +1.20
    assert "the tool reproduces the field's baselines: 1 of 1 measured cells within band (5 not run yet)" in md
    assert "+1.20 ± " in md
    # gaps: LeNet 72.00 - 99.36 = -27.36 (3 seeds); the Baseline's 97.50 - 97.51 = -0.01 (one run), a claim of
    # Table 1 and of Table 3 (the same cell printed twice): median -0.01
    assert ("The measured claims' gaps, ours − paper: -27.36 to -0.01 pp (median -0.01); 1 of the 3 over several "
            "seeds") in md
    assert "Forensics (hypotheses, not results)" in md and "score_on=fit" in md
    # the fit reading scores 99.00 on the cell the paper prints as 99.36: closest, but one cell and no shapes
    assert ("no reading of the protocol reproduces the paper by the rule fixed before the runs; the closest, "
            "`score_on=fit`, is 0.36 pp off on average over 1 printed cells") in md
    assert "Every finished forensics run (hypotheses, not results)" in md
    assert "machine (sweep tag): cpu AMD EPYC, cores 2" in md and "abc1234 (n=4)" in md
    assert "2 finished honest cell runs" in md and "; 1 of them restored from the sweep's committed export" in md
    assert md.count("restored from the sweep's committed export") == 1  # paper-settings has none
    # the grids' cells are listed until a run with their key finishes (these hand-made runs have other keys)
    assert "- `paper-settings`: 0 of 360 cells finished" in md and "- `controls`: 0 of 18 cells finished" in md
    assert md.count("left out by the cost rule") == 2
    # hours left: (1001 - 420) passes of model 5 and 5 x 1001 of models 6-10, at 12 s: 5,586 x 12 s = 18.6 h
    assert ("| controls | mnist-random-none-ipc50-e1000 | honest, seed 0 |  | 4 of 10 evaluation models; model 5 at "
            "pass 420 of 1001 (12.0 s a pass here, about 18.6 h left) |") in md
    summary = readme.read_text(encoding="utf-8")
    assert "old" not in summary and summary.endswith("\nafter\n")
    assert "| mnist | lenet | distilled, ipc 10 | 200 | 99.36 | 72.00 ± 2.00 | 3 | 62.06 – 81.94" in summary  # seeded
    # one run: not among the seeded claims, only in the lines by row (Tables 1 and 3 print the same cell)
    assert summary.count("| baseline | distilled, ipc 10 | 200 | 97.51 | 97.50 | 1 |") == 2
    assert "| 1 | mnist | baseline | distilled, ipc 10 | 200 | 97.51 | 97.50 | 1 | – | -0.01 | 1 of 1 |" in summary


def test_the_html_is_one_self_contained_page_without_raw_markdown(store: str, tmp_path: Path) -> None:
    replication.write(store, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert page.count("<table") >= 8 and "<h2>1. The answer</h2>" in page
    text = re.sub(r"<[^>]+>", "", page)
    assert "|---|" not in text and "**" not in text and not re.search(r"\]\([^)]+\)", text)  # tables, bold, links
    assert not re.search(r'(src|href)="(?!data:|#)[^"]*\.(png|css|js)"', page)  # nothing linked from outside


def test_a_store_without_the_experiments_says_what_is_missing(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/empty.db"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the empty store
    replication.write(uri, tmp_path / "report")
    md = (tmp_path / "report" / "REPORT.md").read_text(encoding="utf-8")
    assert "measured here: 0" in md and "No positive-control run has finished yet" in md
    assert "`paper-settings` (the paper's settings (issues 15, 21)): no finished run yet" in md
    assert replication.main(["--tracking-uri", f"sqlite:///{tmp_path}/nowhere.db", "--out", str(tmp_path / "o")]) == 2


def test_each_waited_for_teacher_says_what_it_still_costs_at_the_pace_measured_here(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    paper = client.create_experiment("paper-settings", artifact_location=(tmp_path / "a").as_uri())
    cells = expand(forensics.paper_settings(own_teachers=False), {"seed": 0})
    jobs = {(j.config.dataset, j.config.model, j.config.seed): j for j in teacher_jobs(cells).values()}

    def teacher(seed: int, checkpoint: int, seconds: float, milestones: tuple[int, ...]) -> None:
        job = jobs["fashion-mnist", "lenet", seed]
        run = client.create_run(paper, tags={"raydistill.role": "teacher", tracking.TEACHER: job.key,
                                             tracking.CHECKPOINT_EPOCH: str(checkpoint),
                                             **{tracking.milestone_tag(m): "done" for m in milestones}})
        client.log_param(run.info.run_id, "dataset", "fashion-mnist")
        client.log_param(run.info.run_id, "model", "lenet")
        client.log_param(run.info.run_id, "train_limit", "None")
        start = 1_700_000_000_000  # epochs 1-3, then a restart an hour later repeats epoch 3 and goes on to 4
        for step, at in ((1, 0), (2, seconds), (3, 2 * seconds), (3, 3600 + seconds), (4, 3600 + 2 * seconds)):
            client.log_metric(run.info.run_id, "train_loss", 0.1, timestamp=start + int(at * 1000), step=step)
        client.set_terminated(run.info.run_id, "KILLED")

    teacher(1, 250, 30.0, (200,))  # on from its checkpoint: 350 epochs to 600
    teacher(2, 250, 60.0, ())  # its checkpoint is past the missing milestone 200: from scratch
    section = replication.coverage(uri, {"paper-settings": "paper-settings", "controls": "controls"})
    left = {t.name: t.frame for t in section.tables}["teachers_left"].loc["paper-settings"].set_index("seed")
    fashion = left[(left["dataset"] == "fashion-mnist") & (left["model"] == "lenet")]
    assert fashion.loc[1, ["epoch reached", "epochs needed", "epochs left", "s per epoch here", "hours left"]].tolist() \
        == [250, 600, 350, "30", "2.9"]  # 350 x 30 s
    assert fashion.loc[2, ["epoch reached", "epochs left", "s per epoch here", "hours left"]].tolist() \
        == [0, 600, "60", "10.0"]
    # seed 0 has no run: the median pace of its dataset and model's teachers, (30 + 60) / 2 = 45 s, x 600 epochs
    assert fashion.loc[0, ["epochs left", "s per epoch here", "hours left"]].tolist() \
        == [600, "45 (median of 2 alike)", "7.5"]
    mnist = left[(left["dataset"] == "mnist") & (left["model"] == "lenet")]
    assert set(mnist["s per epoch here"]) == {"–"}  # nothing alike has trained here
    not_finished = {t.name: t.frame for t in section.tables}["not_finished"]
    waits = not_finished.loc[("paper-settings", "fashion-mnist-lenet-kmeans-grad-l1-ipc10-e600-s1"), "waits for"]
    assert waits == jobs["fashion-mnist", "lenet", 1].name
