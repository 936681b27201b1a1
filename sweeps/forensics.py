"""Forensics: the paper's Fashion-MNIST (and, at the paper's settings, MNIST) cells (Tables 1-3)
under each hypothesis about how it could have been evaluated, one at a time and in plausible
pairs, beside the honest protocol.

    python sweeps/forensics.py --smoke --data-root DIR            # minutes on 2 CPU cores
    python sweeps/forensics.py --cpu-hour --data-root DIR         # under an hour on 2 CPU cores
    python sweeps/forensics.py --paper-settings --data-root DIR   # the paper's 10-600 epochs, MNIST and
                                                                  # Fashion-MNIST, seeds 1-2 on the key cells
    python sweeps/forensics.py --data-root DIR                    # every model at the paper's settings (GPU)

Every non-honest run is a hypothesis, tagged raydistill.forensics=true; it never enters the honest
tables. The knobs are literal readings fixed before any run (raydistill.config.FORENSICS); nothing
here is tuned toward the paper's numbers. The verdict table (analysis/verdict.py) is written with
the other tables at the end.
"""

from raydistill.config import TEACHER_ONLY_KNOBS
from raydistill.tune.grid import Grid

NAME = "forensics"
# One knob at a time, then pairs that a Keras script could plausibly combine: the teacher's own
# weights scored on data it has seen; the test split leaked and used to pick the epoch; raw bytes
# with the epoch picked on test.
SINGLE = [{"score_on": "train"}, {"score_on": "fit"}, {"student_init": "teacher"}, {"epoch_pick": "best-test"},
          {"pixel_scale": "byte"}, {"leak_test": True}]
PAIRS = [{"student_init": "teacher", "score_on": "train"}, {"leak_test": True, "epoch_pick": "best-test"},
         {"pixel_scale": "byte", "epoch_pick": "best-test"}]
OWN_TEACHER = ("pixel_scale", "leak_test")  # these change the teacher, so they train teachers of their own


def needs_own_teacher(hypothesis: dict) -> bool:
    return any(knob in OWN_TEACHER for knob in hypothesis)


def cells(models: list[str], epochs: list[int], ipcs: list[int], table3: list[int], fixed: dict,
          datasets: tuple[str, ...] = ("fashion-mnist",)) -> list[dict]:
    """The honest parts of Tables 1-3 for each dataset (every model: Tables 1-2; the Baseline: Table 3)."""
    distilled = [{"model": [m], "epochs": epochs, "ipc": ipcs, **fixed.get(m, {})} for m in models]
    if table3 and "baseline" in models:
        base = fixed.get("baseline", {})
        distilled += [{"model": ["baseline"], "epochs": table3, "ipc": [10], **base},
                      {"model": ["baseline"], "epochs": table3 + epochs[:1], "method": ["full"], **base}]
    return [{"dataset": [dataset], **part} for dataset in datasets for part in distilled]


def with_hypotheses(parts: list[dict], hypotheses: list[dict]) -> list[dict]:
    """The honest parts, then each hypothesis applied to all of them (full-data cells only under the
    knobs that mean something without a teacher)."""
    out = list(parts)
    for hypothesis in hypotheses:
        for part in parts:
            if part.get("method") == ["full"] and any(knob in TEACHER_ONLY_KNOBS for knob in hypothesis):
                continue  # a full-data student has no teacher to start from
            out.append({**part, **{k: [v] for k, v in hypothesis.items()}})
    return out


def smoke() -> Grid:
    parts = cells(["baseline"], [3], [1, 10], [2], {"baseline": {"train_limit": [2000]}})
    return Grid("forensics-smoke", with_hypotheses(parts, SINGLE + PAIRS))


def cpu_hour() -> Grid:
    parts = cells(["baseline"], [20], [10, 50], [10], {"baseline": {"train_limit": [10_000]}})
    return Grid("forensics-cpu-hour", with_hypotheses(parts, SINGLE + PAIRS))


PAPER_DATASETS = ("mnist", "fashion-mnist")
PAPER_FIXED = {"lenet": {}, "baseline": {"train_limit": [10_000]}}  # the Baseline on a stratified 10,000
EXTRA_SEEDS = [1, 2]


def unshifted(models: tuple[str, ...], datasets: tuple[str, ...], seeds: list[int] | None = None) -> list[dict]:
    """What the shift adds: plain K-means and random real images, honest, at 200 epochs (no teacher)."""
    seed = {"seed": seeds} if seeds else {}
    return [{"dataset": [d], "model": [m], "epochs": [200], "ipc": [10, 50], "method": [method], "modifier": ["none"],
             **PAPER_FIXED[m], **seed} for d in datasets for m in models for method in ("kmeans", "random")]


def seed_cells(datasets: tuple[str, ...]) -> list[dict]:
    """Issue 21's error bars: the cells that carry the claims, at seeds 1 and 2 (seed 0 is the main
    grid): LeNet at 200 and 600 epochs, the Baseline at 200, plain K-means and random at 200."""
    seeds = {"seed": EXTRA_SEEDS}
    shifted = [{"dataset": [d], "model": ["lenet"], "epochs": [200, 600], "ipc": [10, 50], **seeds} for d in datasets]
    shifted += [{"dataset": [d], "model": ["baseline"], "epochs": [200], "ipc": [10, 50], **PAPER_FIXED["baseline"],
                 **seeds} for d in datasets]
    return shifted + unshifted(("lenet", "baseline"), datasets, EXTRA_SEEDS)


def paper_settings(own_teachers: bool) -> Grid:
    """Issues 15 and 21: MNIST and Fashion-MNIST at the paper's epochs, LeNet on the full training
    split and the Baseline on a stratified 10,000 (seeded), teachers trained once to 600 epochs;
    plain K-means and random beside the shifted K-means; seeds 1 and 2 on the key cells; then the
    hypotheses that share the honest teachers (those with teachers of their own only at 200 epochs,
    and only when asked for). The runner's priorities run seed 0's honest cells first, then the
    seeds, then the hypotheses, so a sweep stopped at any point has complete rows."""
    parts = cells(["lenet", "baseline"], [200, 300, 400, 500, 600], [10, 50], [10, 20], PAPER_FIXED, PAPER_DATASETS)
    shared = [h for h in SINGLE + PAIRS if not needs_own_teacher(h)]
    grid = (parts + unshifted(("lenet", "baseline"), PAPER_DATASETS) + seed_cells(PAPER_DATASETS)
            + with_hypotheses(parts, shared)[len(parts):])
    if own_teachers:
        at_200 = cells(["lenet", "baseline"], [200], [10, 50], [], PAPER_FIXED, PAPER_DATASETS)
        grid += with_hypotheses(at_200, [h for h in SINGLE + PAIRS if needs_own_teacher(h)])[len(at_200):]
    return Grid("paper-settings", grid)


def full() -> Grid:
    parts = cells(["baseline", "resnet34", "lenet"], [200, 300, 400, 500, 600], [10, 50], [10, 20], {})
    return Grid("forensics", with_hypotheses(parts, SINGLE + PAIRS))


def add_arguments(parser) -> None:
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--smoke", action="store_true", help="Baseline, 2,000 training images, 1-2 epochs: minutes")
    preset.add_argument("--cpu-hour", action="store_true", help="Baseline, 10,000 training images, 10-20 epochs, "
                        "ipc 10 and 50, every hypothesis: under an hour on 2 CPU cores")
    preset.add_argument("--paper-settings", action="store_true", help="the paper's 10-600 epochs on MNIST and "
                        "Fashion-MNIST: LeNet on the full training split, the Baseline on 10,000 images; seeds 1-2 "
                        "on the key cells; hypotheses that share the honest teachers")
    parser.add_argument("--own-teachers", action="store_true", help="with --paper-settings: also the hypotheses that "
                        "train teachers of their own (byte pixels, leaked test split), at 200 epochs")


def grid(args) -> Grid:
    if args.smoke:
        return smoke()
    if args.cpu_hour:
        return cpu_hour()
    if args.paper_settings:
        return paper_settings(args.own_teachers)
    return full()


if __name__ == "__main__":
    import sys

    from raydistill.cli import main

    raise SystemExit(main(["sweep", NAME, *sys.argv[1:]]))
