"""The order of a sweep's trials: teachers first, each cell as soon as its teacher's milestone
exists, so that no trial ever holds a CPU or GPU share while waiting for another. Among the
trials that can start, teachers go first, then honest cells in grid order, then forensics cells
with the hypotheses taking turns, cheapest cell first (a sweep stopped early has its reference
cells, and every hypothesis measured on as many cells as it could); the runner sets each trial's
`priority`.

A Ray Tune Searcher hands out trial configs. Teacher trials report `milestone` when a snapshot is
in MLflow; that releases the cells that need it, while the teacher trains on toward its largest
milestone. Cells whose teacher already holds their milestone (or that need no teacher) are ready
from the start. A teacher that fails for good takes its waiting cells with it (they are reported,
with the teacher's error, by the runner).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable

from ray.tune.search import Searcher

from raydistill.tune.grid import Cell, TeacherJob


class CellReleaser(Searcher):
    def __init__(self, teachers: Iterable[tuple[TeacherJob, dict]], cells: Iterable[tuple[Cell, dict]],
                 done: dict[str, set[int]], release_on: str = "milestone"):
        """`teachers`/`cells`: each job with its trial config; `done`: the milestones each teacher
        key already holds. `release_on="complete"` releases cells only when their teacher's trial
        has ended (the two-stage design, kept for the benchmark that compares the two)."""
        super().__init__()
        self.ready: list[tuple[int, int, dict]] = []
        self.order = itertools.count()
        self._release(config for _, config in teachers)
        self.waiting: dict[tuple[str, int], list[dict]] = {}
        self.done = {key: set(epochs) for key, epochs in done.items()}
        self.release_on = release_on
        self.trial_teacher: dict[str, str] = {}
        self.failed_teachers: set[str] = set()
        self.dropped: dict[str, list[str]] = {}  # teacher key -> names of the cells it took down
        for cell, config in cells:
            tkey = cell.teacher_key
            if tkey is None or cell.config.teacher_epochs in self.done.get(tkey, set()):
                self._release([config])
            else:
                self.waiting.setdefault((tkey, cell.config.teacher_epochs), []).append(config)
        self.total = len(self.ready) + sum(len(v) for v in self.waiting.values())

    def _release(self, configs: Iterable[dict]) -> None:
        for config in configs:
            heapq.heappush(self.ready, (config["job"]["priority"], next(self.order), config))

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the sweep's state lives in MLflow (see runner)."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a new sweep run re-plans from MLflow."""

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.ready:
            config = heapq.heappop(self.ready)[2]
            if config["job"]["kind"] == "teacher":
                self.trial_teacher[trial_id] = config["job"]["key"]
            return config
        return None if self.waiting else Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        epoch = result.get("milestone")
        if epoch is not None and trial_id in self.trial_teacher:
            key = self.trial_teacher[trial_id]
            self.done.setdefault(key, set()).add(int(epoch))
            if self.release_on == "milestone":
                self._release(self.waiting.pop((key, int(epoch)), []))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self.trial_teacher.pop(trial_id, None)
        if key is None:
            return
        for pending in [k for k in self.waiting if k[0] == key]:
            configs = self.waiting.pop(pending)
            if error or pending[1] not in self.done.get(key, set()):
                self.failed_teachers.add(key)
                self.dropped.setdefault(key, []).extend(c["job"]["name"] for c in configs)
            else:
                self._release(configs)
