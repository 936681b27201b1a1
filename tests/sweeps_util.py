"""Helpers for the tests that run real sweeps: the command, MLflow readers, tiny data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
SMOKE_CELLS = {"kmeans-grad-l1-ipc1-e1", "kmeans-grad-l1-ipc10-e1", "kmeans-grad-l1-ipc1-e3",
               "kmeans-grad-l1-ipc10-e3", "full-e3"}


def sweep_command(data: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "sweeps" / "paper_grid.py"), "--smoke", "--data-root", str(data),
            "--results", str(results), "--max-concurrent", "2", *extra]


def run(cmd: list[str], timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout)


def client(results: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{results / 'mlflow.db'}")


def runs(results: Path, role: str, experiment: str = "smoke", deleted: bool = False) -> list:
    """Runs of one role (active only unless `deleted`), read without creating anything."""
    assert (results / "mlflow.db").is_file(), "no store"
    c = client(results)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    view = ViewType.ALL if deleted else ViewType.ACTIVE_ONLY
    return [r for r in c.search_runs([exp.experiment_id], run_view_type=view, max_results=5000)
            if r.data.tags.get("raydistill.role") == role]
