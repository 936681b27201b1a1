"""Run a sweep: every check before anything is created, then the cells as Ray Tune trials, and an
outcome that says what finished, what failed and what is still to do.

MLflow is the ledger: a cell with a FINISHED run (same key) is never run again, a teacher keeps
its snapshots and checkpoint, so running the same command after any interruption (Ctrl-C, a
crash, kill -9) continues where the sweep stopped. Only one driver runs a sweep at a time (a lock
on results folder + name). The first Ctrl-C stops the trials gracefully and ends the sweep as
interrupted; a second one stops at once.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ray.tune.stopper import Stopper

from raydistill import archive, tracking
from raydistill.config import ConfigError, TrialConfig
from raydistill.data import Dataset
from raydistill.device import machine
from raydistill.locks import FileLock
from raydistill.tune.grid import (Cell, Grid, TeacherJob, describe, display_names, expand, load_and_check, resources,
                                  teacher_jobs)
from raydistill.tune.options import SweepOptions

log = logging.getLogger(__name__)
Console = Callable[[str], None]


@dataclass
class SweepOutcome:
    name: str
    uri: str
    cells: list[Cell]
    finished: list[str] = field(default_factory=list)  # names, including those finished earlier
    reused: list[str] = field(default_factory=list)  # finished before this run started
    failed: dict[str, str] = field(default_factory=dict)  # name -> error
    unfinished: list[str] = field(default_factory=list)
    interrupted: bool = False
    sweep_run_id: str | None = None
    restored: int = 0  # runs put back from the sweep's export (raydistill.archive) when it started
    exported: Path | None = None  # where its finished runs were written when it ended

    @property
    def complete(self) -> bool:
        return len(self.finished) == len(self.cells)


def plan(grid: Grid, options: SweepOptions) -> list[Cell]:
    """The sweep's cells for every seed (a part that declares its own seeds keeps them), validated,
    one per key, named together, seed by seed."""
    options.validate()
    overrides = {**options.fixed, "data_root": str(Path(options.data_root).expanduser().resolve()),
                 "download": options.download}
    expanded = [c.config for seed in options.seeds for c in expand(grid, {"seed": seed}, **overrides)]
    configs = {c.key(): c for c in sorted(expanded, key=lambda c: c.seed)}  # stable: grid order within a seed
    names = display_names(list(configs.values()))  # the whole grid's names, also when --only picks some
    cells = [Cell(key, name, cfg) for (key, cfg), name in zip(configs.items(), names, strict=True)]
    if not options.only:
        return cells
    picked = [c for c in cells if any(fnmatch.fnmatchcase(c.name, pattern) for pattern in options.only)]
    if not picked:
        raise ConfigError(f"--only {' '.join(options.only)} matches no cell of grid {grid.name!r}; its cell names "
                          f"look like {cells[0].name} (--dry-run lists them)")
    return picked


def dry_run(grid: Grid, options: SweepOptions) -> list[str]:
    return describe(plan(grid, options))


def absolute(uri: str) -> str:
    """A sqlite URI with an absolute path: trials run in folders of their own, where a relative
    path would name another store."""
    path = uri.removeprefix(tracking.SQLITE)
    return f"{tracking.SQLITE}{Path(path).expanduser().resolve()}" if path != uri else uri


def check_results_dir(results: Path) -> None:
    """The results folder exists (or can be made) and takes files, before anything is computed."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"results folder {results} is not usable ({err.strerror or err}); pick another --results") from None


def cluster_address(options: SweepOptions) -> tuple[str | None, str]:
    """The Ray cluster a sweep joins and the setting that names it: ray.init lets RAY_ADDRESS win
    over its address argument, so it wins here too, and is checked the same way."""
    env = os.environ.get("RAY_ADDRESS")
    return (env, "RAY_ADDRESS") if env else (options.address, "--address")


def check_address(address: str | None, what: str = "--address", timeout: float = 5.0) -> None:
    """A Ray cluster answers at `address` (host:port, or 'auto' for the latest local `ray start`)
    within a few seconds; ray.init would otherwise retry for minutes."""
    if address is None or address == "local":
        return
    target = address
    if address == "auto":
        from ray._private.services import find_bootstrap_address

        target = find_bootstrap_address(None)
        if not target:
            raise ConfigError(f"{what} auto: no running Ray cluster was found on this machine (start one with "
                              "`ray start --head`, or give its address host:port)")
    host, _, port = target.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{what} {address!r} is not host:port (e.g. 10.0.0.5:6379) or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            grpc = os.environ.get("RAY_USE_TLS", "0") not in ("0", "") or _speaks_grpc(sock)
    except OSError as err:
        raise ConfigError(f"no Ray cluster answers at {target} ({err.strerror or err}); check {what}") from None
    if not grpc:
        raise ConfigError(f"no Ray cluster answers at {target}: something else listens there (Ray's address is "
                          f"the head's GCS port, 6379 by default, not the dashboard's 8265); check {what}")


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS frame


def _speaks_grpc(sock: socket.socket) -> bool:
    """Ray's GCS is a gRPC server: it answers the HTTP/2 preface with a SETTINGS frame, where an
    HTTP/1 server (the dashboard, MLflow) answers with text, or nothing until the timeout."""
    sock.sendall(HTTP2_PREFACE)
    header = b""
    while len(header) < 9 and (chunk := sock.recv(9 - len(header))):
        header += chunk
    return len(header) == 9 and header[3] == 4


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def worker_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("RAYDISTILL_", "MLFLOW_"))}


class Interrupt:
    """The first SIGINT asks the sweep to stop (trials are stopped, the outcome is written); the
    second one raises KeyboardInterrupt as usual. A Tune Stopper reads the flag."""

    def __init__(self, console: Console | None = None) -> None:
        self.event = threading.Event()
        self.console = console
        self._previous = None

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.event.set()
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
        if self.console is not None:  # stopping trials takes seconds: say that it is under way
            self.console("stopping: the running trials end, then the outcome is written (Ctrl-C again stops at once)")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    @property
    def set(self) -> bool:
        return self.event.is_set()


def run_sweep(grid: Grid, options: SweepOptions, console: Console | None = None, callbacks: Sequence = (),
              release_on: str = "milestone") -> SweepOutcome:
    """Check everything, then run (or continue) the sweep. Raises ConfigError on bad input before
    anything is created; otherwise returns the outcome (complete, failed or interrupted).
    `callbacks` are extra Ray Tune callbacks (e.g. to watch the trials' reports)."""
    cells = plan(grid, options)
    name = options.name or grid.name
    results = options.results.expanduser().resolve()
    uri = options.tracking_uri or tracking.local_store(results)
    from raydistill.tracking_server import verify_tracking

    if options.tracking_uri is not None:
        verify_tracking(uri)
        uri = absolute(uri)
    check_address(*cluster_address(options))
    check_results_dir(results)
    export = archive.sweep_file(results, name)
    records = archive.read_records(export) if export.is_file() else []  # a bad file says so before any work
    with FileLock(results / ".locks" / f"{name}.lock", f"sweep {name!r} in {results}"), Interrupt(console) as stop:
        datasets = load_and_check(cells)
        tracking.init_store(uri)
        experiment_id = tracking.ensure_experiment(uri, name, results / "mlartifacts")
        outcome = SweepOutcome(name, uri, cells)
        outcome.restored = archive.import_runs(uri, name, records, results / "mlartifacts")[0] if records else 0
        finished = tracking.finished_cells(uri, experiment_id)
        outcome.reused = [c.name for c in cells if c.key in finished]
        todo = [c for c in cells if c.key not in finished]
        outcome.sweep_run_id = tracking.sweep_run(uri, experiment_id, name, {
            "cells": len(cells), "seeds": list(options.seeds), "grid": json.dumps([c.name for c in cells])})
        tracking.tag_machine(uri, outcome.sweep_run_id, machine())
        try:
            if todo and not stop.set:
                _tune(name, todo, twins(cells), datasets, uri, experiment_id, outcome.sweep_run_id, results, options,
                      stop, console, list(callbacks), release_on)
        finally:
            outcome.interrupted = stop.set
            _settle(outcome, experiment_id)
            archive.export_runs(uri, name, export)
            outcome.exported = export
    return outcome


def _tune(name: str, todo: Sequence[Cell], twin_keys: dict[str, list[str]], datasets: dict[str, Dataset], uri: str,
          experiment_id: str, sweep_run_id: str, results: Path, options: SweepOptions, stop: Interrupt,
          console: Console | None, callbacks: list, release_on: str) -> None:
    import ray
    from ray import tune

    from raydistill.tune.scheduler import CellReleaser
    from raydistill.tune.status import StatusLog
    from raydistill.tune.trainable import run_job

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter at verbose 0 prints nothing; StatusLog does
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # StatusLog says each failure in one line
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C is ours (Interrupt): Tune's would end trials as errors
    logging.getLogger("ray.tune.analysis.experiment_analysis").addFilter(_no_missing_results)
    held = tracking.teachers(uri, experiment_id)
    jobs = teacher_jobs(todo)
    done = {key: held.get(key, ("", set()))[1] for key in jobs}
    address, _ = cluster_address(options)
    local = {} if address else {"num_cpus": options.cpus or os.cpu_count()}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": worker_environment()}, **local)
    try:
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        ctx = {"tracking_uri": uri, "experiment_id": experiment_id, "sweep": name, "sweep_run_id": sweep_run_id,
               "results_dir": str(results), "git_commit": git_commit()}
        cell_priorities = priorities(list(todo), datasets, options.seeds[0])
        first = teacher_priorities(todo, cell_priorities)
        teacher_configs = [(job, _teacher_config(job, gpus, done[job.key], first[job.key])) for job in jobs.values()
                           if set(job.milestones) - done[job.key]]
        cell_configs = [(c, _cell_config(c, gpus, p, twin_keys[c.key])) for c, p in zip(todo, cell_priorities)]
        searcher = CellReleaser(teacher_configs, cell_configs, done, release_on)
        trainable = tune.with_resources(tune.with_parameters(run_job, datasets=datasets),
                                        lambda config: tune.PlacementGroupFactory([config["job"]["resources"]]))
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        status = StatusLog(console, total=searcher.total)
        tuner = tune.Tuner(
            trainable,
            param_space={"ctx": ctx},
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=searcher.total, reuse_actors=True,
                                        max_concurrent_trials=options.max_concurrent,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(name=f"{name}-{stamp}", storage_path=str(results / "ray_results"),
                                      failure_config=tune.FailureConfig(max_failures=options.max_failures),
                                      stop=_StopAll(stop), verbose=0, callbacks=[status, *callbacks]),
        )
        tuner.fit()
        if not stop.set:  # a stop ends the running trials with errors that are not failures
            _record_failures(todo, jobs, searcher.dropped, status.errors, uri, experiment_id, name, sweep_run_id)
    finally:
        ray.shutdown()


def _record_failures(todo: Sequence[Cell], jobs: dict[str, TeacherJob], dropped: dict[str, list[str]],
                     errors: dict[str, str], uri: str, experiment_id: str, sweep: str, sweep_run_id: str) -> None:
    """A FAILED run, with the error, for every cell that could not leave one itself: its teacher
    failed, or its trial failed before its MLflow run existed."""
    logged = {r.data.tags.get(tracking.CELL_KEY) for r in tracking.cell_runs(uri, experiment_id)
              if r.info.status in ("FINISHED", "FAILED")}
    for cell in todo:
        if cell.key in logged:
            continue
        if cell.teacher_key in dropped and cell.name in dropped[cell.teacher_key]:
            error = errors.get(cell.teacher_key, "its trial ended before this milestone")
            error = f"teacher {jobs[cell.teacher_key].name} failed: {error}"
        elif cell.key in errors:
            error = errors[cell.key]
        else:
            continue
        tracking.record_failed_cell(uri, experiment_id, cell.name, _failed_tags(cell, sweep, sweep_run_id),
                                    cell.config.to_dict(), error)


def _no_missing_results(record: logging.LogRecord) -> bool:
    """Drop Tune's warning about trials that never reported (a line each, e.g. all the cells an
    interrupted sweep did not start): MLflow, not Tune's result files, says what finished."""
    return not record.getMessage().startswith("Failed to fetch metrics")


class _StopAll(Stopper):
    """A Tune stopper that ends the whole experiment once the sweep is interrupted."""

    def __init__(self, stop: Interrupt):
        self.stop: Interrupt | None = stop

    def __getstate__(self) -> dict:  # Tune pickles its settings; a saved copy never stops anything
        return {"stop": None}

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.stop is not None and self.stop.set

    def stop_all(self) -> bool:
        return self.stop is not None and self.stop.set


def _teacher_config(job: TeacherJob, gpus: bool, done: set[int], priority: int = 0) -> dict:
    return {"job": {"kind": "teacher", "priority": priority, "key": job.key, "name": job.name, "trial": job.config.to_dict(),
                    "milestones": sorted(set(job.milestones) - done), "per_image_norms": job.per_image_norms,
                    "data_key": f"{job.config.dataset}|{job.config.resize}",
                    "resources": resources(job.config, gpus)}}


def priorities(cells: list[Cell], datasets: dict[str, Dataset], first_seed: int | None = None) -> list[int]:
    """Each cell's priority (lower goes first): by tier, then grid order, each cell at an odd
    number so that its teacher (see teacher_priorities) fits just before the first of its cells.
    Tier 0: honest cells of the sweep's first seed; tier 1: honest cells of the other seeds;
    tier 2 + r: forensics cells, the hypotheses taking turns, r being the cell's rank among its own
    hypothesis's cells, cheapest first. A sweep stopped early has its reference cells (a row's
    cells soon after its teacher, not after every teacher), then their seeds, then every hypothesis
    measured on as many cells as the time allowed."""
    if first_seed is None:  # the sweep's first seed (--seeds' first), else the smallest honest one
        first_seed = min((c.config.seed for c in cells if not c.config.is_forensics), default=0)
    tiers = [0 if c.config.seed == first_seed else 1 for c in cells]
    seen: dict[str, int] = {}
    forensics = [i for i, c in enumerate(cells) if c.config.is_forensics]
    for i in sorted(forensics, key=lambda i: student_cost(cells[i].config, datasets[cells[i].data_key])):
        rank = seen.get(cells[i].config.hypothesis, 0)
        seen[cells[i].config.hypothesis] = rank + 1
        tiers[i] = 2 + rank
    span = 2 * len(cells) + 2  # a tier's cells and teachers never reach the next tier
    return [span * tier + 2 * index + 1 for index, tier in enumerate(tiers)]


def teacher_priorities(cells: Sequence[Cell], cell_priorities: Sequence[int]) -> dict[str, int]:
    """Teacher key -> its priority: just before the most urgent of the cells that need it."""
    out: dict[str, int] = {}
    for cell, priority in zip(cells, cell_priorities, strict=True):
        if cell.teacher_key is not None:
            out[cell.teacher_key] = min(out.get(cell.teacher_key, priority), priority)
    return {key: priority - 1 for key, priority in out.items()}


def student_cost(config: TrialConfig, data: Dataset) -> int:
    """The student's training, in images seen: epochs x the distilled set's or the training split's size."""
    whole = len(data.train)
    images = config.ipc * data.num_classes if config.distills else min(config.train_limit or whole, whole)
    return config.student_epochs * images


def twins(cells: Sequence[Cell]) -> dict[str, list[str]]:
    """Cell key -> the keys of the other cells that train the same student (they differ only in
    how it is scored: config.SCORING_KNOBS); the sweep trains it once for all of them."""
    groups: dict[str, list[str]] = {}
    for cell in cells:
        groups.setdefault(cell.config.student_key(), []).append(cell.key)
    return {cell.key: [k for k in groups[cell.config.student_key()] if k != cell.key] for cell in cells}


def _cell_config(cell: Cell, gpus: bool, priority: int, twin_keys: Sequence[str] = ()) -> dict:
    return {"job": {"kind": "cell", "priority": priority, "key": cell.key, "student_key": cell.config.student_key(),
                    "twins": list(twin_keys), "name": cell.name, "trial": cell.config.to_dict(),
                    "teacher": cell.teacher_key, "data_key": cell.data_key, "resources": resources(cell.config, gpus)}}


def _failed_tags(cell: Cell, sweep: str, sweep_run_id: str) -> dict[str, str]:
    return {tracking.ROLE: "cell", tracking.CELL: cell.name, tracking.CELL_KEY: cell.key, tracking.SWEEP: sweep,
            tracking.SWEEP_RUN: sweep_run_id, tracking.HYPOTHESIS: cell.config.hypothesis,
            tracking.FORENSICS: str(cell.config.is_forensics).lower()}


def _trial_name(trial) -> str:
    return trial.config["job"]["name"]


def _settle(outcome: SweepOutcome, experiment_id: str) -> None:
    """After the trials: no run is left RUNNING, the outcome comes from the ledger, and the sweep
    run ends FINISHED, FAILED or KILLED accordingly."""
    uri = outcome.uri
    tracking.close_running(uri, experiment_id, "KILLED" if outcome.interrupted else "FAILED")
    latest = {}
    for run in tracking.cell_runs(uri, experiment_id):
        latest[run.data.tags.get(tracking.CELL_KEY)] = run  # oldest first: the newest wins, FINISHED kept
    finished = tracking.finished_cells(uri, experiment_id)
    for cell in outcome.cells:
        if cell.key in finished:
            outcome.finished.append(cell.name)
        elif cell.key in latest and latest[cell.key].info.status == "FAILED":
            outcome.failed[cell.name] = latest[cell.key].data.tags.get(tracking.ERROR, "failed (no error recorded)")
        else:
            outcome.unfinished.append(cell.name)
    status = "FINISHED" if outcome.complete else "KILLED" if outcome.interrupted else "FAILED"
    if outcome.sweep_run_id is not None:
        tracking.end_run(uri, outcome.sweep_run_id, status)
    log.info("sweep %s: %d finished, %d failed, %d unfinished", outcome.name, len(outcome.finished),
             len(outcome.failed), len(outcome.unfinished))
