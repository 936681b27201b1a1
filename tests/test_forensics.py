"""Issue 9's evaluation knobs and curves: each knob changes exactly what its literal reading says,
defaults stay honest, and bad combinations stop before compute. The student, the teacher and the
selection pool are captured by spying on the functions the pipeline calls, and every figure the
pipeline reports is recomputed here from what was captured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raydistill import models, pipeline, protocols
from raydistill.config import FORENSICS, ConfigError, TrialConfig, eval_epochs
from raydistill.data import DeviceData, load
from raydistill.distill import modifiers
from raydistill.train import EpochStats

from conftest import make_mnist_like

TINY = dict(dataset="mnist", model="lenet", ipc=3, teacher_epochs=1, student_epochs=2, device="cpu")
N_TRAIN, N_TEST = 120, 40  # make_mnist_like: 12 + 4 images per class
NO_TEACHER = dict(modifier="none")  # for tests of the student alone: no teacher to train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_mnist_like(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def data(data_root):
    return load("mnist", data_root)


@pytest.fixture
def spy(monkeypatch):
    """What the pipeline hands on: the student's fit (its state before training, its inputs, the
    trained model), the teacher's training set and snapshot, the selection pool, the shift's input
    and every student prediction's input. Each key keeps the last call."""
    seen: dict = {"shift": [], "predict": []}
    real_fit, real_teacher, real_distill = protocols.fit, pipeline.train_teacher, pipeline.distill
    real_shift, real_predict = modifiers.shift, protocols.predict_proba

    def fit(model, x, y, epochs, **kw):
        seen["init"] = {k: v.clone() for k, v in model.state_dict().items()}
        seen["x"], seen["y"] = x, y
        seen["model"] = real_fit(model, x, y, epochs, **kw)
        return seen["model"]

    def train_teacher(name, data, tensors, milestones, **kw):
        seen["teacher_set"], seen["teacher_normalize"] = tensors, kw["normalize"]
        seen["snapshots"] = real_teacher(name, data, tensors, milestones, **kw)
        return seen["snapshots"]

    def distill(cfg, x, y, *args):
        seen["pool"] = (x, y)
        return real_distill(cfg, x, y, *args)

    def shift(images, *args):
        seen["shift"].append(images)
        return real_shift(images, *args)

    def predict(model, x, *args, **kw):
        seen["predict"].append(x)
        return real_predict(model, x, *args, **kw)

    monkeypatch.setattr(protocols, "fit", fit)
    monkeypatch.setattr(pipeline, "train_teacher", train_teacher)
    monkeypatch.setattr(pipeline, "distill", distill)
    monkeypatch.setattr(modifiers, "shift", shift)
    monkeypatch.setattr(protocols, "predict_proba", predict)
    return seen


def run(data, data_root, **changes):
    return pipeline.run_trial(TrialConfig(**{**TINY, **changes}, data_root=str(data_root)), data)


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    """Plain eval-mode accuracy, uint8 pixels scaled to [0, 1], anything else fed as it is."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    model.eval()
    return int((model(x).argmax(1) == y).sum()) / len(y)


def fresh_state(data, cfg: TrialConfig, normalize: bool = True) -> dict[str, torch.Tensor]:
    torch.manual_seed(cfg.seed + protocols.STUDENT_SEED_OFFSET)
    return models.build(cfg.model, data.shape, data.num_classes, data.mean, data.std, normalize=normalize).state_dict()


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# score_on ---------------------------------------------------------------------------------------

def test_default_scores_the_trained_fresh_student_on_the_test_split(data, data_root, spy):
    result = run(data, data_root)
    cfg = TrialConfig(**TINY)
    assert same_state(spy["init"], fresh_state(data, cfg))
    assert np.array_equal(result.y_true, data.test.labels)
    assert result.metrics["accuracy"] == pytest.approx(accuracy(spy["model"], data.test.images, data.test.labels))


def test_score_on_fit_is_the_accuracy_on_the_distilled_set_it_trained_on(data, data_root, spy):
    result = run(data, data_root, score_on="fit")
    assert torch.equal(spy["x"], result.images) and torch.equal(spy["y"], result.labels)  # it trained on these
    assert np.array_equal(result.y_true, result.labels.numpy()) and len(result.y_true) == 30
    assert result.metrics["accuracy"] == pytest.approx(accuracy(spy["model"], result.images, result.labels))


def test_score_on_fit_under_full_is_the_accuracy_on_the_whole_training_split(data, data_root, spy):
    result = run(data, data_root, method="full", score_on="fit")
    assert np.array_equal(spy["x"].numpy(), data.train.images) and np.array_equal(spy["y"].numpy(), data.train.labels)
    assert np.array_equal(result.y_true, data.train.labels)
    assert result.metrics["accuracy"] == pytest.approx(accuracy(spy["model"], data.train.images, data.train.labels))


def test_score_on_train_is_the_accuracy_on_the_training_split(data, data_root, spy):
    result = run(data, data_root, score_on="train")
    assert len(spy["x"]) == 30  # still trained on the distilled set
    assert np.array_equal(result.y_true, data.train.labels)
    assert result.metrics["accuracy"] == pytest.approx(accuracy(spy["model"], data.train.images, data.train.labels))


# student_init -----------------------------------------------------------------------------------

@pytest.mark.parametrize("pixel_scale", ["unit", "byte"])
def test_student_init_teacher_starts_from_the_teachers_state_and_fresh_does_not(data, data_root, spy, pixel_scale):
    run(data, data_root, student_init="teacher", student_epochs=1, pixel_scale=pixel_scale)
    (snap,) = spy["snapshots"]
    assert same_state(spy["init"], snap.state_dict)
    run(data, data_root, student_epochs=1, pixel_scale=pixel_scale)
    (snap,) = spy["snapshots"]
    weights = [k for k in snap.state_dict if k.endswith("weight")]
    assert weights and not any(torch.equal(spy["init"][k], snap.state_dict[k]) for k in weights)
    assert same_state(spy["init"], fresh_state(data, TrialConfig(**TINY), normalize=pixel_scale == "unit"))


# pixel_scale ------------------------------------------------------------------------------------

def test_pixel_scale_byte_uses_0_to_255_values_everywhere_and_no_normalisation(data, data_root, spy):
    result = run(data, data_root, pixel_scale="byte")
    raw_train = torch.from_numpy(data.train.images).float()
    assert spy["teacher_set"].x_train.dtype == torch.float32 and torch.equal(spy["teacher_set"].x_train, raw_train)
    assert spy["teacher_normalize"] is False and not any("mean" in k for k in spy["snapshots"][0].state_dict)
    assert torch.equal(spy["pool"][0], raw_train)  # the shift's and the clustering's pool
    assert all(1 < images.max() <= 255 for images in spy["shift"])
    assert spy["x"].dtype == torch.float32 and 1 < spy["x"].max() <= 255  # the student's training images
    assert isinstance(spy["model"][0], nn.Identity)
    assert spy["predict"] and all(x.dtype == torch.float32 and 1 < x.max() <= 255 for x in spy["predict"])
    assert result.metrics["accuracy"] == pytest.approx(
        accuracy(spy["model"], torch.from_numpy(data.test.images).float(), data.test.labels))


def test_pixel_scale_unit_keeps_0_to_1_images_and_normalize(data, data_root, spy):
    run(data, data_root)
    assert spy["teacher_normalize"] is True and spy["pool"][0].dtype == torch.uint8
    assert all(images.max() <= 1 for images in spy["shift"])
    assert spy["x"].max() <= 1 and isinstance(spy["model"][0], models.Normalize)


# leak_test --------------------------------------------------------------------------------------

@pytest.mark.parametrize("leak", [False, True])
def test_leak_test_adds_exactly_the_test_images_to_the_teacher_and_the_pool(data, data_root, spy, leak):
    result = run(data, data_root, leak_test=leak)
    x = np.concatenate([data.train.images, data.test.images]) if leak else data.train.images
    y = np.concatenate([data.train.labels, data.test.labels]) if leak else data.train.labels
    assert len(y) == N_TRAIN + N_TEST * leak
    for images, labels in (spy["pool"], (spy["teacher_set"].x_train, spy["teacher_set"].y_train)):
        assert np.array_equal(images.numpy(), x) and np.array_equal(labels.numpy(), y)
    # nothing else: the student trains on the distilled set and is scored on the test split alone
    assert len(spy["x"]) == 30 and result.n_train == N_TRAIN
    assert np.array_equal(spy["teacher_set"].x_test.numpy(), data.test.images)
    assert np.array_equal(result.y_true, data.test.labels)
    assert all(len(x) in (30, N_TEST) for x in spy["predict"])


# epoch_pick and curves --------------------------------------------------------------------------

def test_epoch_pick_best_test_is_the_max_of_the_test_curve_at_its_epoch(data, data_root):
    fast = dict(**NO_TEACHER, batch_size=4)  # reaches its best test accuracy well before the last epoch
    best = run(data, data_root, **fast, student_epochs=6, eval_every=1, epoch_pick="best-test")
    last = run(data, data_root, **fast, student_epochs=6, eval_every=1)
    curve = best.curves["test_accuracy"]
    assert [e for e, _ in curve] == list(range(1, 7)) and curve == last.curves["test_accuracy"]
    assert best.metrics["accuracy"] == max(v for _, v in curve)
    assert last.metrics["accuracy"] == curve[-1][1]
    epoch = next(e for e, v in curve if v == max(v for _, v in curve))
    assert epoch < 6, "this setting should peak early, so that best-test and last differ"
    at_epoch = run(data, data_root, **fast, student_epochs=epoch)  # the same training, stopped there
    assert np.array_equal(best.proba, at_epoch.proba) and best.metrics == at_epoch.metrics
    assert not np.array_equal(best.proba, last.proba)


class Constant(nn.Module):
    """Predicts one class for every image."""

    def __init__(self, label: int, classes: int = 3):
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * F.one_hot(torch.full((len(x),), self.label), self.classes).float()


@pytest.mark.parametrize("pick,expected", [("best-test", 3 / 6), ("last", 1 / 6)])
def test_scorer_reports_the_best_test_epoch_not_the_last(pick, expected):
    """Test accuracies 2/6, 3/6, 1/6 over three epochs: best-test reports epoch 2's scores, last epoch 3's."""
    x = torch.zeros(6, 1, 2, 2)
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    student = protocols.StudentData(x, y, DeviceData(x, y, x, y), positive=1)
    cfg = TrialConfig(student_epochs=3, eval_every=1, epoch_pick=pick)
    scorer = protocols.Scorer(cfg, student, 3, "student", None)
    for epoch, label in enumerate((0, 1, 2), 1):
        scorer(epoch, Constant(label), EpochStats(0.0, 0.0, 0.0))
    result = scorer.evaluation(Constant(2))
    assert [v for _, v in result.curves["test_accuracy"]] == pytest.approx([2 / 6, 3 / 6, 1 / 6])
    assert result.metrics["accuracy"] == pytest.approx(expected)
    assert result.proba.argmax(1).tolist() == [1 if pick == "best-test" else 2] * 6


def test_eval_epochs_are_log_spaced_by_default_and_every_n_on_request():
    assert eval_epochs(1000, 0) == [1, 2, 3, 4, 6, 10, 16, 25, 40, 63, 100, 158, 251, 398, 631, 1000]
    assert eval_epochs(20, 7) == [7, 14, 20] and eval_epochs(3, 0) == [1, 2, 3] and eval_epochs(5, 9) == [5]


def curve_epochs(result, epochs: int, every: int) -> None:
    at = eval_epochs(epochs, every)
    assert len(at) < epochs
    for name in ("test_accuracy", "fit_accuracy"):
        assert [e for e, _ in result.curves[name]] == at
    for name in ("train_loss", "train_accuracy"):
        assert [e for e, _ in result.curves[name]] == list(range(1, epochs + 1))
    assert result.curves["test_accuracy"][-1][1] == result.metrics["accuracy"]


def test_curves_every_n_epochs_on_request(data, data_root):
    curve_epochs(run(data, data_root, **NO_TEACHER, student_epochs=10, eval_every=4), 10, 4)


def test_curves_are_log_spaced_and_score_the_test_split_and_the_set_trained_on(data, data_root):
    result = run(data, data_root, **NO_TEACHER, student_epochs=10)
    curve_epochs(result, 10, 0)
    # an inner point is what a run stopped at that epoch scores on the test split and on its set
    k = eval_epochs(10, 0)[-2]
    stopped = run(data, data_root, **NO_TEACHER, student_epochs=k, score_on="fit")
    assert dict(result.curves["test_accuracy"])[k] == stopped.curves["test_accuracy"][-1][1]
    assert dict(result.curves["fit_accuracy"])[k] == stopped.metrics["accuracy"]


def test_curves_do_not_change_training(data, data_root, spy):
    dense = run(data, data_root, **NO_TEACHER, student_epochs=5, eval_every=1)
    dense_state = {k: v.clone() for k, v in spy["model"].state_dict().items()}
    sparse = run(data, data_root, **NO_TEACHER, student_epochs=5, eval_every=5)
    assert len(dense.curves["test_accuracy"]) == 5 and len(sparse.curves["test_accuracy"]) == 1
    assert same_state(dense_state, spy["model"].state_dict())
    assert np.array_equal(dense.proba, sparse.proba) and dense.metrics == sparse.metrics


# honest defaults and tags -----------------------------------------------------------------------

def test_defaults_are_honest_and_every_knob_is_a_labelled_hypothesis():
    from raydistill import tracking
    from raydistill.tune.trainable import cell_tags

    assert TrialConfig().hypothesis == "honest" and not TrialConfig().is_forensics
    assert {k: getattr(TrialConfig(), k) for k in FORENSICS} == {k: v[0] for k, v in FORENSICS.items()}
    cell, ctx = {"name": "cell", "key": "k"}, {"sweep": "s", "sweep_run_id": "r", "git_commit": "c"}
    tags = cell_tags(cell, ctx, TrialConfig())
    assert (tags[tracking.FORENSICS], tags[tracking.HYPOTHESIS]) == ("false", "honest")
    tags = cell_tags(cell, ctx, TrialConfig(score_on="fit"))
    assert (tags[tracking.FORENSICS], tags[tracking.HYPOTHESIS]) == ("true", "score_on=fit")
    for knob, values in FORENSICS.items():
        for value in values[1:]:
            cfg = TrialConfig(**{knob: value})
            assert cfg.is_forensics and cfg.hypothesis.startswith(f"{knob}=")


# bad input --------------------------------------------------------------------------------------

BAD = [
    (dict(score_on="valid"), "unknown score-on 'valid'"),
    (dict(student_init="random"), "unknown student-init 'random'"),
    (dict(pixel_scale="float"), "unknown pixel-scale 'float'"),
    (dict(epoch_pick="best"), "unknown epoch-pick 'best'"),
    (dict(leak_test="yes"), "leak-test must be true or false"),
    (dict(epoch_pick="best-test", student_epochs=1), "at least 2 scored epochs"),
    (dict(epoch_pick="best-test", student_epochs=5, eval_every=5), "at least 2 scored epochs"),
    (dict(epoch_pick="best-test", score_on="fit", student_epochs=5), "use it with score-on test"),
    (dict(student_init="teacher", method="full"), "student-init teacher needs a teacher"),
    (dict(student_init="teacher", modifier="none"), "student-init teacher needs a teacher"),
    *[(dict(protocol="dc", **{k: v[1]}), "cannot be combined with --protocol dc") for k, v in FORENSICS.items()],
]


@pytest.mark.parametrize("changes,message", BAD)
def test_bad_knobs_are_one_line_errors_before_any_data_is_read(monkeypatch, changes, message):
    def no_data(*args, **kwargs):
        raise AssertionError("data was read before the config was checked")

    monkeypatch.setattr(pipeline, "prepare_data", no_data)
    with pytest.raises(ConfigError, match=message) as err:
        pipeline.run_trial(TrialConfig(**{**TINY, "student_epochs": 3, **changes}))
    assert "\n" not in str(err.value)
