"""Teachers: a snapshot at epoch e of a run to E is a run to e; a run continued from a checkpoint
is the run that never stopped; snapshots and checkpoints survive the MLflow round trip exactly."""

from __future__ import annotations

import torch

from raydistill import tracking
from raydistill.data import load
from raydistill.teacher import train_teacher

SETTINGS = dict(seed=3, lr=1e-3, batch_size=16)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_milestone_snapshot_equals_a_fresh_run_to_that_epoch(mnist_root):
    data = load("mnist", mnist_root)
    tensors = data.to(torch.device("cpu"))
    one, three = train_teacher("lenet", data, tensors, [1, 3], with_grad_l1=True, **SETTINGS)
    (fresh,) = train_teacher("lenet", data, tensors, [1], with_grad_l1=True, **SETTINGS)
    assert one.epoch == 1 and three.epoch == 3
    assert states_equal(one.state_dict, fresh.state_dict) and torch.equal(one.grad_l1, fresh.grad_l1)
    assert one.last_step_l1 == fresh.last_step_l1 and one.test_accuracy == fresh.test_accuracy
    assert not states_equal(one.state_dict, three.state_dict)


def test_continuing_from_a_checkpoint_gives_the_uninterrupted_run(mnist_root):
    data = load("mnist", mnist_root)
    tensors = data.to(torch.device("cpu"))
    checkpoints = []
    (straight,) = train_teacher("baseline", data, tensors, [4], **SETTINGS)
    train_teacher("baseline", data, tensors, [2], on_checkpoint=checkpoints.append, **SETTINGS)
    (resumed,) = train_teacher("baseline", data, tensors, [4], resume=checkpoints[-1], **SETTINGS)
    assert checkpoints[-1].epoch == 2 and resumed.epoch == 4
    assert states_equal(resumed.state_dict, straight.state_dict)  # same weights, bit for bit
    assert resumed.last_step_l1 == straight.last_step_l1


def test_snapshot_and_checkpoint_round_trip_through_mlflow(mnist_root, tmp_path):
    data = load("mnist", mnist_root)
    tensors = data.to(torch.device("cpu"))
    checkpoints = []
    (snap,) = train_teacher("lenet", data, tensors, [1], with_grad_l1=True, on_checkpoint=checkpoints.append,
                            **SETTINGS)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.init_store(uri)
    experiment = tracking.ensure_experiment(uri, "t", tmp_path / "artifacts")
    run_id = tracking.teacher_run(uri, experiment, "k", {"model": "lenet"})
    assert tracking.load_checkpoint(uri, run_id) is None
    tracking.log_snapshot(uri, run_id, snap)
    tracking.log_checkpoint(uri, run_id, checkpoints[-1])
    back = tracking.load_snapshot(uri, tracking.teacher_holding(uri, experiment, "k", 1), 1)
    assert states_equal(back.state_dict, snap.state_dict) and torch.equal(back.grad_l1, snap.grad_l1)
    assert (back.epoch, back.last_step_l1, back.test_accuracy) == (snap.epoch, snap.last_step_l1, snap.test_accuracy)
    ckpt = tracking.load_checkpoint(uri, run_id)
    assert ckpt.epoch == 1 and states_equal(ckpt.model_state, checkpoints[-1].model_state)
    assert torch.equal(ckpt.optimizer_state["state"][0]["exp_avg"], checkpoints[-1].optimizer_state["state"][0]["exp_avg"])
    assert tracking.teachers(uri, experiment) == {"k": (run_id, {1})}
