"""How a distilled (or full) training set is scored: the registered evaluation protocols.

`paper` (the default): one fresh model of the trial's architecture, Adam lr 1e-3, batch 32,
`student_epochs`, one seeded initialisation, scored once on the test split after its last epoch.
Only this protocol takes the forensics knobs (each a hypothesis about how the paper may have been
evaluated; see TrialConfig): `score_on` (test | train | fit), `student_init` (fresh | teacher)
and `epoch_pick` (last | best-test).

`dc` (the field's tables, DC/DSA/DM/MTT), as the DC reference code evaluates a set
(raydistill.dc): ConvNet-3 trained from scratch with SGD (lr 0.01, momentum 0.9, weight decay
5e-4, batch 256) for `student_epochs` + 1 passes (the reference's `range(Epoch+1)`; it uses 300,
and 1000 on MNIST, where it augments with crop/scale/rotate), the lr multiplied by 0.1 after pass
index `Epoch//2 + 1` with a fresh optimiser, the reference's normalisation constants; `eval_runs`
seeded initialisations, each tested once after its last pass. With `eval_sets` > 1 the pipeline
draws that many sets and evaluates each (the reference's 5 experiments x 20 models).

The paper protocol scores accuracy curves on the way (test split and the set trained on, at the
epochs `config.eval_epochs` names) without changing the training itself; `dc` keeps the training
curves and tests once at the end, as the reference. The paper protocol's
long students (hundreds of epochs on a whole training set) are checkpointed at least every
CHECKPOINT_SECONDS and continue from a checkpoint of the same set with the uninterrupted result.
With `keep_final`, a student is also checkpointed after its last epoch: a cell that differs only in
how it is scored (config.SCORING_KNOBS) continues from that checkpoint, i.e. trains no epoch and
only scores the student. A `dc` model keeps its state (passes, weights, SGD's state, the
augmentation's generator) at least every CHECKPOINT_SECONDS too, and continues from it with the
uninterrupted result: a model of an hour or more need not finish within one run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from raydistill import dc, models
from raydistill.config import TrialConfig, eval_epochs
from raydistill.data import Dataset, DeviceData
from raydistill.metrics import classification_metrics
from raydistill.registry import PROTOCOLS
from raydistill.train import CHECKPOINT_SECONDS, SpeedOptions, fit, predict_proba, to_cpu

STUDENT_SEED_OFFSET = 1_000_003  # the student's init and batch order differ from the teacher's
AVERAGED = ("accuracy", "sensitivity", "specificity", "auc", "per_class_sensitivity", "per_class_specificity")

# progress(phase, epoch, total epochs, values): live per-epoch figures for Tune, MLflow or a bar
Progress = Callable[[str, int, int, dict[str, float]], None]


@dataclass
class Evaluation:
    metrics: dict
    proba: np.ndarray  # class probabilities on the scored split (for the ROC figure)
    y_true: np.ndarray  # labels of the scored split
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name -> [(epoch, value)]
    resumed_epoch: int = 0  # the epoch of the checkpoint training continued from (0: from scratch)
    earlier_seconds: float = 0.0  # student time of the attempts before that checkpoint
    runs: list[dict] = field(default_factory=list)  # each evaluation model's metrics (protocols with several)


@dataclass
class StudentCheckpoint:
    """Everything needed to continue a student's training exactly where it stopped, or, taken
    after its last epoch, to score the trained student another way."""

    epoch: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict
    scorer_state: dict  # the curves so far and the scored test probabilities (Scorer.state)
    seconds: float  # student time up to this epoch, over every attempt
    fingerprint: str  # of the set trained on: a checkpoint is only continued on the same set
    final: bool = False  # taken after the student's last epoch


def fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in (images, labels):
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


@dataclass
class StudentData:
    """What a protocol trains on and scores with: the (distilled) set and the dataset's splits."""

    images: torch.Tensor
    labels: torch.Tensor
    tensors: DeviceData
    positive: int
    teacher_state: dict[str, torch.Tensor] | None = None  # the teacher's weights (student_init=teacher)
    resume: StudentCheckpoint | None = None  # an earlier attempt's checkpoint, continued when it fits
    on_checkpoint: Callable[[StudentCheckpoint], None] | None = None  # keeps a checkpoint somewhere
    keep_final: bool = False  # also a checkpoint after the last epoch (for cells scored another way)
    models_done: list[dict] = field(default_factory=list)  # dc: this set's models an earlier attempt finished
    on_model: Callable[[dict], None] | None = None  # dc: keeps each model's record as soon as it is finished
    model_partial: dict | None = None  # dc: the next model's state where an earlier attempt stopped (PassCheckpointer)
    on_partial: Callable[[dict], None] | None = None  # dc: keeps the model in training's state now and then


def speed_options(cfg: TrialConfig) -> SpeedOptions:
    return SpeedOptions(cfg.compile, cfg.precision, cfg.channels_last)


class Scorer:
    """An epoch callback that scores the model at the chosen epochs on the test split and on the
    set it trains on, keeps the curves, and remembers the best test epoch (epoch_pick=best-test)."""

    def __init__(self, cfg: TrialConfig, student: StudentData, epochs: int, phase: str, progress: Progress | None,
                 at: Collection[int] | None = None):
        self.cfg, self.student, self.epochs, self.phase, self.progress = cfg, student, epochs, phase, progress
        self.at = set(eval_epochs(epochs, cfg.eval_every) if at is None else at)
        self.curves: dict[str, list[tuple[int, float]]] = {"test_accuracy": [], "fit_accuracy": [], "train_loss": [],
                                                           "train_accuracy": []}
        self.best: tuple[float, np.ndarray] | None = None
        self.last_test: np.ndarray | None = None

    def __call__(self, epoch: int, model: nn.Module, stats) -> None:
        values = {"train_loss": stats.loss, "train_accuracy": stats.accuracy}
        if epoch in self.at:
            s = self.student
            speed = speed_options(self.cfg)
            test = predict_proba(model, s.tensors.x_test, speed=speed).numpy()
            values["test_accuracy"] = float((test.argmax(1) == s.tensors.y_test.cpu().numpy()).mean())
            values["fit_accuracy"] = float((predict_proba(model, s.images, speed=speed).argmax(1) == s.labels.cpu())
                                           .float().mean())
            self.last_test = test
            if self.best is None or values["test_accuracy"] > self.best[0]:
                self.best = (values["test_accuracy"], test)
        for name, value in values.items():
            self.curves[name].append((epoch, value))
        if self.progress is not None:
            self.progress(self.phase, epoch, self.epochs, values)

    def state(self) -> dict:
        """What a checkpoint needs to continue scoring (probabilities as tensors: torch.load's safe mode)."""
        return {"curves": {k: list(v) for k, v in self.curves.items()},
                "best": None if self.best is None else (self.best[0], torch.from_numpy(self.best[1])),
                "last_test": None if self.last_test is None else torch.from_numpy(self.last_test)}

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint's state; `progress` sees its epochs again (a new run's history)."""
        self.curves = {k: [tuple(point) for point in v] for k, v in state["curves"].items()}
        self.best = None if state["best"] is None else (state["best"][0], state["best"][1].numpy())
        self.last_test = None if state["last_test"] is None else state["last_test"].numpy()
        if self.progress is not None:
            by_epoch: dict[int, dict[str, float]] = {}
            for name, points in self.curves.items():
                for epoch, value in points:
                    by_epoch.setdefault(epoch, {})[name] = value
            for epoch in sorted(by_epoch):
                self.progress(self.phase, epoch, self.epochs, by_epoch[epoch])

    def evaluation(self, model: nn.Module) -> Evaluation:
        """Metrics of the trained model on the split `score_on` names, at the epoch `epoch_pick` names."""
        s, cfg = self.student, self.cfg
        if cfg.epoch_pick == "best-test":
            proba, labels = self.best[1], s.tensors.y_test
        elif cfg.score_on == "test":
            proba, labels = self.last_test, s.tensors.y_test
        else:
            x, labels = (s.tensors.x_train, s.tensors.y_train) if cfg.score_on == "train" else (s.images, s.labels)
            proba = predict_proba(model, x, speed=speed_options(cfg)).numpy()
        y_true = labels.cpu().numpy()
        return Evaluation(classification_metrics(y_true, proba, s.positive), proba, y_true, self.curves)


def build_student(cfg: TrialConfig, data: Dataset, name: str, seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    normalize = cfg.pixel_scale == "unit"
    return models.build(name, data.shape, data.num_classes, data.mean, data.std, normalize=normalize).to(device)


class Checkpointer:
    """An epoch callback: the scorer's, then a StudentCheckpoint to `student.on_checkpoint` at least
    every CHECKPOINT_SECONDS; after the last epoch only with `student.keep_final` (otherwise the
    result follows at once)."""

    def __init__(self, scorer: Scorer, student: StudentData, optimizer: torch.optim.Optimizer, earlier_seconds: float):
        self.scorer, self.student, self.optimizer, self.earlier = scorer, student, optimizer, earlier_seconds
        self.start = self.saved = time.perf_counter()
        self.fingerprint = fingerprint(student.images, student.labels) if student.on_checkpoint else ""

    def __call__(self, epoch: int, model: nn.Module, stats) -> None:
        self.scorer(epoch, model, stats)
        now = time.perf_counter()
        due = self.student.keep_final if epoch == self.scorer.epochs else now - self.saved >= CHECKPOINT_SECONDS
        if self.student.on_checkpoint is None or not due:
            return
        final = epoch == self.scorer.epochs  # nothing trains on from it: no optimizer state
        self.student.on_checkpoint(StudentCheckpoint(
            epoch, to_cpu(model.state_dict()), {} if final else to_cpu(self.optimizer.state_dict()),
            self.scorer.state(), self.earlier + now - self.start, self.fingerprint, final))
        self.saved = time.perf_counter()


def usable(resume: StudentCheckpoint | None, student: StudentData, epochs: int) -> StudentCheckpoint | None:
    """`resume` if it was taken on this very set before the last epoch, or after the last epoch of
    a student of as many epochs; else None (start over)."""
    if resume is None or resume.fingerprint != fingerprint(student.images, student.labels):
        return None
    if resume.final:  # a trained student, only scored again
        return resume if resume.epoch == epochs else None
    return resume if resume.epoch < epochs else None


def evaluate_paper(cfg: TrialConfig, data: Dataset, student: StudentData, progress: Progress | None = None) -> Evaluation:
    """The paper's protocol: a fresh model (or the teacher, under student_init=teacher) of the
    trial's architecture trained with Adam on the set, then scored; continued from
    `student.resume` when that checkpoint was taken on the same set (after the last epoch: only
    scored)."""
    seed = cfg.seed + STUDENT_SEED_OFFSET
    model = build_student(cfg, data, cfg.model, seed, student.images.device)
    if cfg.student_init == "teacher":
        model.load_state_dict(student.teacher_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scorer = Scorer(cfg, student, cfg.student_epochs, "student", progress)
    resume = usable(student.resume, student, cfg.student_epochs)
    if resume is not None:
        model.load_state_dict(resume.model_state)
        if not resume.final:
            optimizer.load_state_dict(resume.optimizer_state)
        scorer.restore(resume.scorer_state)
        if student.on_checkpoint is not None and not resume.final:  # a final one stays with the cell that trained it
            student.on_checkpoint(resume)  # kept again at once: the attempt it came from may be dropped
    earlier = resume.seconds if resume else 0.0
    fit(model, student.images, student.labels, cfg.student_epochs, batch_size=cfg.batch_size, seed=seed,
        optimizer=optimizer, start_epoch=resume.epoch if resume else 0,
        on_epoch=Checkpointer(scorer, student, optimizer, earlier), speed=speed_options(cfg))
    evaluation = scorer.evaluation(model)
    evaluation.resumed_epoch, evaluation.earlier_seconds = (resume.epoch, earlier) if resume else (0, 0.0)
    return evaluation


def run_seeds(seed: int, runs: int) -> list[int]:
    """One seed per evaluation run, distinct across trial seeds (unlike seed + run)."""
    return [int(np.random.SeedSequence([STUDENT_SEED_OFFSET, seed, run]).generate_state(1)[0]) for run in range(runs)]


class PassCheckpointer:
    """A dc model's epoch callback: the scorer's (if any), then the model's state in training to
    `keep` at least every CHECKPOINT_SECONDS (none after the last pass: the model's record follows).
    The state is what train_convnet needs to continue with the uninterrupted result: passes done,
    weights, SGD's state (lr and momentum) and the augmentation's random generator; the batch
    orders are replayed from the seed."""

    def __init__(self, scorer: Scorer | None, keep: Callable[[dict], None], optimizer: torch.optim.Optimizer,
                 augment: dc.Augment | None, passes: int):
        self.scorer, self.keep, self.optimizer, self.augment, self.passes = scorer, keep, optimizer, augment, passes
        self.saved = time.perf_counter()

    def __call__(self, epoch: int, model: nn.Module, stats) -> None:
        if self.scorer is not None:
            self.scorer(epoch, model, stats)
        if epoch == self.passes or time.perf_counter() - self.saved < CHECKPOINT_SECONDS:
            return
        self.keep({"passes": epoch, "model": to_cpu(model.state_dict()),
                   "optimizer": to_cpu(self.optimizer.state_dict()),
                   "augment": None if self.augment is None else self.augment.rng.bit_generator.state,
                   "scorer": None if self.scorer is None else self.scorer.state()})
        self.saved = time.perf_counter()


def train_convnet(data: Dataset, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
                  on_epoch: Scorer | None = None, resume: dict | None = None,
                  keep: Callable[[dict], None] | None = None) -> nn.Module:
    """A fresh ConvNet-3 (init, batch order and augmentation from `seed`) trained on (x, y) as the
    DC reference does (raydistill.dc): Epoch + 1 passes, the lr drop with a fresh optimiser, the
    reference's normalisation and, on MNIST, its augmentation. It continues from `resume` (a state
    PassCheckpointer kept of the same model) and gives such states to `keep` while it trains."""
    mean, std = dc.normalisation(data.name, data.mean, data.std)
    model = dc.build(data.shape, data.num_classes, mean, std, seed, x.device)
    optimizer, schedule = dc.optimizer(model, epochs)
    augment = dc.augmentation(data.name, mean, std, seed)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if augment is not None:
            augment.rng.bit_generator.state = resume["augment"]
        schedule.resume(resume["passes"])
    if keep is not None:
        on_epoch = PassCheckpointer(on_epoch, keep, optimizer, augment, epochs + 1)
    return fit(model, x, y, epochs + 1, batch_size=dc.BATCH_SIZE, seed=seed, optimizer=optimizer, scheduler=schedule,
               on_epoch=on_epoch, transform=augment, start_epoch=resume["passes"] if resume is not None else 0)


def evaluate_dc(cfg: TrialConfig, data: Dataset, student: StudentData, progress: Progress | None = None) -> Evaluation:
    """Metrics over cfg.eval_runs ConvNet-3s trained on the set, each tested once after its last
    pass (as the reference; no test curves, which would cost a test pass each); the first run's
    test probabilities and training curves come along (for the figures). Models in
    `student.models_done` are taken as they are; each new one goes to `student.on_model` at once,
    and the first to train continues from `student.model_partial` when an earlier attempt kept one."""
    y_test = student.tensors.y_test.cpu().numpy()
    runs, first = [], None
    for i, seed in enumerate(run_seeds(cfg.seed, cfg.eval_runs)):
        if i < len(student.models_done):
            record = student.models_done[i]
        else:
            partial = student.model_partial if i == len(student.models_done) else None
            record = dc_model(cfg, data, student, seed, progress if i == 0 else None, keep_outputs=i == 0,
                              partial=partial)
            if student.on_model is not None:
                student.on_model(record)
        runs.append(record["metrics"])
        first = first or (record["proba"].numpy(), record["curves"])
    return Evaluation(summarise(runs), first[0], y_test, first[1], runs=runs,
                      resumed_epoch=min(len(student.models_done), cfg.eval_runs))


def dc_model(cfg: TrialConfig, data: Dataset, student: StudentData, seed: int, progress: Progress | None,
             keep_outputs: bool, partial: dict | None = None) -> dict:
    """One evaluation model: its metrics, and with `keep_outputs` its test probabilities and
    training curves (tensors and plain types: a checkpoint loads it with torch.load's safe mode).
    It continues from `partial` (its state mid-training) and keeps such states with `student.on_partial`."""
    passes = cfg.student_epochs + 1
    scorer = Scorer(cfg, student, passes, "student", progress, at={passes}) if keep_outputs else None
    if scorer is not None and partial is not None:
        scorer.restore(partial["scorer"])
    model = train_convnet(data, student.images, student.labels, cfg.student_epochs, seed, on_epoch=scorer,
                          resume=partial, keep=student.on_partial)
    proba = scorer.last_test if scorer is not None else predict_proba(model, student.tensors.x_test).numpy()
    record = {"metrics": classification_metrics(student.tensors.y_test.cpu().numpy(), proba, student.positive)}
    if keep_outputs:
        record |= {"proba": torch.from_numpy(proba), "curves": scorer.curves}
    return record


def combine(evaluations: list[Evaluation]) -> Evaluation:
    """One evaluation of several sets: metrics over every model of every set; the first set's
    probabilities and curves (the pipeline's ModelLog sets the resume facts of the whole trial)."""
    if len(evaluations) == 1:
        return evaluations[0]
    first = evaluations[0]
    runs = [run for evaluation in evaluations for run in evaluation.runs]
    return Evaluation(summarise(runs), first.proba, first.y_true, first.curves, runs=runs)


def summarise(runs: list[dict]) -> dict:
    """Means over runs of the scalar and per-class metrics, the spread of the accuracy, and the
    first run's confusion matrix (it matches the probabilities returned for the figures)."""
    out = dict(runs[0])
    for key in AVERAGED:
        mean = np.mean([r[key] for r in runs], axis=0)
        out[key] = mean.tolist() if mean.ndim else float(mean)
    accuracies = [r["accuracy"] for r in runs]
    out["accuracy_std"] = float(np.std(accuracies, ddof=1)) if len(runs) > 1 else 0.0
    out["accuracy_runs"] = accuracies
    return out


# revision: bumped when a protocol's arithmetic changes (it enters the cells' keys; 0 leaves them out)
PROTOCOLS.add("paper", "the paper's: a fresh model of --model, Adam lr 1e-3, batch 32, --student-epochs, one init; "
              "takes the forensics knobs", evaluate_paper, forensics=True, sets=False, revision=0)
PROTOCOLS.add("dc", "the field's, as the DC reference code: ConvNet-3, SGD 0.01 momentum 0.9 wd 5e-4, batch 256, "
              "epochs+1 passes, lr x0.1 halfway, MNIST augmented; --eval-sets x --eval-runs models", evaluate_dc,
              forensics=False, sets=True, revision=0)
