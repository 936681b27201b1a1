"""Which hardware a trial runs on, decided at run time (CUDA on a cluster, CPU here)."""

from __future__ import annotations

import functools
import os
import platform

import torch


def cuda_available() -> bool:
    return torch.cuda.is_available()


@functools.cache
def cuml_available() -> bool:
    """True when cuML imports and CuPy sees a GPU; `import cuml` alone succeeds without one."""
    try:
        import cupy

        if not cupy.cuda.is_available():
            return False
        import cuml  # noqa: F401
    except Exception:
        return False
    return True


def resolve(device: str) -> torch.device:
    """'auto' means CUDA when a GPU is visible, else CPU."""
    if device == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    return torch.device(device)


def describe(device: torch.device) -> str:
    """A human-readable name for the result and the MLflow tags."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or "unknown"


def machine() -> dict[str, str]:
    """The facts a measurement needs beside it (no host name, no paths)."""
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
