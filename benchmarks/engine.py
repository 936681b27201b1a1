"""The sweep engine measured: idle trial-seconds (a trial holding a CPU or GPU share while it waits
for another trial's teacher) as a share of all trial-seconds, and wall time, under 2 concurrent
trials. A benchmark, not a test: it runs real sweeps.

    python benchmarks/engine.py --data-root DIR                        # this engine, both release rules
    python benchmarks/engine.py --data-root DIR --before OLD_CHECKOUT  # + the engine before issue 10
    python benchmarks/engine.py --data-root DIR --grids reduced --engines milestone   # a part of it

Engines: `milestone` (cells start once their teacher's milestone is in MLflow; the default),
`two-stage` (cells start once their teacher's trial has ended), and `before` (a checkout of the
previous engine: the first cell that needs a teacher trains it, the others poll MLflow while
holding their share). Idle time is read the same way for all three from the MLflow runs: a cell
that needs a teacher snapshot is idle from its run's start until the snapshot's upload (the
teacher run's `test_accuracy` at that epoch), unless it trained that teacher itself (the previous
engine: the cell whose run started last before the teacher run did). Trial-seconds are the
summed durations of cell runs and, where teachers have trials of their own, teacher runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# grid parts as plain dicts (the previous engine's Grid takes the same shape)
GRIDS = {
    "smoke": ([{"dataset": ["fashion-mnist"], "model": ["baseline"], "epochs": [1, 3], "ipc": [1, 10]},
               {"dataset": ["fashion-mnist"], "model": ["baseline"], "epochs": [3], "method": ["full"]}],
              {"train_limit": 2000}, [0]),
    # the paper's Fashion-MNIST axes with 200..600 epochs divided by 100, two seeds; Baseline and LeNet
    # on 2,000 training images (ResNet-34 and the full split do not fit a 2-core CPU)
    "reduced": ([{"dataset": ["fashion-mnist"], "model": ["baseline", "lenet"], "epochs": [2, 3, 4, 5, 6],
                  "ipc": [10, 50]}], {"train_limit": 2000}, [0, 1]),
}
DRIVERS = {
    "milestone": "from raydistill.tune.runner import run_sweep\nfrom raydistill.tune.options import SweepOptions\n"
                 "from raydistill.tune.grid import Grid\n"
                 "run_sweep(Grid('bench', PARTS, FIXED), SweepOptions(data_root=DATA, results=RESULTS, "
                 "max_concurrent=2, seeds=tuple(SEEDS)), release_on=RELEASE)",
    "before": "from argparse import Namespace\nfrom raydistill.tune.grid import Grid, run_sweep\n"
              "run_sweep(Grid('bench', PARTS, FIXED), Namespace(data_root=DATA, download=False, results=RESULTS, "
              "tracking_uri=None, address=None, max_concurrent=2, seeds=SEEDS, name=None, max_failures=1, "
              "dry_run=False))",
}


def run_engine(engine: str, grid: str, data_root: str, results: Path, code_root: Path, last_only: bool) -> float:
    parts, fixed, seeds = GRIDS[grid]
    if last_only and engine != "before":  # the engine before issue 10 scores the last epoch only
        from raydistill.config import MAX_EPOCHS

        fixed = {**fixed, "eval_every": MAX_EPOCHS}
    driver = DRIVERS["before" if engine == "before" else "milestone"]
    head = (f"import sys; sys.path.insert(0, {str(code_root)!r})\nfrom pathlib import Path\n"
            f"PARTS, FIXED, SEEDS = {parts!r}, {fixed!r}, {seeds!r}\nDATA = {data_root!r}\n"
            f"RESULTS = Path({str(results)!r})\nRELEASE = {'complete' if engine == 'two-stage' else 'milestone'!r}\n")
    env = {**os.environ, "PYTHONPATH": str(code_root), "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", head + driver], check=True, env=env, cwd=code_root,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def idle_share(results: Path) -> tuple[float, float, int]:
    """(idle trial-seconds, all trial-seconds, cells) from the sweep's MLflow runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("bench").experiment_id], max_results=10_000)
    cells = [r for r in runs if r.data.tags.get("raydistill.role") == "cell" and r.info.status == "FINISHED"]
    teachers = [r for r in runs if r.data.tags.get("raydistill.role") == "teacher"]
    own_trials = any("raydistill.cell_key" in r.data.tags for r in cells)  # this engine's cells carry keys
    idle, busy = 0.0, sum(r.info.end_time - r.info.start_time for r in cells) / 1000
    if own_trials:  # this engine: teachers are trials of their own
        busy += sum((r.info.end_time or r.info.start_time) - r.info.start_time for r in teachers) / 1000
    for teacher in teachers:
        p = teacher.data.params
        group = [c for c in cells if c.data.params["modifier"] != "none" and c.data.params["method"] != "full"
                 and all(c.data.params[k] == p[k] for k in ("model", "seed", "train_limit"))]
        uploads = {m.step: m.timestamp for m in client.get_metric_history(teacher.info.run_id, "test_accuracy")}
        started_before = [c for c in group if c.info.start_time <= teacher.info.start_time]
        trainer = max(started_before, key=lambda c: c.info.start_time) if not own_trials and started_before else None
        for cell in group:
            if cell is not trainer:
                idle += max(0, uploads[int(cell.data.params["teacher_epochs"])] - cell.info.start_time) / 1000
    return idle, busy, len(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="folder holding FashionMNIST/raw/")
    parser.add_argument("--before", type=Path, default=None, help="a checkout of the engine before issue 10")
    parser.add_argument("--grids", nargs="+", choices=list(GRIDS), default=list(GRIDS))
    parser.add_argument("--engines", nargs="+", choices=["milestone", "two-stage", "before"], default=None,
                        help="default: milestone, two-stage, and before when --before is given")
    parser.add_argument("--last-epoch-only", action="store_true", help="students scored at their last epoch only, "
                        "as before issue 10 (no accuracy curves), so that only the engines differ")
    args = parser.parse_args()
    data_root = str(Path(args.data_root).resolve())
    if args.engines is None:
        args.engines = ["milestone", "two-stage"] + (["before"] if args.before else [])
    if "before" in args.engines and not args.before:
        parser.error("--engines before needs --before OLD_CHECKOUT")
    engines = [(engine, args.before.resolve() if engine == "before" else REPO) for engine in args.engines]
    print(f"engine.load_average_at_start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    for grid in args.grids:
        for engine, code in engines:
            with tempfile.TemporaryDirectory() as tmp:
                wall = run_engine(engine, grid, data_root, Path(tmp), code, args.last_epoch_only)
                idle, busy, cells = idle_share(Path(tmp))
            name = f"{engine}-last-epoch-only" if args.last_epoch_only and engine != "before" else engine
            print(f"engine.{grid}.{name}.cells: {cells}", flush=True)
            print(f"engine.{grid}.{name}.wall_s: {wall:.1f}", flush=True)
            print(f"engine.{grid}.{name}.trial_s: {busy:.1f}", flush=True)
            print(f"engine.{grid}.{name}.idle_share: {idle / busy:.4f}", flush=True)
    print(f"engine.load_average_at_end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
