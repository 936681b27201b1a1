"""Memory of concurrent Tune trials that share one Fashion-MNIST in Ray's object store.

The driver loads the data once and hands it to a function trainable with tune.with_parameters, as
raydistill/tune/runner.py does. Each trial calls dataset.to(cpu), reads every byte of it, waits
until all trials have done so, then reports its process's USS and PSS (psutil) and the object
store's used bytes: the `object_store_memory` resource, total minus available, which each node fills
in with the bytes its store holds. A control run copies the data in each trial, to show what a
per-trial copy would look like in the same figures.
"""

from __future__ import annotations

import os
import tempfile
import time

import ray  # first: it puts the psutil it bundles on sys.path
import psutil
import torch
from ray import tune

from benchmarks.timing import emit
from raydistill.data import Dataset

MIB = 2**20
BARRIER = "raydistill-benchmark-barrier"


@ray.remote(num_cpus=0)
class Barrier:
    """Counts arrivals per phase, so that every trial measures while all of them hold the data."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def arrive(self, phase: str) -> None:
        self.counts[phase] = self.counts.get(phase, 0) + 1

    def count(self, phase: str) -> int:
        return self.counts.get(phase, 0)


def wait_for_all(phase: str, n: int, timeout: float = 120.0) -> None:
    barrier = ray.get_actor(BARRIER)
    ray.get(barrier.arrive.remote(phase))
    deadline = time.monotonic() + timeout
    while ray.get(barrier.count.remote(phase)) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def object_store_used() -> float:
    return ray.cluster_resources()["object_store_memory"] - ray.available_resources()["object_store_memory"]


def trial(config: dict, dataset: Dataset) -> None:
    process = psutil.Process()
    before = process.memory_full_info()
    tensors = dataset.to(torch.device("cpu"))
    arrays = [tensors.x_train, tensors.y_train, tensors.x_test, tensors.y_test]
    shares = tensors.x_train.data_ptr() == dataset.train.images.ctypes.data and not dataset.train.images.flags.writeable
    if config["copy"]:
        arrays = [a.clone() for a in arrays]
    checksum = sum(int(a.sum()) for a in arrays)  # reads every page
    wait_for_all("touched", config["trials"])
    time.sleep(1.0)  # let the nodes' resource reports catch up
    after = process.memory_full_info()
    store = object_store_used()
    wait_for_all("measured", config["trials"])
    tune.report({"uss": after.uss, "pss": after.pss, "uss_delta": after.uss - before.uss,
                 "pss_delta": after.pss - before.pss, "rss_delta": after.rss - before.rss,
                 "object_store_used": store, "shares": int(shares), "checksum": checksum})


def run_trials(trainable: object, n: int, copy: bool, storage: str) -> list[dict]:
    barrier = Barrier.options(name=BARRIER).remote()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"index": tune.grid_search(list(range(n))), "trials": n, "copy": copy},
        tune_config=tune.TuneConfig(max_concurrent_trials=n),
        run_config=tune.RunConfig(name=f"memory-{n}-{copy}", storage_path=storage, verbose=0),
    )
    results = [r.metrics for r in tuner.fit()]
    ray.kill(barrier)
    return results


def summarise(name: str, metrics: list[dict], nbytes: int) -> float:
    """Print one run's figures; return the dataset copies in memory: the object store's bytes plus
    what the trials' unique memory grew by when they read the data, over the dataset's bytes."""
    n = len(metrics)
    store = max(m["object_store_used"] for m in metrics)
    uss_delta = sum(m["uss_delta"] for m in metrics)
    emit(f"{name}.shares_dataset", all(m["shares"] for m in metrics))
    emit(f"{name}.uss_per_trial_mib", sum(m["uss"] for m in metrics) / n / MIB)
    emit(f"{name}.pss_per_trial_mib", sum(m["pss"] for m in metrics) / n / MIB)
    emit(f"{name}.rss_growth_per_trial_mib", sum(m["rss_delta"] for m in metrics) / n / MIB)
    emit(f"{name}.uss_growth_all_trials_mib", uss_delta / MIB)
    emit(f"{name}.pss_growth_all_trials_mib", sum(m["pss_delta"] for m in metrics) / MIB)
    emit(f"{name}.object_store_used_mib", store / MIB)
    copies = (store + uss_delta) / nbytes
    emit(f"{name}.dataset_copies", copies)
    return copies


def run(quick: bool, data: Dataset | None) -> None:
    if data is None:
        emit("memory", "skipped: Fashion-MNIST not found under --data-root")
        return
    nbytes = sum(a.nbytes for a in (data.train.images, data.train.labels, data.test.images, data.test.labels))
    emit("memory.dataset_mib", nbytes / MIB)
    runs = [(1, False), (4, False)] + ([] if quick else [(4, True)])
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter: silent at verbose 0
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        emit("memory.object_store_used_before_mib", object_store_used() / MIB)
        trainable = tune.with_parameters(trial, dataset=data)  # one object-store copy for every run
        with tempfile.TemporaryDirectory() as storage:
            copies = {(n, copy): summarise(f"memory.trials{n}" + (".copying" if copy else ""),
                                           run_trials(trainable, n, copy, storage), nbytes) for n, copy in runs}
        emit("memory.dataset_copies_4_vs_1_trials", copies[(4, False)] / copies[(1, False)])
    finally:
        ray.shutdown()
