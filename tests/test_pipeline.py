"""One trial end to end on tiny data: shapes, labels, determinism, export, and the CLI."""

import json

import torch

from raydistill import artifacts
from raydistill.cli import main
from raydistill.config import TrialConfig
from raydistill.data import load
from raydistill.pipeline import run_trial

TINY = dict(dataset="mnist", model="lenet", ipc=3, teacher_epochs=1, student_epochs=2, device="cpu")


def test_distilled_set_has_ipc_images_per_class_and_centroids_of_shifted_images(mnist_root):
    cfg = TrialConfig(**TINY, data_root=str(mnist_root))
    data = load("mnist", mnist_root)
    result = run_trial(cfg, data)
    assert result.images.shape == (30, 1, 28, 28) and result.images.dtype == torch.float32
    assert torch.equal(result.labels, torch.arange(10).repeat_interleave(3))
    assert 0 <= result.metrics["accuracy"] <= 1 and result.kmeans_backend == "sklearn"
    assert set(result.timings) >= {"teacher", "gradients", "modification", "selection", "student", "total"}
    # With the shift removed, each distilled image is a mean of real images of its class.
    plain = run_trial(cfg.replace(modifier="none"), data)
    assert plain.timings["teacher"] == 0.0 and plain.metrics["teacher_accuracy"] != plain.metrics["teacher_accuracy"]
    x = torch.from_numpy(data.train.images).float() / 255
    y = torch.from_numpy(data.train.labels)
    for image, label in zip(plain.images, plain.labels):
        members = x[y == label]
        assert image.min() >= 0 and image.max() <= 1
        assert members.min(0).values.le(image + 1e-6).all() and members.max(0).values.ge(image - 1e-6).all()


def test_grad_l1_shift_is_applied_before_clustering(mnist_root):
    """ipc = class size: every image is its own cluster, so the centroids are the shifted images."""
    cfg = TrialConfig(**{**TINY, "ipc": 12}, data_root=str(mnist_root), alpha=0.01)
    data = load("mnist", mnist_root)
    shifted = run_trial(cfg, data)
    plain = run_trial(cfg.replace(modifier="none"), data)
    key = lambda t: sorted(t.flatten(1).sum(1).tolist())  # noqa: E731
    diff = torch.tensor(key(plain.images[plain.labels == 0])) - torch.tensor(key(shifted.images[shifted.labels == 0]))
    assert (diff > 0).all()  # every pixel lowered by alpha * g_u > 0


def test_same_seed_gives_identical_distilled_set_on_cpu(mnist_root):
    cfg = TrialConfig(**TINY, data_root=str(mnist_root))
    a, b = run_trial(cfg), run_trial(cfg)
    assert torch.equal(a.images, b.images) and a.metrics["accuracy"] == b.metrics["accuracy"]
    c = run_trial(cfg.replace(seed=1))
    assert not torch.equal(a.images, c.images)


def test_full_mode_trains_on_the_whole_training_set(mnist_root):
    result = run_trial(TrialConfig(**{**TINY, "method": "full"}, data_root=str(mnist_root)))
    assert len(result.labels) == 0 and result.n_train == 120 and result.timings["teacher"] == 0.0


def test_folder_set_binary_metrics_use_the_named_positive_class(folder_root, tmp_path):
    cfg = TrialConfig(dataset=f"folder:{folder_root}", model="baseline", ipc=2, teacher_epochs=1, student_epochs=1,
                      positive_class="cancer", device="cpu")
    result = run_trial(cfg)
    cm = result.metrics["confusion"]  # rows true (cancer, normal), columns predicted
    assert result.metrics["sensitivity"] == cm[0][0] / sum(cm[0])
    assert result.metrics["specificity"] == cm[1][1] / sum(cm[1])
    files = artifacts.write_all(result, tmp_path / "out", positive=0)
    assert {"result.json", "distilled.pt", "distilled.png", "confusion.png", "roc.png"} <= set(files)


def test_export_loads_with_weights_only(mnist_root, tmp_path):
    result = run_trial(TrialConfig(**TINY, data_root=str(mnist_root)))
    path = artifacts.export_distilled(result, tmp_path / "d.pt")
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["images"], result.images) and torch.equal(saved["labels"], result.labels)
    assert saved["meta"]["dataset"] == "mnist" and saved["meta"]["config"]["ipc"] == 3
    assert len(saved["meta"]["mean"]) == 1 and len(saved["meta"]["classes"]) == 10


def test_cli_prints_the_result_as_json_and_writes_the_export(mnist_root, tmp_path, capsys):
    code = main(["run", "--dataset", "mnist", "--model", "baseline", "--ipc", "2", "--teacher-epochs", "1",
                 "--student-epochs", "1", "--data-root", str(mnist_root), "--out", str(tmp_path / "o"),
                 "--train-limit", "60", "--device", "cpu"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_train"] == 60 and printed["n_distilled"] == 20
    assert printed["config"]["modifier"] == "grad-l1" and printed["kmeans_backend"] == "sklearn"
    assert json.loads((tmp_path / "o" / "result.json").read_text())["metrics"] == printed["metrics"]
    assert (tmp_path / "o" / "distilled.pt").is_file()


def test_cli_help_explains_every_option(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for option in ("--dataset", "--model", "--ipc", "--teacher-epochs", "--student-epochs", "--modifier", "--backend",
                   "--data-root", "--seed", "--out", "--train-limit", "--method"):
        assert option in text
