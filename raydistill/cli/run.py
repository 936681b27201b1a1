"""`raydistill run`: one trial from the command line; prints the result as JSON, writes --out."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from raydistill.config import BACKENDS, DEVICES, PRECISIONS, ConfigError, TrialConfig
from raydistill.registry import DATASETS, METHODS, MODELS, MODIFIERS, PROTOCOLS, Registry

DEFAULTS = TrialConfig()
OWNED = ("result.json", "distilled.pt", "distilled.png", "confusion.png", "roc.png")


def choices(registry: Registry) -> str:
    return "; ".join(f"{e.name} = {e.description}" for e in registry.entries())


def add_trial_arguments(p: argparse.ArgumentParser) -> None:
    """Every TrialConfig setting as an option (shared by `run`; sweeps take them as fixed settings)."""
    a = p.add_argument
    a("--dataset", default=DEFAULTS.dataset, help=choices(DATASETS))
    a("--model", default=DEFAULTS.model, help=f"teacher and student: {choices(MODELS)}")
    a("--method", default=DEFAULTS.method, help=f"how each class becomes ipc images: {choices(METHODS)}")
    a("--modifier", default=DEFAULTS.modifier, help=f"the shift before selection (Eq. 2): {choices(MODIFIERS)}")
    a("--ipc", type=int, default=DEFAULTS.ipc, help="distilled images per class (K-means k)")
    a("--teacher-epochs", type=int, default=DEFAULTS.teacher_epochs, help="teacher epochs on the full training set")
    a("--student-epochs", type=int, default=DEFAULTS.student_epochs, help="epochs of the classifier on the distilled set")
    a("--protocol", default=DEFAULTS.protocol, help=f"how the distilled set is scored: {choices(PROTOCOLS)}")
    a("--eval-runs", type=int, default=DEFAULTS.eval_runs, help="fresh initialisations per distilled set (dc protocol)")
    a("--eval-sets", type=int, default=DEFAULTS.eval_sets, help="independent distilled sets, each evaluated with "
      "--eval-runs models (dc protocol; the reference uses 5 x 20)")
    a("--dm-iterations", type=int, default=DEFAULTS.dm_iterations, help="DM's SGD steps per class (reference: 20000)")
    a("--backend", default=DEFAULTS.backend, help=f"K-means ({', '.join(BACKENDS)}): auto (cuML on a GPU when installed, "
      "else scikit-learn), sklearn, cuml")
    a("--seed", type=int, default=DEFAULTS.seed, help="seed of inits, batch order, subsets and K-means (0..2^32-1)")
    a("--data-root", default=DEFAULTS.data_root, help="folder holding the torchvision files (e.g. ROOT/FashionMNIST/raw)")
    a("--download", action="store_true", help="let torchvision download missing files (needs internet)")
    a("--train-limit", type=int, default=None, help="stratified, seeded subset of N training images (test stays whole)")
    a("--resize", type=int, default=None, help="resize images to N x N pixels when loading (8..2048)")
    a("--batch-size", type=int, default=DEFAULTS.batch_size, help="mini-batch size of teacher and student")
    a("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate of teacher and student")
    a("--alpha", type=float, default=None, help="step size of the shift (Eq. 2); default: the learning rate")
    a("--positive-class", default=None, help="class reported as positive with 2 classes (default: the second)")
    a("--device", default=DEFAULTS.device, help=f"{', '.join(DEVICES)}: auto = CUDA when visible")
    a("--eval-every", type=int, default=DEFAULTS.eval_every, help="score the student every N epochs for the curves "
      "(0: about 16 log-spaced epochs)")
    g = p.add_argument_group("forensics (hypotheses about the paper's evaluation; runs with any of them are tagged "
                             "raydistill.forensics=true and never enter the honest tables)")
    g.add_argument("--score-on", default=DEFAULTS.score_on, help="test (honest) | train (the training split) | fit "
                   "(the set the student trained on)")
    g.add_argument("--student-init", default=DEFAULTS.student_init, help="fresh (honest) | teacher (the student "
                   "starts from the teacher's weights)")
    g.add_argument("--pixel-scale", default=DEFAULTS.pixel_scale, help="unit (honest: [0, 1], normalised by the model) "
                   "| byte (raw 0-255 values everywhere, no normalisation)")
    g.add_argument("--leak-test", action="store_true", help="the test split joins the teacher's training set and the "
                   "selection pool")
    g.add_argument("--epoch-pick", default=DEFAULTS.epoch_pick, help="last (honest) | best-test (report the best "
                   "test accuracy over the scored epochs)")
    s = p.add_argument_group("speed (off by default where they change the arithmetic)")
    s.add_argument("--compile", action="store_true", help="training steps and evaluation through torch.compile "
                   "(CUDA graphs on CUDA)")
    s.add_argument("--precision", default=DEFAULTS.precision, help=f"{', '.join(PRECISIONS)}: fp32 (the paper's), tf32 "
                   "(CUDA matmuls), bf16 (autocast)")
    s.add_argument("--channels-last", action="store_true", help="NHWC memory format for convolutions")


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    fields = {f: getattr(args, f) for f in TrialConfig.__dataclass_fields__ if hasattr(args, f)}
    fields["data_root"] = str(Path(args.data_root).expanduser().resolve())
    return TrialConfig(**fields)


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run one distillation trial and print its result as JSON",
                       description="Run one trial: teacher, gradient shift, per-class selection, student, metrics. "
                       "Prints the result as JSON; --out also gets the distilled set and figures.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_trial_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="folder for result.json, distilled.pt and the figures "
                   "(files of an earlier run there are replaced)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens to stderr")
    p.set_defaults(handler=handle)


def check_out(out: Path) -> None:
    """--out is, or can become, a folder we can write to, checked before any compute by creating
    and removing a file in its nearest existing folder: permission bits alone cannot tell (root
    ignores them; read-only and virtual file systems refuse anyway)."""
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a folder")
        target = next(p for p in (out, *out.absolute().parents) if p.exists())
        if not target.is_dir():
            raise ConfigError(f"--out {out} cannot be written ({target} is a file, not a folder)")
        probe = target / f".raydistill-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"--out {out} cannot be written ({err.strerror or err})") from None


class Bars:
    """One progress line per phase on stderr, redrawn in place; silent when stderr is not a terminal."""

    def __init__(self) -> None:
        self.active = sys.stderr.isatty()
        self.phase = None
        self.last = 0.0

    def __call__(self, phase: str, epoch: int, epochs: int, values: dict[str, float]) -> None:
        if not self.active or (time.monotonic() - self.last < 0.2 and epoch != epochs and phase == self.phase):
            return
        if phase != self.phase and self.phase is not None:
            sys.stderr.write("\n")
        self.phase, self.last = phase, time.monotonic()
        filled = int(30 * epoch / epochs)
        figures = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
        sys.stderr.write(f"\r{phase:8s} {epoch:>5}/{epochs} [{'#' * filled}{'.' * (30 - filled)}] {figures}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.active and self.phase is not None:
            sys.stderr.write("\n")


def handle(args: argparse.Namespace) -> int:
    cfg = config_from_args(args).validate()
    if args.out is not None:
        check_out(args.out)
    from raydistill import artifacts
    from raydistill.pipeline import positive_index, run_trial

    bars = Bars()
    try:
        result = run_trial(cfg, progress=bars)
    finally:
        bars.close()
    summary = result.summary()
    print(json.dumps(summary, indent=2), flush=True)  # printed first: a failed write loses nothing
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            for name in OWNED:
                (args.out / name).unlink(missing_ok=True)
            files = artifacts.write_all(result, args.out, positive_index(cfg, result.classes))
        except OSError as err:
            print(f"raydistill: error: could not write --out {args.out} ({err}); the result is printed above",
                  file=sys.stderr)
            return 1
        print(f"files: {', '.join(str(p) for p in files.values())}", file=sys.stderr)
    return 0
