"""A student continued from a checkpoint is the student that never stopped: same weights' scores,
curves and metrics; a checkpoint of another set is not continued; checkpoints survive MLflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydistill import protocols, tracking
from raydistill.config import TrialConfig
from raydistill.data import load
from raydistill.pipeline import run_trial

EPOCHS = 3


def student(data, on_checkpoint=None, resume=None, images=None, keep_final=False):
    tensors = data.to(torch.device("cpu"))
    x = tensors.x_train if images is None else images
    return protocols.StudentData(x, tensors.y_train, tensors, 1, resume=resume, on_checkpoint=on_checkpoint,
                                 keep_final=keep_final)


def config(**overrides) -> TrialConfig:
    return TrialConfig(model="lenet", student_epochs=EPOCHS, seed=4, batch_size=16, eval_every=1, **overrides)


@pytest.mark.parametrize("epoch_pick", ["last", "best-test"])
def test_continuing_a_student_from_a_checkpoint_gives_the_uninterrupted_result(mnist_root, monkeypatch, epoch_pick):
    data = load("mnist", mnist_root)
    cfg = config(epoch_pick=epoch_pick)
    straight = protocols.evaluate_paper(cfg, data, student(data))
    monkeypatch.setattr(protocols, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every epoch but the last
    kept: list[protocols.StudentCheckpoint] = []
    protocols.evaluate_paper(cfg, data, student(data, kept.append))
    assert [c.epoch for c in kept] == list(range(1, EPOCHS))
    seen = []
    again: list[protocols.StudentCheckpoint] = []
    resumed = protocols.evaluate_paper(cfg, data, student(data, again.append, resume=kept[0]),
                                       progress=lambda *args: seen.append(args[1]))
    assert resumed.resumed_epoch == 1 and resumed.earlier_seconds == kept[0].seconds > 0
    assert again[0] is kept[0]  # kept again at once, before any training
    assert seen == list(range(1, EPOCHS + 1))  # the checkpoint's epochs are reported again, then the rest
    np.testing.assert_array_equal(resumed.proba, straight.proba)  # bit for bit
    assert resumed.metrics["accuracy"] == straight.metrics["accuracy"]
    assert resumed.curves == straight.curves


def test_a_checkpoint_of_another_set_or_past_the_last_epoch_is_not_continued(mnist_root, monkeypatch):
    data = load("mnist", mnist_root)
    monkeypatch.setattr(protocols, "CHECKPOINT_SECONDS", 0.0)
    kept: list[protocols.StudentCheckpoint] = []
    protocols.evaluate_paper(config(), data, student(data, kept.append))
    other = data.to(torch.device("cpu")).x_train.clone()
    other[0, 0, 0, 0] ^= 1  # one pixel differs
    straight = protocols.evaluate_paper(config(), data, student(data, images=other))
    resumed = protocols.evaluate_paper(config(), data, student(data, resume=kept[-1], images=other))
    assert resumed.resumed_epoch == 0
    np.testing.assert_array_equal(resumed.proba, straight.proba)
    shorter = protocols.evaluate_paper(config().replace(student_epochs=2), data, student(data, resume=kept[-1]))
    assert shorter.resumed_epoch == 0  # epoch 2 of 3 is not before the last of a 2-epoch student


@pytest.mark.parametrize("scoring", [dict(score_on="train"), dict(score_on="fit"), dict(epoch_pick="best-test")])
def test_a_cell_scored_another_way_only_scores_the_kept_final_student_and_gets_the_trained_result(mnist_root, scoring):
    data = load("mnist", mnist_root)
    kept: list[protocols.StudentCheckpoint] = []
    honest = protocols.evaluate_paper(config(), data, student(data, kept.append, keep_final=True))
    (final,) = kept  # no checkpoint before the last epoch (CHECKPOINT_SECONDS), one after it
    assert final.final and final.epoch == EPOCHS and final.optimizer_state == {}
    straight = protocols.evaluate_paper(config(**scoring), data, student(data))
    seen = []
    scored = protocols.evaluate_paper(config(**scoring), data, student(data, resume=final),
                                      progress=lambda *args: seen.append(args[1]))
    assert scored.resumed_epoch == EPOCHS and scored.earlier_seconds == final.seconds > 0
    assert seen == list(range(1, EPOCHS + 1))  # the kept curves, replayed: no epoch trained
    np.testing.assert_array_equal(scored.proba, straight.proba)
    assert scored.metrics == straight.metrics and scored.curves == straight.curves == honest.curves
    longer = protocols.evaluate_paper(config(**scoring).replace(student_epochs=EPOCHS + 1), data,
                                      student(data, resume=final))
    assert longer.resumed_epoch == 0  # a trained student is not trained on: it has no optimizer state


def test_a_resumed_trial_counts_the_earlier_student_time(mnist_root, monkeypatch):
    monkeypatch.setattr(protocols, "CHECKPOINT_SECONDS", 0.0)
    cfg = config(method="random", modifier="none", ipc=2, dataset="mnist", data_root=str(mnist_root), device="cpu")
    kept: list[protocols.StudentCheckpoint] = []
    straight = run_trial(cfg, on_student_checkpoint=kept.append)
    ckpt = kept[1]
    ckpt.seconds = 1000.0  # an earlier attempt's time up to epoch 2
    resumed = run_trial(cfg, student_resume=ckpt)
    assert resumed.resumed_epoch == 2 and straight.resumed_epoch == 0
    assert resumed.timings["student"] > 1000.0 and resumed.timings["total"] > 1000.0
    assert resumed.metrics["accuracy"] == straight.metrics["accuracy"]
    assert torch.equal(resumed.images, straight.images)


def test_the_furthest_student_checkpoint_of_an_unfinished_attempt_round_trips_and_all_are_dropped(mnist_root, tmp_path,
                                                                                             monkeypatch):
    data = load("mnist", mnist_root)
    monkeypatch.setattr(protocols, "CHECKPOINT_SECONDS", 0.0)
    kept: list[protocols.StudentCheckpoint] = []
    protocols.evaluate_paper(config(epoch_pick="best-test"), data, student(data, kept.append))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.init_store(uri)
    experiment = tracking.ensure_experiment(uri, "t", tmp_path / "artifacts")
    client = tracking.MlflowClient(uri)
    runs = []
    for key, epoch, status in [("k", 2, "FAILED"), ("k", 1, "KILLED"), ("twin", 1, "FAILED")]:
        run_id = client.create_run(experiment, tags={tracking.ROLE: "cell", tracking.CELL_KEY: key}).info.run_id
        tracking.log_checkpoint(uri, run_id, kept[epoch - 1])
        client.set_terminated(run_id, status)
        runs.append(run_id)
    run, back = tracking.latest_student_checkpoint(uri, experiment, ["k", "twin"])
    want = kept[1]
    assert run.info.run_id == runs[0]
    assert back.epoch == 2 and back.fingerprint == want.fingerprint and back.seconds == want.seconds
    assert all(torch.equal(back.model_state[k], want.model_state[k]) for k in want.model_state)
    assert back.scorer_state["curves"] == want.scorer_state["curves"]
    assert torch.equal(back.scorer_state["best"][1], want.scorer_state["best"][1])
    assert tracking.latest_student_checkpoint(uri, experiment, ["other"]) is None
    assert tracking.latest_student_checkpoint(uri, experiment, ["twin"])[0].info.run_id == runs[2]
    client.delete_run(runs[1])  # a dropped attempt's checkpoint goes too
    tracking.drop_student_checkpoints(uri, experiment, ["k"], keep=runs[0])  # all but the kept run's
    assert tracking.latest_student_checkpoint(uri, experiment, ["k"])[0].info.run_id == runs[0]
    assert tracking.latest_student_checkpoint(uri, experiment, ["twin"])[0].info.run_id == runs[2]  # another cell's
    tracking.drop_student_checkpoints(uri, experiment, ["k", "twin"])
    assert tracking.latest_student_checkpoint(uri, experiment, ["k", "twin"]) is None
    assert not [p for p in (tmp_path / "artifacts").rglob("checkpoint.pt") if p.parent.name == "student"]
