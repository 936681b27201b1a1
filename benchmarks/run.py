"""Run the benchmarks and print one `name: value` line per figure.

    python benchmarks/run.py --quick --data-root ../shared/datasets   # a few minutes on 2 CPU cores
    python benchmarks/run.py --data-root ../shared/datasets           # the figures in RESULTS.md
    python benchmarks/run.py --quick --only speed                     # one section (speed compiles models)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root (benchmarks, sweeps), not benchmarks/

from benchmarks.timing import emit, machine  # noqa: E402
from raydistill.config import ConfigError  # noqa: E402
from raydistill.data import Dataset, load  # noqa: E402

# each section is the module benchmarks/<name>.py, imported only when it runs
SECTIONS = ("gradients", "training", "kmeans", "grid", "memory", "gpu", "speed", "cost")


def load_average() -> str:
    """1, 5 and 15-minute load averages: other processes on the machine skew the timings."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def load_fashion_mnist(root: str) -> Dataset | None:
    try:
        return load("fashion-mnist", root)
    except ConfigError as err:
        print(f"# Fashion-MNIST not loaded ({err}); the parts that need it are skipped", flush=True)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes on a 2-core CPU")
    parser.add_argument("--data-root", default="data", help="folder holding FashionMNIST/raw/")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS), help="sections to run")
    args = parser.parse_args()
    for key, value in machine().items():
        emit(f"machine.{key}", value)
    emit("machine.load_average_at_start", load_average())
    data = load_fashion_mnist(args.data_root)
    start = time.perf_counter()
    for name in args.only:
        print(f"# {name}", flush=True)
        section_start = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").run(args.quick, data)
        emit(f"seconds.{name}", time.perf_counter() - section_start)
    emit("seconds.total", time.perf_counter() - start)
    emit("machine.load_average_at_end", load_average())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
