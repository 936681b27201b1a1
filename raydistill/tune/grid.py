"""From declarative axes to Ray Tune trials: cells, checks before any trial, resources, resume.

A grid is a list of parts; each part maps TrialConfig fields (or `epochs`, which sets teacher and
student epochs together) to the values it takes, and contributes the Cartesian product of them.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from raydistill import tracking
from raydistill.config import ConfigError, TrialConfig
from raydistill.data import Dataset, dataset_label
from raydistill.data import load as load_dataset

log = logging.getLogger(__name__)

GPU_SHARE = {"baseline": 0.25, "lenet": 0.25, "convnet3": 0.25, "resnet34": 1.0}
CPUS_PER_TRIAL = 1


@dataclass(frozen=True)
class Grid:
    name: str
    parts: Sequence[Mapping[str, Sequence]]
    fixed: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    name: str
    config: TrialConfig

    @property
    def data_key(self) -> str:
        return f"{self.config.dataset}|{self.config.resize}"


def cell_name(cfg: TrialConfig) -> str:
    parts = [dataset_label(cfg.dataset), cfg.model, cfg.method]
    if cfg.method != "full":
        parts += [cfg.modifier, f"ipc{cfg.ipc}"]
    parts.append(f"e{cfg.student_epochs}")
    if cfg.needs_teacher and cfg.teacher_epochs != cfg.student_epochs:
        parts.append(f"te{cfg.teacher_epochs}")
    parts.append(f"s{cfg.seed}")
    if cfg.protocol != "paper":
        parts.append(cfg.protocol)
    return "-".join(parts)


def expand(grid: Grid, **overrides: object) -> list[Cell]:
    """All cells of the grid, validated, without duplicates, in declaration order."""
    cells: dict[str, Cell] = {}
    for part in grid.parts:
        keys = list(part)
        for values in itertools.product(*(part[k] for k in keys)):
            fields = {**grid.fixed, **dict(zip(keys, values)), **overrides}
            if "epochs" in fields:
                epochs = fields.pop("epochs")
                fields.setdefault("teacher_epochs", epochs)
                fields.setdefault("student_epochs", epochs)
            try:
                cfg = TrialConfig(**fields)
            except TypeError as err:
                raise ConfigError(f"grid {grid.name!r}: {err}") from None
            if cfg.method == "full":  # ipc and the shift mean nothing without distillation
                cfg = cfg.replace(ipc=1, modifier="none", teacher_epochs=cfg.student_epochs)
            try:
                cfg.validate()
            except ConfigError as err:
                raise ConfigError(f"grid cell {fields}: {err}") from None
            cells.setdefault(cell_name(cfg), Cell(cell_name(cfg), cfg))
    return list(cells.values())


def load_and_check(cells: Sequence[Cell]) -> dict[str, Dataset]:
    """Load every dataset once and run each cell's data checks (e.g. ipc vs class size)."""
    datasets: dict[str, Dataset] = {}
    for cell in cells:
        cfg = cell.config
        if cell.data_key not in datasets:
            datasets[cell.data_key] = load_dataset(cfg.dataset, cfg.data_root, download=cfg.download, resize=cfg.resize)
        data = datasets[cell.data_key].limit_train(cfg.train_limit, cfg.seed)
        try:
            cfg.check_data(data.classes, data.train.class_counts(data.num_classes))
        except ConfigError as err:
            raise ConfigError(f"grid cell {cell.name}: {err}") from None
    return datasets


def teacher_groups(cells: Sequence[Cell]) -> dict[str, list[Cell]]:
    """The cells that need a teacher, grouped by the teacher they share (its key)."""
    from raydistill.tune.teachers import teacher_key

    groups: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        if cell.config.needs_teacher:
            groups[teacher_key(cell.config)].append(cell)
    return groups


def teacher_plan(cells: Sequence[Cell]) -> dict[str, dict]:
    """Per cell: the milestones its teacher is trained to and whether it keeps gradient norms."""
    plan = {}
    for members in teacher_groups(cells).values():
        milestones = sorted({c.config.teacher_epochs for c in members})
        grad_l1 = any(c.config.modifier == "grad-l1" for c in members)
        plan |= {c.name: {"teacher_milestones": milestones, "teacher_grad_l1": grad_l1} for c in members}
    return plan


def interleave(cells: Sequence[Cell]) -> list[Cell]:
    """Order cells so that the first wave of concurrent trials needs different teachers."""
    from raydistill.tune.teachers import teacher_key

    seen: dict[str, int] = defaultdict(int)
    ranked = []
    for i, cell in enumerate(cells):
        key = teacher_key(cell.config) if cell.config.needs_teacher else f"none-{i}"
        ranked.append((seen[key], i, cell))
        seen[key] += 1
    return [cell for _, _, cell in sorted(ranked, key=lambda t: t[:2])]


def resources(cfg: TrialConfig, gpus_available: bool) -> dict[str, float]:
    return {"CPU": CPUS_PER_TRIAL, "GPU": GPU_SHARE[cfg.model] if gpus_available else 0}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---- command line ------------------------------------------------------------------------------

def sweep_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--data-root", default="data", help="folder with the torchvision dataset files (e.g. ROOT/FashionMNIST/raw)")
    a("--download", action="store_true", help="let torchvision download missing datasets (needs internet)")
    a("--results", type=Path, default=Path("results"), help="folder for Tune's state and the default MLflow store")
    a("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite database under --results); "
      "on a cluster: http://<head-private-ip>:5000")
    a("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    a("--max-concurrent", type=int, default=None, help="trials at once (default: as many as resources allow)")
    a("--seeds", type=int, nargs="+", default=[0], help="seeds; every cell runs once per seed")
    a("--name", default=None, help="sweep (and MLflow experiment) name; the same name resumes")
    a("--max-failures", type=int, default=1, help="retries of a failed cell")
    a("--dry-run", action="store_true", help="print the cells and their resources, then exit")
    a("--no-tables", action="store_true", help="do not write the analysis tables at the end")
    return p


def run_sweep(grid: Grid, args: argparse.Namespace, **overrides: object) -> int:
    """Validate everything, then run (or resume) the sweep. Returns a process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    name = args.name or grid.name
    results = args.results.expanduser().resolve()
    overrides = {"data_root": str(Path(args.data_root).expanduser().resolve()), "download": args.download, **overrides}
    try:
        cells = interleave([c for seed in args.seeds for c in expand(grid, seed=seed, **overrides)])
        if args.dry_run:
            return _print_cells(cells)
        uri = args.tracking_uri or tracking.local_store(results)
        tracking.check_reachable(uri)
        datasets = load_and_check(cells)
    except ConfigError as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        return 2
    from raydistill.tune.runner import run_cells

    return run_cells(name, cells, datasets, uri=uri, results=results, args=args)


def _print_cells(cells: Sequence[Cell]) -> int:
    plan = teacher_plan(cells)
    for cell in cells:
        teacher = plan.get(cell.name, {}).get("teacher_milestones", "-")
        print(f"{cell.name:60s} CPU {CPUS_PER_TRIAL} GPU {GPU_SHARE[cell.config.model]} (on a GPU cluster) "
              f"teacher milestones {teacher}")
    reuse, without = teacher_epochs(cells)
    print(f"{len(cells)} cells, {len(plan)} with a teacher; teacher epochs: {reuse} with reuse, {without} without")
    return 0


def teacher_epochs(cells: Sequence[Cell]) -> tuple[int, int]:
    """Teacher epochs the grid costs when each teacher is trained once to its largest milestone,
    and when every cell trains its own."""
    groups = teacher_groups(cells).values()
    return (sum(max(c.config.teacher_epochs for c in members) for members in groups),
            sum(c.config.teacher_epochs for members in groups for c in members))


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("RAYDISTILL_")}
