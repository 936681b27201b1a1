"""The order of a sweep's trials: each cell as soon as its teacher's milestone exists, so that no
trial ever holds a CPU or GPU share while waiting for another. Among the trials that can start,
the lowest `priority` goes first; the runner sets them (runner.priorities): the first seed's
honest cells in grid order, each teacher just before its first cell, then the other seeds, then
forensics cells with the hypotheses taking turns, cheapest cell first (a sweep stopped early has
its reference rows, their seeds, and every hypothesis measured on as many cells as it could).

Cells that train the same student (twins: they differ only in how it is scored) never run side by
side: the first to be ready trains it and keeps it, the others wait for that trial to end and then
go first, as they only score the kept student (if it failed, the next twin trains it).

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
        self.training: set[str] = set()  # student keys a ready or running trial trains
        self.twins_waiting: dict[str, list[dict]] = {}  # student key -> cells waiting for that trial
        self.trial_student: dict[str, str] = {}  # trial id -> the student key it trains
        self._release(config for _, config in teachers)
        self.waiting: dict[tuple[str, int], list[dict]] = {}
        self.done = {key: set(epochs) for key, epochs in done.items()}
        self.release_on = release_on
        self.trial_teacher: dict[str, str] = {}
        self.failed_teachers: set[str] = set()
        self.dropped: dict[str, list[str]] = {}  # teacher key -> names of the cells it took down
        ready = []
        for cell, config in cells:
            tkey = cell.teacher_key
            if tkey is None or cell.config.teacher_epochs in self.done.get(tkey, set()):
                ready.append(config)
            else:
                self.waiting.setdefault((tkey, cell.config.teacher_epochs), []).append(config)
        self._release(ready)
        self.total = len(self.ready) + sum(len(v) for v in (*self.waiting.values(), *self.twins_waiting.values()))

    def _release(self, configs: Iterable[dict]) -> None:
        """Make the configs ready, except cells whose student a ready or running twin trains."""
        for config in sorted(configs, key=lambda c: c["job"]["priority"]):
            student = config["job"].get("student_key")
            if student is not None and student in self.training:
                self.twins_waiting.setdefault(student, []).append(config)
                continue
            if student is not None:
                self.training.add(student)
            self._push(config, config["job"]["priority"])

    def _push(self, config: dict, priority: int) -> None:
        heapq.heappush(self.ready, (priority, next(self.order), config))

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
            elif config["job"].get("student_key") is not None:
                self.trial_student[trial_id] = config["job"]["student_key"]
            return config
        return None if self.waiting or self.twins_waiting else Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        epoch = result.get("milestone")
        if epoch is not None and trial_id in self.trial_teacher:
            key = self.trial_teacher[trial_id]
            self.done.setdefault(key, set()).add(int(epoch))
            if self.release_on == "milestone":
                self._release(self.waiting.pop((key, int(epoch)), []))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        student = self.trial_student.pop(trial_id, None)
        if student is not None:
            self.training.discard(student)
            waiting = self.twins_waiting.pop(student, [])
            if error:  # the student was not kept: the next twin trains it
                self._release(waiting)
            else:  # it was: they only score it, first of all (minutes; then the kept student goes)
                for config in waiting:
                    self._push(config, 0)
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
