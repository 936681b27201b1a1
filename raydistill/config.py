"""One trial's settings, validated once before any data is read or any model is trained.

Every bad input is caught here with a one-line message that says what was wrong and what is
allowed. The names accepted on each axis live here too, so the layers above register exactly these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100")
FOLDER_PREFIX = "folder:"
MODELS = ("baseline", "lenet", "resnet34", "convnet3")
MODIFIERS = ("grad-l1", "grad-l1-last", "input-grad", "none")
METHODS = ("kmeans", "kmeans-nearest", "random", "herding", "kcenter", "dm", "full")
BACKENDS = ("auto", "sklearn", "cuml")
PROTOCOLS = ("paper", "dc")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the value and what is allowed."""


@dataclass(frozen=True)
class TrialConfig:
    """Everything that defines one trial; `to_dict()` is what gets logged and exported."""

    dataset: str = "fashion-mnist"
    model: str = "baseline"
    method: str = "kmeans"
    modifier: str = "grad-l1"
    ipc: int = 10
    teacher_epochs: int = 5
    student_epochs: int = 5
    protocol: str = "paper"
    backend: str = "auto"
    seed: int = 0
    data_root: str = "data"
    download: bool = False
    train_limit: int | None = None
    resize: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    alpha: float | None = None
    positive_class: str | None = None
    eval_runs: int = 5
    dm_iterations: int = 1000
    device: str = "auto"

    @property
    def step_size(self) -> float:
        """Eq. 2's alpha: the learning rate unless set explicitly."""
        return self.lr if self.alpha is None else self.alpha

    @property
    def needs_teacher(self) -> bool:
        """A teacher is trained only when the images are modified with its gradients."""
        return self.method != "full" and self.modifier != "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrialConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TrialConfig":
        """Raise ConfigError on the first setting that cannot work; return self otherwise."""
        if not (self.dataset in DATASETS or is_folder(self.dataset)):
            raise ConfigError(
                f"unknown dataset {self.dataset!r}; allowed: {', '.join(DATASETS)} or folder:PATH"
            )
        if is_folder(self.dataset) and not self.dataset[len(FOLDER_PREFIX):].strip():
            raise ConfigError("dataset 'folder:' needs a path, e.g. folder:/data/ocid")
        _choice("model", self.model, MODELS)
        _choice("method", self.method, METHODS)
        _choice("modifier", self.modifier, MODIFIERS)
        _choice("backend", self.backend, BACKENDS)
        _choice("protocol", self.protocol, PROTOCOLS)
        _choice("device", self.device, DEVICES)
        _positive("ipc", self.ipc)
        _positive("teacher-epochs", self.teacher_epochs)
        _positive("student-epochs", self.student_epochs)
        _positive("batch-size", self.batch_size)
        _positive("eval-runs", self.eval_runs)
        _positive("dm-iterations", self.dm_iterations)
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ConfigError(f"train-limit must be a positive integer, got {self.train_limit}")
        if self.resize is not None and self.resize < 8:
            raise ConfigError(f"resize must be at least 8 pixels, got {self.resize}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.alpha is not None and not self.alpha >= 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")
        if self.device == "cuda" or self.backend == "cuml":
            from raydistill.device import cuda_available, cuml_available

            if self.device == "cuda" and not cuda_available():
                raise ConfigError("device 'cuda' asked for, but no CUDA GPU is visible; use --device auto or cpu")
            if self.backend == "cuml" and not cuml_available():
                raise ConfigError(
                    "backend 'cuml' needs a CUDA GPU and cuML (pip install 'raydistill[gpu]'); "
                    "none is usable here; use --backend auto or sklearn"
                )
            if self.backend == "cuml" and self.device == "cpu":
                raise ConfigError("backend 'cuml' runs on the GPU; it cannot be combined with --device cpu")
        return self

    def check_data(self, classes: Sequence[str], class_counts: Sequence[int]) -> None:
        """Checks that need the training split's classes (after --train-limit)."""
        if len(classes) < 2:
            raise ConfigError(f"a dataset needs at least 2 classes, found {len(classes)}")
        smallest = min(class_counts)
        if self.method != "full" and self.ipc > smallest:
            name = classes[list(class_counts).index(smallest)]
            raise ConfigError(
                f"ipc {self.ipc} is larger than the smallest class ({name!r}: {smallest} training images); "
                f"allowed: 1..{smallest}"
            )
        if self.positive_class is not None and self.positive_class not in classes:
            raise ConfigError(
                f"positive class {self.positive_class!r} is not a class of this dataset; allowed: {', '.join(classes)}"
            )


def is_folder(dataset: str) -> bool:
    return dataset.startswith(FOLDER_PREFIX)


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
