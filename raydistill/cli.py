"""`raydistill run ...`: one trial from the command line; prints the result as JSON."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from raydistill import config as C
from raydistill.config import ConfigError, TrialConfig

DEFAULTS = TrialConfig()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raydistill", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one distillation trial and print its result as JSON",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = run.add_argument
    a("--dataset", default=DEFAULTS.dataset, help=f"one of {', '.join(C.DATASETS)}, or folder:PATH for a class-per-folder "
      "set with PATH/train/<class>/* and PATH/test/<class>/* (e.g. OCID)")
    a("--model", default=DEFAULTS.model, help=f"classifier for teacher and student: {', '.join(C.MODELS)}")
    a("--method", default=DEFAULTS.method, help=f"how each class becomes ipc images: {', '.join(C.METHODS)} "
      "(kmeans = the paper; full = train on the whole training set)")
    a("--modifier", default=DEFAULTS.modifier, help="gradient shift before selection (Eq. 2): grad-l1 = per-image L1 norm "
      "of the weight gradient; grad-l1-last = the last training step's norm for all images; input-grad = pixel-wise "
      "|dL/dx|; none = no shift")
    a("--ipc", type=int, default=DEFAULTS.ipc, help="distilled images per class (K-means k)")
    a("--teacher-epochs", type=int, default=DEFAULTS.teacher_epochs, help="epochs of the teacher on the full training set")
    a("--student-epochs", type=int, default=DEFAULTS.student_epochs, help="epochs of the fresh classifier on the distilled set")
    a("--protocol", default=DEFAULTS.protocol, help=f"evaluation protocol: {', '.join(C.PROTOCOLS)} (paper = trial's model, "
      "Adam 1e-3, batch 32; dc = the field's ConvNet-3, SGD, several inits)")
    a("--eval-runs", type=int, default=DEFAULTS.eval_runs, help="fresh initialisations per distilled set (dc protocol)")
    a("--dm-iterations", type=int, default=DEFAULTS.dm_iterations, help="SGD steps on the synthetic images per class "
      "(method dm; the reference code uses 20000)")
    a("--backend", default=DEFAULTS.backend, help="K-means backend: auto (cuML on a GPU if installed, else scikit-learn), sklearn, cuml")
    a("--seed", type=int, default=DEFAULTS.seed, help="seed for inits, batch order, subsets and K-means")
    a("--data-root", default=DEFAULTS.data_root, help="folder holding the torchvision dataset files (e.g. ROOT/FashionMNIST/raw)")
    a("--download", action="store_true", help="let torchvision download missing files (needs internet)")
    a("--train-limit", type=int, default=None, help="stratified, seeded subset of N training images (test split stays whole)")
    a("--resize", type=int, default=None, help="resize images to N x N pixels when loading")
    a("--batch-size", type=int, default=DEFAULTS.batch_size, help="mini-batch size of teacher and student")
    a("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate of teacher and student")
    a("--alpha", type=float, default=None, help="step size of the gradient shift (Eq. 2); default: the learning rate")
    a("--positive-class", default=None, help="class reported as positive for sensitivity/specificity with 2 classes "
      "(default: the second class in sorted order)")
    a("--device", default=DEFAULTS.device, help="auto (CUDA when visible), cpu or cuda")
    a("--out", type=Path, default=None, help="folder for result.json, distilled.pt and figures")
    a("-v", "--verbose", action="store_true", help="log progress to stderr")
    return p


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    fields = {f: getattr(args, f) for f in TrialConfig.__dataclass_fields__ if hasattr(args, f)}
    fields["data_root"] = str(Path(args.data_root).expanduser().resolve())
    return TrialConfig(**fields)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args).validate()
        from raydistill import artifacts
        from raydistill.pipeline import positive_index, run_trial

        result = run_trial(cfg)
    except ConfigError as err:
        print(f"raydistill: error: {err}", file=sys.stderr)
        return 2
    summary = result.summary()
    if args.out is not None:
        files = artifacts.write_all(result, args.out, positive_index(cfg, result.classes))
        summary["files"] = {k: str(v) for k, v in files.items()}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
