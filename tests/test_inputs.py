"""A cell's run shows what its metrics were computed on (issue 22): the training split it used, the
test split and the set its student trained on as MLflow dataset inputs, with content digests and
sizes, the one it was scored on first and as a tag. Real tiny trials, logged as a sweep cell logs
them (raydistill.inputs.log in the cell's active run), read back from a sqlite store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from conftest import make_mnist_like
from raydistill import inputs, tracking
from raydistill.config import TrialConfig
from raydistill.data import Dataset, load
from raydistill.pipeline import TrialResult, run_trial

LIMIT = 60  # of the tiny set's 120 training images (40 test images)
TINY = dict(dataset="mnist", model="lenet", ipc=2, teacher_epochs=1, student_epochs=2, device="cpu", train_limit=LIMIT)


def sha(images: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:12]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[tuple[MlflowClient, str]]:
    """A sqlite store with one sweep experiment, as the fluent API's tracking URI (as in a trial)."""
    folder = tmp_path_factory.mktemp("results")
    uri = tracking.local_store(folder)
    tracking.init_store(uri)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)  # restored afterwards
        mlflow.set_tracking_uri(uri)
        yield MlflowClient(uri), tracking.ensure_experiment(uri, "inputs", folder / "mlartifacts")
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_mnist_like(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cell(root) -> tuple[TrialConfig, Dataset, TrialResult]:
    """A real tiny K-means cell: its config, the data it was given and its result."""
    cfg = TrialConfig(**TINY, data_root=str(root))
    data = load("mnist", root)
    return cfg, data, run_trial(cfg, data)


def logged(store, cfg: TrialConfig, data, result) -> tuple[dict, dict[str, str]]:
    """Log a cell's inputs in a fresh run; (context -> its dataset input, the run's tags), read back."""
    client, experiment_id = store
    with mlflow.start_run(experiment_id=experiment_id) as run:
        inputs.log(cfg, data, result)
    back = client.get_run(run.info.run_id)
    found = {}
    for item in back.inputs.dataset_inputs:
        tags = {t.key: t.value for t in item.tags}
        found[tags.pop("mlflow.data.context")] = item
    return found, back.data.tags


def test_a_cell_run_logs_its_training_split_test_split_and_distilled_set(root, store, cell):
    cfg, data, result = cell
    found, tags = logged(store, cfg, data, result)
    assert set(found) == {"training", "test", "distilled"}
    train = data.limit_train(LIMIT, cfg.seed).train
    assert len(train) == result.n_train == LIMIT
    images, labels = result.images.numpy(), result.labels.numpy()
    expected = {"training": ("mnist/train[60]", train.images, train.labels),
                "test": ("mnist/test[40]", data.test.images, data.test.labels),
                "distilled": ("mnist/kmeans[20]", images, labels)}
    for context, (name, x, y) in expected.items():
        dataset = found[context].dataset
        assert (dataset.name, dataset.digest) == (name, sha(x, y)), context
        profile = json.loads(dataset.profile)
        assert profile["images"] == len(y) and profile["classes"] == 10, (context, profile)
        assert profile["features_shape"] == [len(y), 1, 28, 28] and profile["targets_shape"] == [len(y)]
        assert json.loads(dataset.source) == {"uri": str(root / "MNIST" / "raw")}
        assert dataset.source_type == "local"
        features = json.loads(json.loads(dataset.schema)["mlflow_tensorspec"]["features"])[0]["tensor-spec"]
        assert features == {"dtype": str(x.dtype), "shape": [-1, 1, 28, 28]}
    assert tags[tracking.SCORED_ON] == "test" and next(iter(found)) == "test"  # scored on, shown first


def test_the_same_data_has_the_same_digest_in_every_run_and_other_data_another(root, store, cell):
    cfg, data, result = cell
    first, _ = logged(store, cfg, data, result)
    again, _ = logged(store, cfg, load("mnist", root), run_trial(cfg, data))  # read and distilled again
    other, _ = logged(store, cfg.replace(seed=1), data, run_trial(cfg.replace(seed=1), data))  # another subset
    digests = {name: {c: i.dataset.digest for c, i in runs.items()} for name, runs in
               (("first", first), ("again", again), ("other", other))}
    assert digests["again"] == digests["first"]
    assert digests["other"]["test"] == digests["first"]["test"]
    assert digests["other"]["training"] != digests["first"]["training"]
    assert digests["other"]["distilled"] != digests["first"]["distilled"]


@pytest.mark.parametrize("scoring, scored, name", [(dict(score_on="train"), "training", "mnist/train[60]"),
                                                   (dict(score_on="fit"), "distilled", "mnist/kmeans[20]"),
                                                   (dict(epoch_pick="best-test"), "test", "mnist/test[40]")],
                         ids=["train", "fit", "best-test"])
def test_a_forensics_cell_shows_the_input_it_was_scored_on_first_and_as_a_tag(store, cell, scoring, scored, name):
    """A twin of the cell scored another way (as a sweep scores the twin's trained student)."""
    cfg, data, result = cell
    found, tags = logged(store, cfg.replace(**scoring), data, result)
    assert tags[tracking.SCORED_ON] == scored
    assert list(found)[0] == scored and found[scored].dataset.name == name
    assert set(found) == {"training", "test", "distilled"}


def test_a_cell_that_evaluated_several_sets_says_its_distilled_input_is_the_first(store, cell):
    cfg, data, result = cell
    found, _ = logged(store, cfg.replace(protocol="dc", eval_sets=3), data, result)
    assert {t.key: t.value for t in found["distilled"].tags}[inputs.SET_TAG] == "1 of 3"
    assert inputs.SET_TAG not in {t.key for t in found["training"].tags}
    single, _ = logged(store, cfg, data, result)
    assert inputs.SET_TAG not in {t.key for t in single["distilled"].tags}


def test_a_full_cell_trains_on_the_training_split(store, cell):
    cfg, data, _ = cell
    cfg = cfg.replace(method="full")
    found, _ = logged(store, cfg, data, run_trial(cfg, data))
    assert set(found) == {"training", "test", "distilled"}
    train = data.limit_train(LIMIT, cfg.seed).train
    trained = found["distilled"].dataset
    assert (trained.name, trained.digest) == ("mnist/full[60]", sha(train.images, train.labels))
    assert found["training"].dataset.digest == trained.digest


def test_under_leak_test_the_pool_of_training_and_test_split_is_an_input_and_what_full_trains_on(store, cell):
    cfg, data, _ = cell
    cfg = cfg.replace(method="full", leak_test=True)
    found, _ = logged(store, cfg, data, run_trial(cfg, data))
    assert set(found) == {"training", "test", "pool", "distilled"}
    train, test = data.limit_train(LIMIT, cfg.seed).train, data.test
    assert found["training"].dataset.digest == sha(train.images, train.labels)
    pool, trained = found["pool"].dataset, found["distilled"].dataset
    x, y = np.concatenate([train.images, test.images]), np.concatenate([train.labels, test.labels])
    assert (pool.name, pool.digest) == ("mnist/train[60]+test[40]", sha(x, y))
    assert (trained.name, trained.digest) == ("mnist/full[100]", pool.digest)
    assert json.loads(trained.profile)["images"] == 100


def test_a_dataset_another_run_added_meanwhile_does_not_fail_the_cell(store, cell, monkeypatch):
    """Datasets are unique per experiment: a run that adds one between another's check and insert
    makes that insert fail once (sqlite: UNIQUE constraint failed); logging again finds it there."""
    cfg, data, result = cell
    first, _ = logged(store, cfg, data, result)
    real, calls = MlflowClient.log_inputs, []

    def racing(self, run_id, datasets=None, models=None):
        calls.append(run_id)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        return real(self, run_id, datasets, models)

    monkeypatch.setattr(MlflowClient, "log_inputs", racing)
    second, _ = logged(store, cfg, data, result)
    assert len(calls) == 2
    assert {c: i.dataset.digest for c, i in second.items()} == {c: i.dataset.digest for c, i in first.items()}


def test_an_input_that_cannot_be_logged_is_said_in_a_tag_and_does_not_fail_the_cell(store, cell, monkeypatch):
    cfg, data, result = cell
    calls = []

    def broken(self, run_id, datasets=None, models=None):
        calls.append(run_id)
        raise MlflowException("the store is read-only")

    monkeypatch.setattr(MlflowClient, "log_inputs", broken)
    _, tags = logged(store, cfg, data, result)
    assert len(calls) == 1 and "the store is read-only" in tags[inputs.INPUTS_ERROR]
    assert tags["raydistill.scored_on"] == "test"
