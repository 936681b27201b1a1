"""What a cell's metrics were computed on, as MLflow dataset inputs of its run, one per context:
`training` (the training split it used, after train_limit), `test` (the test split), `distilled`
(the set its student trained on: the distilled set as in distilled.pt, or for `full` the training
split) and, under leak_test, `pool` (training + test split: what its teacher and selection saw,
and what `full` then trains on). Each is named (`fashion-mnist/train[10000]`), content-digested
(sha256 of the images' bytes, then the labels': the same data has the same digest in every run)
and profiled (images, classes, shapes); no data is uploaded. The input the metrics were computed
on (config.score_on) comes first, so that MLflow's Dataset column shows it, and its context is the
run's tag `raydistill.scored_on`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.numpy_dataset import NumpyDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.exceptions import MlflowException

from raydistill import tracking
from raydistill.config import FOLDER_PREFIX, TrialConfig, is_folder
from raydistill.data import Dataset, Split
from raydistill.pipeline import TrialResult, prepare_data
from raydistill.registry import DATASETS

TRAIN, TEST, SET, POOL = "training", "test", "distilled", "pool"  # the inputs' contexts
SCORED = {"test": TEST, "train": TRAIN, "fit": SET}  # config.score_on -> the context scored on
SET_TAG = "raydistill.set"  # input tag of the distilled set when several were evaluated: "1 of N"
DIGEST_CHARS = 12
UNIQUE_VIOLATION = ("UNIQUE constraint failed", "duplicate key", "Duplicate entry")  # sqlite, PostgreSQL, MySQL
INPUTS_ERROR = "raydistill.inputs_error"  # run tag: why the inputs could not be logged


class ImageSet(NumpyDataset):
    """Images (N, C, H, W) with their labels; the profile counts images and classes, besides NumPy's shapes."""

    @property
    def profile(self) -> dict:
        return {"images": len(self.targets), "classes": int(np.unique(self.targets).size), **super().profile}


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the images' bytes, then the labels' (C order), shortened."""
    content = hashlib.sha256(np.ascontiguousarray(images))
    content.update(np.ascontiguousarray(labels))
    return content.hexdigest()[:DIGEST_CHARS]


def location(cfg: TrialConfig) -> str:
    """Where the dataset's files were read from (a folder set's folder as given)."""
    if is_folder(cfg.dataset):
        return cfg.dataset[len(FOLDER_PREFIX):]
    return str(Path(cfg.data_root) / DATASETS[cfg.dataset].obj.folder)


def datasets(cfg: TrialConfig, data: Dataset, result: TrialResult) -> dict[str, ImageSet]:
    """Context -> the cell's dataset; `data` as given to run_trial (limited here as it limits it)."""
    used = prepare_data(cfg, data)
    source = LocalArtifactDatasetSource(location(cfg))

    def image_set(name: str, split: Split) -> ImageSet:
        return ImageSet(split.images, source, split.labels, name=f"{used.label}/{name}",
                        digest=digest(split.images, split.labels))

    train, test = used.train, used.test
    found = {TRAIN: image_set(f"train[{len(train)}]", train), TEST: image_set(f"test[{len(test)}]", test)}
    pool = train
    if cfg.leak_test:
        pool = Split(np.concatenate([train.images, test.images]), np.concatenate([train.labels, test.labels]))
        found[POOL] = image_set(f"train[{len(train)}]+test[{len(test)}]", pool)
    trained = Split(result.images.numpy(), result.labels.numpy()) if cfg.distills else pool
    found[SET] = image_set(f"{cfg.method}[{len(trained)}]", trained)
    return found


def log(cfg: TrialConfig, data: Dataset, result: TrialResult) -> None:
    """Log the cell's inputs to the active run, the one its metrics were computed on first, and tag
    the run with that one's context."""
    found = datasets(cfg, data, result)
    scored = SCORED[cfg.score_on]
    contexts = sorted(found, key=lambda context: context != scored)
    tags = [{SET_TAG: f"1 of {cfg.eval_sets}"} if c == SET and cfg.eval_sets > 1 else None for c in contexts]
    for attempt in range(2):
        try:
            tracking.retrying(mlflow.get_tracking_uri(),
                              lambda: mlflow.log_inputs([found[c] for c in contexts], contexts, tags))
            break
        except MlflowException as err:
            # another run added the same dataset (unique per experiment) meanwhile: it is there now, so
            # logging again works; anything else is said in a tag (the cell's metrics stand without it)
            if attempt or not any(word in str(err) for word in UNIQUE_VIOLATION):
                mlflow.set_tag(INPUTS_ERROR, f"{type(err).__name__}: {err}"[:5000])
                break
    mlflow.set_tag(tracking.SCORED_ON, scored)
