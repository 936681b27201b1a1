"""From declarative axes to validated cells: identity, display names, teachers, checks.

A grid is a list of parts; each part maps TrialConfig fields (or `epochs`, which sets teacher and
student epochs together) to the values it takes and contributes the Cartesian product of them.
A cell is identified by its key, a hash of its whole config (TrialConfig.key): cells that differ
in any setting are distinct, and the same settings are the same cell in every sweep. Its display
name is for people: the axes that vary across the grid, made unique when needed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from raydistill.config import ConfigError, TrialConfig
from raydistill.data import Dataset, dataset_label
from raydistill.data import load as load_dataset
from raydistill.registry import MODELS, MODIFIERS

CPUS_PER_TRIAL = 1


@dataclass(frozen=True)
class Grid:
    name: str
    parts: Sequence[Mapping[str, Sequence]]
    fixed: Mapping[str, object] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Cell:
    key: str
    name: str
    config: TrialConfig

    @property
    def data_key(self) -> str:
        return f"{self.config.dataset}|{self.config.resize}"

    @property
    def teacher_key(self) -> str | None:
        return teacher_key(self.config) if self.config.needs_teacher else None


@dataclass(frozen=True)
class TeacherJob:
    """One teacher trained once to its largest milestone for every cell that shares it."""

    key: str
    config: TrialConfig  # the settings that define it (one of its cells' configs)
    milestones: tuple[int, ...]
    per_image_norms: bool  # keep the per-image gradient norms at each milestone (grad-l1 cells)

    @property
    def name(self) -> str:
        return f"teacher-{self.config.model}-{self.key[:6]}"


def teacher_params(cfg: TrialConfig) -> dict:
    """What makes two teachers the same: data, model, seed, optimiser, pixel scale, the training
    pool (leak_test) and the arithmetic."""
    fields = ("dataset", "resize", "train_limit", "model", "seed", "lr", "batch_size", "pixel_scale", "leak_test",
              "compile", "precision", "channels_last")
    return {f: getattr(cfg, f) for f in fields}


def teacher_key(cfg: TrialConfig) -> str:
    return hashlib.sha1(json.dumps(teacher_params(cfg), sort_keys=True).encode()).hexdigest()[:16]


def expand(grid: Grid, defaults: Mapping[str, object] | None = None, **overrides: object) -> list[Cell]:
    """All cells of the grid, validated, one per key, in declaration order, with distinct names.
    `defaults` apply where a part does not set the field itself (e.g. the sweep's seeds for the
    parts that declare none); `overrides` win over everything."""
    configs: dict[str, TrialConfig] = {}
    for part in grid.parts:
        keys = list(part)
        for values in itertools.product(*(part[k] for k in keys)):
            fields = {**(defaults or {}), **grid.fixed, **dict(zip(keys, values)), **overrides}
            if "epochs" in fields:
                epochs = fields.pop("epochs")
                fields.setdefault("teacher_epochs", epochs)
                fields.setdefault("student_epochs", epochs)
            try:
                cfg = TrialConfig(**fields)
                if not cfg.distills:  # ipc and the shift mean nothing without distillation
                    cfg = cfg.replace(ipc=1, modifier="none", teacher_epochs=cfg.student_epochs)
                cfg.validate()
            except (TypeError, ConfigError) as err:
                raise ConfigError(f"grid {grid.name!r}, cell {fields}: {err}") from None
            configs.setdefault(cfg.key(), cfg)
    names = display_names(list(configs.values()))
    return [Cell(key, name, cfg) for (key, cfg), name in zip(configs.items(), names, strict=True)]


NAME_FIELDS = ("dataset", "model", "method", "modifier", "ipc", "student_epochs", "teacher_epochs", "protocol",
               "hypothesis", "seed")
SHORT = {"student_epochs": "e", "teacher_epochs": "te", "ipc": "ipc", "seed": "s"}


def display_names(configs: Sequence[TrialConfig]) -> list[str]:
    """Short names from the axes that vary across the cells (the rest is the same for all), with
    any other differing setting appended where two cells would otherwise share a name."""
    if not configs:
        return []
    varying = [f for f in NAME_FIELDS if len({getattr(c, f) for c in configs}) > 1] or ["method"]
    names = ["-".join(_part(c, f) for f in varying if _part(c, f)) for c in configs]
    names = [name or ("honest" if "hypothesis" in varying else _part(c, "method")) for name, c in zip(names, configs)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[name].append(i)
    for members in (m for m in groups.values() if len(m) > 1):
        dicts = [configs[i].to_dict() for i in members]
        differ = [k for k in dicts[0] if len({json.dumps(d[k]) for d in dicts}) > 1]
        for i, d in zip(members, dicts, strict=True):
            names[i] += "-" + "-".join(f"{k}={_text(d[k])}" for k in differ)
    return [name if names.count(name) == 1 else f"{name}-{c.key()[:6]}" for name, c in zip(names, configs)]


def _part(cfg: TrialConfig, name: str) -> str:
    if name == "dataset":
        return dataset_label(cfg.dataset)
    if name in ("ipc", "modifier") and not cfg.distills:
        return ""
    if name == "teacher_epochs" and (not cfg.needs_teacher or cfg.teacher_epochs == cfg.student_epochs):
        return ""
    if name == "hypothesis":
        return "" if cfg.hypothesis == "honest" else cfg.hypothesis
    value = getattr(cfg, name)
    return f"{SHORT[name]}{value}" if name in SHORT else str(value)


def _text(value: object) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def teacher_jobs(cells: Sequence[Cell]) -> dict[str, TeacherJob]:
    """The teachers the cells need, by key, each with the milestones its cells use."""
    groups: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        if cell.teacher_key is not None:
            groups[cell.teacher_key].append(cell)
    return {key: TeacherJob(key, members[0].config, tuple(sorted({c.config.teacher_epochs for c in members})),
                            any(MODIFIERS[c.config.modifier].per_image_norms for c in members))
            for key, members in groups.items()}


def teacher_epochs(cells: Sequence[Cell]) -> tuple[int, int]:
    """Teacher epochs the grid costs when each teacher is trained once to its largest milestone,
    and when every cell trains its own."""
    jobs = teacher_jobs(cells).values()
    return (sum(max(job.milestones) for job in jobs),
            sum(c.config.teacher_epochs for c in cells if c.teacher_key is not None))


def resources(cfg: TrialConfig, gpus_available: bool) -> dict[str, float]:
    """One CPU per trial, plus the model's registered GPU share when the cluster has GPUs."""
    return {"CPU": CPUS_PER_TRIAL, "GPU": MODELS[cfg.model].gpu_share if gpus_available else 0}


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


def describe(cells: Sequence[Cell]) -> list[str]:
    """The dry run: one line per cell (name, key, resources, teacher), then the totals."""
    jobs = teacher_jobs(cells)
    lines = []
    width = max((len(c.name) for c in cells), default=0)
    for cell in cells:
        job = jobs.get(cell.teacher_key)
        teacher = f"teacher {job.key[:6]} epoch {cell.config.teacher_epochs}" if job else "no teacher"
        gpu = MODELS[cell.config.model].gpu_share
        lines.append(f"{cell.name:{width}s}  key {cell.key}  CPU {CPUS_PER_TRIAL}, GPU {gpu} on a GPU cluster  {teacher}")
    reuse, without = teacher_epochs(cells)
    lines.append(f"{len(cells)} cells, {sum(c.teacher_key is not None for c in cells)} with a teacher, {len(jobs)} "
                 f"teachers; teacher epochs: {reuse:,} with reuse, {without:,} without")
    return lines
