"""The field's 'dc' evaluator: ConvNet-3, the DC code's SGD schedule, several seeded runs, and the
pipeline and CLI with --protocol dc."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from raydistill import protocols, train
from raydistill.cli import main
from raydistill.config import TrialConfig
from raydistill.data import Dataset, Split, channel_stats
from raydistill.models import parameter_count
from raydistill.pipeline import run_trial


def tiny_dataset(shape=(1, 8, 8), classes=3, per_class=4, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        labels = np.repeat(np.arange(classes), n)
        images = rng.integers(0, 60, size=(len(labels), *shape)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, :, c] = 230  # a class-dependent bright row
        return Split(images, labels.astype(np.int64))

    train_split, test_split = split(per_class), split(2)
    names = [str(c) for c in range(classes)]
    return Dataset("tiny", "tiny", names, train_split, test_split, *channel_stats(train_split.images))


@pytest.mark.parametrize("shape,expected", [((1, 28, 28), 317_706), ((3, 32, 32), 320_010)])
def test_convnet3_has_the_field_size_and_output(shape, expected):
    data = tiny_dataset(shape, classes=10, per_class=1)
    tensors = data.to(torch.device("cpu"))
    model = protocols.train_convnet(data, tensors.x_train, tensors.y_train, 1, seed=0)
    assert parameter_count(model) == expected  # 3 x (conv 3x3 128 + instance norm) + linear 2048 -> 10
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 3
    with torch.no_grad():
        assert model(torch.rand(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("epochs", [1, 2, 6, 9, 300])
def test_lr_drops_tenfold_once_after_epoch_index_half_plus_one(epochs):
    model = nn.Linear(2, 2)
    optimizer, scheduler = protocols.dc_optimizer(model, epochs)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: nothing moves, but the scheduler sees the usual order
        scheduler.step()
    drop = epochs // 2 + 1  # the DC code: `if ep in [Epoch//2+1]: lr *= 0.1` after training epoch ep
    assert lrs == pytest.approx([0.01 if ep <= drop else 0.001 for ep in range(epochs)])
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and group["momentum"] == 0.9 and group["weight_decay"] == 5e-4


def test_evaluate_dc_trains_eval_runs_convnets_with_the_dc_schedule(monkeypatch):
    data = tiny_dataset()
    tensors = data.to(torch.device("cpu"))
    seen = []

    def recording_fit(model, x, y, epochs, on_epoch=None, **kwargs):
        lrs = []
        seen.append({"batch_size": kwargs["batch_size"], "lrs": lrs, "convnet3": sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 3})

        def record(epoch, m, stats):
            lrs.append(kwargs["optimizer"].param_groups[0]["lr"])
            if on_epoch is not None:
                on_epoch(epoch, m, stats)

        return train.fit(model, x, y, epochs, on_epoch=record, **kwargs)

    monkeypatch.setattr(protocols, "fit", recording_fit)
    cfg = TrialConfig(student_epochs=6, eval_runs=3, seed=2)
    result = protocols.evaluate_dc(cfg, data, protocols.StudentData(tensors.x_train, tensors.y_train, tensors, 1))
    metrics, proba = result.metrics, result.proba
    assert len(seen) == 3
    for run in seen:
        assert run["batch_size"] == 256 and run["convnet3"]
        assert run["lrs"] == pytest.approx([0.01] * 5 + [0.001])  # epoch indices 0..4, then 5
    runs = metrics["accuracy_runs"]
    assert len(runs) == 3 and metrics["accuracy"] == pytest.approx(np.mean(runs))
    assert metrics["accuracy_std"] == pytest.approx(np.std(runs, ddof=1))
    assert {"accuracy", "sensitivity", "specificity", "auc", "confusion", "per_class_sensitivity"} <= set(metrics)
    first = protocols.train_convnet(data, tensors.x_train, tensors.y_train, 6, protocols.run_seeds(2, 3)[0])
    np.testing.assert_allclose(proba, train.predict_proba(first, tensors.x_test).numpy())  # the first run's
    assert (proba.argmax(1) == tensors.y_test.numpy()).mean() == runs[0]


def test_runs_get_distinct_seeds_across_runs_and_trial_seeds():
    seeds = protocols.run_seeds(0, 5) + protocols.run_seeds(1, 5)
    assert len(set(seeds)) == 10 and protocols.run_seeds(0, 5) == protocols.run_seeds(0, 5)


def test_one_run_has_zero_spread():
    data = tiny_dataset()
    tensors = data.to(torch.device("cpu"))
    metrics = protocols.evaluate_dc(TrialConfig(student_epochs=1, eval_runs=1), data,
                                    protocols.StudentData(tensors.x_train, tensors.y_train, tensors, 1)).metrics
    assert metrics["accuracy_std"] == 0.0 and len(metrics["accuracy_runs"]) == 1


def test_cli_random_selection_with_the_dc_protocol(mnist_root, tmp_path, capsys):
    code = main(["run", "--dataset", "mnist", "--method", "random", "--protocol", "dc", "--modifier", "none",
                 "--ipc", "2", "--student-epochs", "2", "--eval-runs", "2", "--data-root", str(mnist_root),
                 "--device", "cpu", "--out", str(tmp_path / "o")])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_distilled"] == 20 and printed["config"]["protocol"] == "dc"
    assert len(printed["metrics"]["accuracy_runs"]) == 2 and printed["timings"]["teacher"] == 0.0
    saved = torch.load(tmp_path / "o" / "distilled.pt", weights_only=True)
    x = torch.from_numpy(np.fromfile(mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte", np.uint8)[16:])
    x = x.view(-1, 1, 28, 28).float() / 255
    assert all(any(torch.equal(image, row) for row in x) for image in saved["images"])  # real images
    assert (tmp_path / "o" / "roc.png").is_file() and (tmp_path / "o" / "confusion.png").is_file()


def test_full_training_set_with_the_dc_protocol(mnist_root):
    cfg = TrialConfig(dataset="mnist", method="full", protocol="dc", student_epochs=1, eval_runs=2,
                      data_root=str(mnist_root), device="cpu")
    result = run_trial(cfg)
    assert result.n_train == 120 and len(result.metrics["accuracy_runs"]) == 2
