"""One trial's settings, validated once before any data is read or any model is trained.

Every bad input is caught here with a one-line message that says what was wrong and what is
allowed. The names accepted on each axis come from the registries (raydistill.registry), so a
newly registered model, dataset, method, modifier or protocol is accepted everywhere at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raydistill.errors import ConfigError
from raydistill.registry import DATASETS, METHODS, MODELS, MODIFIERS, PROTOCOLS

__all__ = ["ConfigError", "TrialConfig", "FOLDER_PREFIX", "is_folder", "dataset_kind"]

FOLDER_PREFIX = "folder:"
BACKENDS = ("auto", "sklearn", "cuml")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16")
MAX_SEED = 2**32 - 1  # NumPy and scikit-learn seeds are 32-bit
MAX_RESIZE = 2048
MAX_EPOCHS = 100_000

# Forensics: each knob is one literal reading of how the paper could have been evaluated. The
# first value is the honest protocol; any other value makes the run a hypothesis, tagged as such
# and kept out of the honest tables.
FORENSICS: dict[str, tuple] = {
    "score_on": ("test", "train", "fit"),
    "student_init": ("fresh", "teacher"),
    "pixel_scale": ("unit", "byte"),
    "leak_test": (False, True),
    "epoch_pick": ("last", "best-test"),
}
# Knobs that only mean something for a student with a teacher: a full-data student takes none of them.
TEACHER_ONLY_KNOBS = ("student_init",)
# Knobs that only change how a trained student is scored: cells equal but for these train the
# same student (a sweep trains it once and scores it for each of them; see TrialConfig.student_key).
SCORING_KNOBS = ("score_on", "epoch_pick")
# Fields that say where data is read from, not what is computed: not part of a cell's key.
LOCATION_FIELDS = ("data_root", "download")


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
    eval_sets: int = 1  # independent distilled sets, each evaluated with eval_runs models (protocols with sets)
    dm_iterations: int = 1000
    device: str = "auto"
    eval_every: int = 0  # 0: about 16 log-spaced epochs of the student are scored; N: every N epochs
    score_on: str = "test"
    student_init: str = "fresh"
    pixel_scale: str = "unit"
    leak_test: bool = False
    epoch_pick: str = "last"
    compile: bool = False
    precision: str = "fp32"
    channels_last: bool = False

    @property
    def step_size(self) -> float:
        """Eq. 2's alpha: the learning rate unless set explicitly."""
        return self.lr if self.alpha is None else self.alpha

    @property
    def distills(self) -> bool:
        """False for the `full` method: the student trains on the whole training set."""
        return METHODS[self.method].distills

    @property
    def needs_teacher(self) -> bool:
        """A teacher is trained when the images are shifted with its gradients, or when the
        student starts from it (a forensics hypothesis)."""
        return self.distills and MODIFIERS[self.modifier].needs_teacher

    @property
    def hypothesis(self) -> str:
        """'honest', or the non-default forensics knobs as `knob=value+knob=value`."""
        knobs = [f"{k}={_text(getattr(self, k))}" for k, values in FORENSICS.items() if getattr(self, k) != values[0]]
        return "+".join(knobs) or "honest"

    @property
    def is_forensics(self) -> bool:
        return self.hypothesis != "honest"

    def key(self) -> str:
        """A stable hash of every setting that changes the result (the cell's identity). Settings
        at their default value are left out, so a setting added later (at a default that keeps
        today's behaviour) leaves every existing key, and so every finished cell, as it was; a
        default is therefore never changed, a new setting is added instead. A protocol whose
        arithmetic changes bumps its registered `revision`, which then enters its cells' keys, so
        that none of them counts as finished by a run of the older arithmetic."""
        defaults = TrialConfig()
        fields = {k: v for k, v in self.to_dict().items()
                  if k not in LOCATION_FIELDS and v != getattr(defaults, k)}
        revision = PROTOCOLS[self.protocol].meta.get("revision", 0) if self.protocol in PROTOCOLS else 0
        if revision:
            fields["protocol_revision"] = revision
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def student_key(self) -> str:
        """The key of the student's training: the cell's key with SCORING_KNOBS at their honest values."""
        return self.replace(**{knob: FORENSICS[knob][0] for knob in SCORING_KNOBS}).key()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrialConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TrialConfig":
        """Raise ConfigError on the first setting that cannot work; return self otherwise."""
        DATASETS.check(dataset_kind(self.dataset))
        if is_folder(self.dataset) and not self.dataset[len(FOLDER_PREFIX):].strip():
            raise ConfigError("dataset 'folder:' needs a path, e.g. folder:/data/ocid")
        MODELS.check(self.model)
        METHODS.check(self.method)
        MODIFIERS.check(self.modifier)
        PROTOCOLS.check(self.protocol)
        _choice("backend", self.backend, BACKENDS)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        _integer("ipc", self.ipc, 1, 100_000)
        _integer("teacher-epochs", self.teacher_epochs, 1, MAX_EPOCHS)
        _integer("student-epochs", self.student_epochs, 1, MAX_EPOCHS)
        _integer("batch-size", self.batch_size, 1, 1 << 20)
        _integer("eval-runs", self.eval_runs, 1, 1000)
        _integer("eval-sets", self.eval_sets, 1, 1000)
        if self.eval_sets > 1 and not PROTOCOLS[self.protocol].sets:
            raise ConfigError(f"eval-sets {self.eval_sets}: protocol {self.protocol!r} trains one student on one set; "
                              f"several sets need a protocol that evaluates sets "
                              f"({', '.join(e.name for e in PROTOCOLS.entries() if e.sets)})")
        if self.eval_sets > 1 and not self.distills:
            raise ConfigError(f"eval-sets {self.eval_sets}: the full training set is one set; use eval-runs")
        _integer("dm-iterations", self.dm_iterations, 1, 10_000_000)
        _integer("seed", self.seed, 0, MAX_SEED)
        _integer("eval-every", self.eval_every, 0, MAX_EPOCHS)
        if self.train_limit is not None:
            _integer("train-limit", self.train_limit, 1, 1 << 31)
        if self.resize is not None:
            _integer("resize", self.resize, 8, MAX_RESIZE)
        if not (_finite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        if self.alpha is not None and not (_finite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"alpha must be a finite number >= 0, got {self.alpha}")
        for flag in ("download", "leak_test", "compile", "channels_last"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag.replace('_', '-')} must be true or false, got {getattr(self, flag)!r}")
        self._validate_forensics()
        if self.device == "cuda" or self.backend == "cuml":
            self._validate_gpu()
        return self

    def _validate_forensics(self) -> None:
        for knob, values in FORENSICS.items():
            if getattr(self, knob) not in values:
                raise ConfigError(f"unknown {knob.replace('_', '-')} {getattr(self, knob)!r}; "
                                  f"allowed: {', '.join(_text(v) for v in values)}")
        if self.is_forensics and not PROTOCOLS[self.protocol].forensics:
            raise ConfigError(f"forensics knobs ({self.hypothesis}) are readings of the paper's protocol; "
                              f"they cannot be combined with --protocol {self.protocol}")
        if self.student_init == "teacher" and not self.needs_teacher:
            raise ConfigError("student-init teacher needs a teacher of the same model: use a distilling method "
                              "with a modifier that trains one (grad-l1, grad-l1-last, input-grad)")
        if self.epoch_pick == "best-test":
            if self.score_on != "test":
                raise ConfigError("epoch-pick best-test picks the epoch by test accuracy; use it with score-on test")
            if len(eval_epochs(self.student_epochs, self.eval_every)) < 2:
                raise ConfigError(f"epoch-pick best-test needs at least 2 scored epochs to pick from; "
                                  f"{self.student_epochs} student epoch(s) with eval-every {self.eval_every} give "
                                  f"{len(eval_epochs(self.student_epochs, self.eval_every))}")

    def _validate_gpu(self) -> None:
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

    def check_data(self, classes: Sequence[str], class_counts: Sequence[int]) -> None:
        """Checks that need the training split's classes (after --train-limit)."""
        if len(classes) < 2:
            raise ConfigError(f"a dataset needs at least 2 classes, found {len(classes)}")
        smallest = min(class_counts)
        if self.distills and self.ipc > smallest:
            name = classes[list(class_counts).index(smallest)]
            raise ConfigError(
                f"ipc {self.ipc} is larger than the smallest class ({name!r}: {smallest} training images); "
                f"allowed: 1..{smallest}"
            )
        if self.positive_class is not None and self.positive_class not in classes:
            raise ConfigError(
                f"positive class {self.positive_class!r} is not a class of this dataset; allowed: {', '.join(classes)}"
            )


def eval_epochs(epochs: int, every: int, points: int = 16) -> list[int]:
    """The student epochs at which curves are scored: every `every` epochs, or about `points`
    log-spaced ones when `every` is 0; the last epoch always."""
    if every > 0:
        chosen = set(range(every, epochs + 1, every))
    else:
        chosen = {max(1, round(epochs ** (i / (points - 1)))) for i in range(points)}
    return sorted(chosen | {epochs})


def is_folder(dataset: str) -> bool:
    return dataset.startswith(FOLDER_PREFIX)


def dataset_kind(dataset: str) -> str:
    """The registry name of a dataset: itself, or 'folder:PATH' for any class-per-folder set."""
    return f"{FOLDER_PREFIX}PATH" if is_folder(dataset) else dataset


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def _integer(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ConfigError(f"{name} must be {what}, got {value!r}; allowed: {low}..{high}")
