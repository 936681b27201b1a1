"""A sweep's console lines: one when a trial starts, ends or fails, and every minute the running
trials with their phase and epoch. Given a `console` callable by the command line; silent without.
It also keeps each failed trial's error for the runner."""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Callable

from ray.tune import Callback

EVERY_SECONDS = 60.0


class StatusLog(Callback):
    def __init__(self, console: Callable[[str], None] | None, total: int):
        self.console, self.total = console, total
        self.ended = 0
        self.last = time.monotonic()
        self.progress: dict[str, str] = {}
        self.errors: dict[str, str] = {}  # job key -> the last line of its final error

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console(text)

    def _name(self, trial) -> str:
        return trial.config["job"]["name"]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._say(f"[{self.ended:>{len(str(self.total))}}/{self.total}] start   {self._name(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "epoch" in result:
            loss = result.get("train_loss")
            self.progress[trial.trial_id] = (f"{result.get('phase', '')} epoch {result['epoch']}/{result.get('epochs')}"
                                             + (f", loss {loss:.4f}" if loss is not None else ""))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        self.progress.pop(trial.trial_id, None)
        result = trial.last_result or {}
        accuracy = result.get("accuracy")
        figures = f"accuracy {100 * accuracy:.2f} %, " if accuracy is not None else ""
        self._say(f"[{self.ended}/{self.total}] done    {self._name(trial)}  {figures}{result.get('time_total_s', 0):.0f} s")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._say(f"[{self.ended}/{self.total}] retry   {self._name(trial)}: {_error(trial)}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        self.progress.pop(trial.trial_id, None)
        self.errors[trial.config["job"]["key"]] = _error(trial)
        self._say(f"[{self.ended}/{self.total}] FAILED  {self._name(trial)}: {self.errors[trial.config['job']['key']]}")

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.monotonic() - self.last < EVERY_SECONDS or not self.progress:
            return
        self.last = time.monotonic()
        running = {t.trial_id: self._name(t) for t in trials if t.status == "RUNNING"}
        for trial_id, name in running.items():
            if trial_id in self.progress:
                self._say(f"        running {name}: {self.progress[trial_id]}")


def _error(trial) -> str:
    """The last line of the trial's error (the exception's type and message), from the error file
    Tune has just written on the driver."""
    path = trial.error_file
    text = Path(path).read_text(errors="replace") if path and Path(path).is_file() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure # ")]
    return lines[-1] if lines else "error (no message)"
