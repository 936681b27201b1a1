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


# Written from the reference code (VICO-UoE/DatasetCondensation @53f63a6, utils.py and main.py):
# evaluate_synset's SGD(lr=args.lr_net=0.01, momentum=0.9, weight_decay=0.0005), batch_train 256,
# `for ep in range(Epoch+1)` with `lr_schedule = [Epoch//2+1]` and a new optimiser at the drop;
# main.py's epoch_eval_train 1000 with augmentation (MNIST) else 300; get_daparam's crop 4,
# scale 0.2, rotate 45, strategy crop_scale_rotate for MNIST only; get_dataset's mean/std.
REFERENCE = {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "batch": 256,
             "epochs": {"mnist": 1000, "fashion-mnist": 300, "cifar10": 300},
             "mean_std": {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2861, 0.3530)},
             "augment": {"mnist": ("crop", "scale", "rotate"), "fashion-mnist": None}, "crop_scale_rotate": (4, 0.2, 45)}


def test_the_dc_constants_are_the_reference_codes():
    from raydistill import dc

    assert (dc.LR, dc.MOMENTUM, dc.WEIGHT_DECAY, dc.BATCH_SIZE) == (REFERENCE["lr"], REFERENCE["momentum"],
                                                                    REFERENCE["weight_decay"], REFERENCE["batch"])
    assert {d: dc.reference_epochs(d) for d in REFERENCE["epochs"]} == REFERENCE["epochs"]
    for name, (mean, std) in REFERENCE["mean_std"].items():
        assert dc.normalisation(name, (0.5,), (0.5,)) == ((mean,), (std,))
    assert dc.normalisation("folder:x", (0.4,), (0.2,)) == ((0.4,), (0.2,))  # not in the reference: its own stats
    assert (dc.CROP, dc.SCALE, dc.ROTATE) == REFERENCE["crop_scale_rotate"]
    for name, strategy in REFERENCE["augment"].items():
        augment = dc.augmentation(name, (0.5,), (0.5,), seed=0)
        assert (augment.strategy if augment else None) == strategy


def reference_evaluate_synset_loop(model, x, y, epochs):
    """The reference's training loop, transcribed (one full batch, no augmentation): a new SGD at
    the drop, Epoch + 1 passes."""
    lr = 0.01
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    for ep in range(epochs + 1):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if ep in [epochs // 2 + 1]:
            lr *= 0.1
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    return model


@pytest.mark.parametrize("epochs", [1, 2, 6, 9])
def test_the_dc_schedule_trains_like_the_reference_loop_pass_for_pass(epochs):
    from raydistill import dc

    x, y = torch.randn(12, 5), torch.arange(12) % 3
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    reference = reference_evaluate_synset_loop(nn.Sequential(*[m for m in __import__("copy").deepcopy(ours)]), x, y, epochs)
    optimizer, schedule = dc.optimizer(ours, epochs)
    lrs = []
    train.fit(ours, x, y, epochs + 1, batch_size=256, optimizer=optimizer, scheduler=schedule,
              on_epoch=lambda e, m, s: lrs.append(optimizer.param_groups[0]["lr"]))
    assert lrs == pytest.approx([0.01 if ep <= epochs // 2 + 1 else 0.001 for ep in range(epochs + 1)])
    for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # momentum restarts at the drop, as a new SGD


def test_a_momentum_that_carried_over_the_drop_would_train_differently():
    """The pass-for-pass test above can tell: without the reset the weights differ."""
    from raydistill import dc

    x, y = torch.randn(12, 5), torch.arange(12) % 3
    torch.manual_seed(0)
    ours = nn.Linear(5, 3)
    reference = reference_evaluate_synset_loop(__import__("copy").deepcopy(ours), x, y, 6)
    optimizer, _ = dc.optimizer(ours, 6)
    carried = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[6 // 2 + 2], gamma=0.1)
    train.fit(ours, x, y, 7, batch_size=256, optimizer=optimizer, scheduler=carried)
    assert not torch.allclose(ours.weight, reference.weight, rtol=1e-5, atol=1e-6)


def test_evaluate_dc_trains_eval_runs_convnets_with_the_reference_schedule_and_tests_once(monkeypatch):
    data = tiny_dataset()
    tensors = data.to(torch.device("cpu"))
    seen = []

    def recording_fit(model, x, y, epochs, on_epoch=None, **kwargs):
        lrs = []
        seen.append({"batch_size": kwargs["batch_size"], "lrs": lrs, "transform": kwargs["transform"],
                     "convnet3": sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 3})

        def record(epoch, m, stats):
            lrs.append(kwargs["optimizer"].param_groups[0]["lr"])
            if on_epoch is not None:
                on_epoch(epoch, m, stats)

        return train.fit(model, x, y, epochs, on_epoch=record, **kwargs)

    monkeypatch.setattr(protocols, "fit", recording_fit)
    tests = []
    monkeypatch.setattr(protocols, "predict_proba",
                        lambda m, x, **k: tests.append(x is tensors.x_test) or train.predict_proba(m, x, **k))
    cfg = TrialConfig(student_epochs=6, eval_runs=3, seed=2)
    result = protocols.evaluate_dc(cfg, data, protocols.StudentData(tensors.x_train, tensors.y_train, tensors, 1))
    metrics, proba = result.metrics, result.proba
    assert len(seen) == 3 and len(result.runs) == 3
    for run in seen:
        assert run["batch_size"] == 256 and run["convnet3"] and run["transform"] is None  # no augmentation here
        assert run["lrs"] == pytest.approx([0.01] * 5 + [0.001] * 2)  # 7 passes: indices 0..4, then 5 and 6
    assert sum(tests) == 3  # one test pass per model: the first's through its scorer, at its last pass only
    assert [epoch for epoch, _ in result.curves["test_accuracy"]] == [7]
    assert len(result.curves["train_loss"]) == 7
    runs = metrics["accuracy_runs"]
    assert len(runs) == 3 and metrics["accuracy"] == pytest.approx(np.mean(runs))
    assert metrics["accuracy_std"] == pytest.approx(np.std(runs, ddof=1))
    assert {"accuracy", "sensitivity", "specificity", "auc", "confusion", "per_class_sensitivity"} <= set(metrics)
    first = protocols.train_convnet(data, tensors.x_train, tensors.y_train, 6, protocols.run_seeds(2, 3)[0])
    np.testing.assert_allclose(proba, train.predict_proba(first, tensors.x_test).numpy())  # the first run's
    assert (proba.argmax(1) == tensors.y_test.numpy()).mean() == runs[0]


def test_convnets_on_mnist_normalise_with_the_reference_constants_and_train_augmented(monkeypatch):
    data = Dataset("mnist", "MNIST", [str(c) for c in range(3)], tiny_dataset((1, 28, 28)).train,
                   tiny_dataset((1, 28, 28)).test, (0.5,), (0.2,))
    tensors = data.to(torch.device("cpu"))
    transforms = []
    monkeypatch.setattr(protocols, "fit", lambda model, *a, **k: transforms.append(k["transform"]) or model)
    model = protocols.train_convnet(data, tensors.x_train, tensors.y_train, 2, seed=0)
    normalise = model[0]
    assert normalise.mean.item() == pytest.approx(0.1307) and normalise.std.item() == pytest.approx(0.3081)
    assert transforms[0].strategy == ("crop", "scale", "rotate")
    assert transforms[0].mean.item() == pytest.approx(0.1307)



def test_a_convnet_stopped_after_any_pass_continues_to_the_uninterrupted_weights(monkeypatch):
    """A state kept after each pass, before and after the lr drop, with MNIST's augmentation,
    continues to the very weights of the model that was never stopped: passes, SGD's lr and
    momentum and the augmentation's generator are all in it."""
    monkeypatch.setattr(protocols, "CHECKPOINT_SECONDS", 0.0)  # a state after every pass
    tiny = tiny_dataset((1, 28, 28), per_class=10)
    data = Dataset("mnist", "MNIST", [str(c) for c in range(3)], tiny.train, tiny.test, (0.5,), (0.2,))
    tensors = data.to(torch.device("cpu"))
    x, y = tensors.x_train, tensors.y_train
    states = []
    whole = protocols.train_convnet(data, x, y, 4, seed=5, keep=states.append)  # 5 passes, the drop after index 3
    assert [state["passes"] for state in states] == [1, 2, 3, 4]  # none after the last pass
    assert [s["optimizer"]["param_groups"][0]["lr"] for s in states] == pytest.approx([0.01] * 4)  # the drop follows pass 4
    for state in states:
        resumed = protocols.train_convnet(data, x, y, 4, seed=5, resume=state)
        for name, value in whole.state_dict().items():
            assert torch.equal(resumed.state_dict()[name], value), (state["passes"], name)

class Draws:
    """A stand-in for the augmentation's numpy generator: fixed draws."""

    def __init__(self, integers=(), uniform=()):
        self._integers, self._uniform = list(integers), list(uniform)

    def integers(self, *bounds, size=None):
        if size is None:
            return self._integers.pop(0)
        return np.array([self._integers.pop(0) for _ in range(size)])

    def uniform(self, low, high):
        return self._uniform.pop(0)


def augment_with(strategy, draws, mean=0.5, std=0.25):
    from raydistill import dc

    augment = dc.Augment(strategy, (mean,), (std,), seed=0)
    augment.rng = draws
    return augment


def test_crop_shifts_by_the_drawn_offset_and_fills_with_the_batch_mean():
    x = torch.rand(2, 1, 8, 8)
    same = augment_with(("crop",), Draws([0, 4, 4, 0, 4, 4]))(x)  # choice 0, offset (4, 4): no shift
    torch.testing.assert_close(same, x)
    shifted = augment_with(("crop",), Draws([0, 0, 0, 0, 0, 0]))(x)  # offset (0, 0): the image moves 4 down-right
    torch.testing.assert_close(shifted[:, :, 4:, 4:], x[:, :, :4, :4])
    assert torch.allclose(shifted[:, :, :4, :], x.mean())  # the batch's mean, as the reference's fill
    assert torch.allclose(shifted[:, :, :, :4], x.mean())


def test_scale_resizes_nearest_and_centres_on_the_datasets_mean():
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(augment_with(("scale",), Draws([0], [1.0, 1.0]))(x), x)  # factor 1: unchanged
    small = augment_with(("scale",), Draws([0], [0.5, 0.5]), mean=0.3)(x)  # 8 -> 4 pixels, centred
    torch.testing.assert_close(small[0, 0, 2:6, 2:6], x[0, 0, ::2, ::2])  # nearest: every second pixel
    border = torch.ones(8, 8, dtype=torch.bool)
    border[2:6, 2:6] = False
    assert torch.allclose(small[0, 0][border], torch.tensor(0.3))  # zero after normalising = the mean pixel


def test_rotate_turns_about_the_centre_and_keeps_the_size():
    x = torch.rand(1, 1, 9, 9)
    torch.testing.assert_close(augment_with(("rotate",), Draws([0, 0]))(x), x, rtol=0, atol=1e-5)  # angle 0
    turned = augment_with(("rotate",), Draws([0, 90]))(x)  # choice 0, angle 90
    assert turned.shape == x.shape
    torch.testing.assert_close(turned[0, 0], torch.rot90(x[0, 0]), rtol=0, atol=1e-4)  # 90 degrees anticlockwise


def test_each_image_gets_one_transform_drawn_uniformly():
    from raydistill import dc

    augment = dc.Augment(("crop", "scale", "rotate"), (0.5,), (0.25,), seed=3)
    picks = []
    for name in ("crop", "scale", "rotate"):
        original = getattr(augment, name)
        setattr(augment, name, lambda image, fill, n=name, f=original: picks.append(n) or f(image, fill))
    augment(torch.rand(300, 1, 8, 8))
    assert len(picks) == 300 and all(80 < picks.count(n) < 120 for n in ("crop", "scale", "rotate"))


def test_several_sets_are_drawn_and_each_is_evaluated_with_its_own_models(mnist_root):
    base = TrialConfig(dataset="mnist", method="random", modifier="none", protocol="dc", ipc=2, student_epochs=1,
                       eval_runs=2, data_root=str(mnist_root), device="cpu")
    one = run_trial(base)
    three = run_trial(base.replace(eval_sets=3))
    assert len(three.metrics["accuracy_runs"]) == 6
    assert three.metrics["accuracy"] == pytest.approx(np.mean(three.metrics["accuracy_runs"]))
    assert three.metrics["accuracy_std"] == pytest.approx(np.std(three.metrics["accuracy_runs"], ddof=1))
    assert three.metrics["accuracy_runs"][:2] == one.metrics["accuracy_runs"]  # the first set is the one-set trial's
    assert torch.equal(three.images, one.images)
    from raydistill.pipeline import set_seeds

    seeds = set_seeds(0, 3)
    assert seeds[0] == 0 and len(set(seeds)) == 3
    drawn = [run_trial(base.replace(seed=s, eval_runs=1)).images for s in seeds]
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])  # independent draws


def test_several_sets_need_a_protocol_that_evaluates_sets():
    from raydistill.config import ConfigError

    with pytest.raises(ConfigError, match="eval-sets 2: protocol 'paper'"):
        TrialConfig(eval_sets=2).validate()
    with pytest.raises(ConfigError, match="full training set is one set"):
        TrialConfig(method="full", protocol="dc", eval_sets=2).validate()
    TrialConfig(protocol="dc", eval_sets=2).validate()


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



def test_a_dc_trial_stopped_inside_its_models_continues_each_where_it_stopped(mnist_root, monkeypatch):
    monkeypatch.setattr(protocols, "CHECKPOINT_SECONDS", 0.0)  # a model's state after every pass
    cfg = TrialConfig(dataset="mnist", method="random", modifier="none", protocol="dc", ipc=2, student_epochs=3,
                      eval_runs=2, data_root=str(mnist_root), device="cpu")
    whole = run_trial(cfg)
    kept, resumed_at = [], []
    real = protocols.train_convnet
    monkeypatch.setattr(protocols, "train_convnet",
                        lambda *a, **k: resumed_at.append((k["resume"] or {}).get("passes")) or real(*a, **k))

    def stop_at(models: int, passes: int):
        def keep(checkpoint):
            kept.append(checkpoint)
            partial = checkpoint.scorer_state.get("partial")
            if checkpoint.epoch == models and partial and partial["passes"] == passes:
                raise KeyboardInterrupt
        return keep

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, on_student_checkpoint=stop_at(0, 2))  # inside the first model (it keeps curves, probabilities)
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, student_resume=kept[-1], on_student_checkpoint=stop_at(1, 3))  # inside the second
    resumed = run_trial(cfg, student_resume=kept[-1], on_student_checkpoint=kept.append)
    assert resumed_at == [None, 2, None, 3]  # each model continued from its pass, none trained twice
    assert resumed.metrics["accuracy_runs"] == whole.metrics["accuracy_runs"]
    np.testing.assert_array_equal(resumed.proba, whole.proba)
    assert resumed.curves == whole.curves and resumed.resumed_epoch == 1
    assert kept[-1].epoch == 2 and "partial" not in kept[-1].scorer_state

def test_an_interrupted_dc_trial_continues_model_by_model_with_the_uninterrupted_result(mnist_root, monkeypatch):
    cfg = TrialConfig(dataset="mnist", method="random", modifier="none", protocol="dc", ipc=2, student_epochs=1,
                      eval_runs=2, eval_sets=2, data_root=str(mnist_root), device="cpu")
    whole = run_trial(cfg)
    kept = []

    def keep(checkpoint):
        kept.append(checkpoint)
        if checkpoint.epoch == 3:
            raise KeyboardInterrupt  # stopped after the third of four models

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, on_student_checkpoint=keep)
    assert [c.epoch for c in kept] == [1, 2, 3] and kept[-1].seconds > 0
    trained = []
    real = protocols.train_convnet
    monkeypatch.setattr(protocols, "train_convnet", lambda *a, **k: trained.append(1) or real(*a, **k))
    resumed_from = len(kept)
    resumed = run_trial(cfg, student_resume=kept[-1], on_student_checkpoint=kept.append)
    # kept again before any training (the attempt it came from may be dropped), then the last model
    assert [c.epoch for c in kept[resumed_from:]] == [3, 4]
    assert len(trained) == 1  # only the last model trained
    assert resumed.metrics["accuracy_runs"] == whole.metrics["accuracy_runs"]
    assert resumed.metrics["accuracy"] == whole.metrics["accuracy"] and resumed.resumed_epoch == 3
    np.testing.assert_array_equal(resumed.proba, whole.proba)
    other = kept[0].__class__(**{**vars(kept[2]), "fingerprint": "another set"})
    trained.clear()
    run_trial(cfg, student_resume=other)  # a checkpoint of other sets is not continued
    assert len(trained) == 4
